//! The `stripwatch` command line: parses the arguments and hands each subcommand to its module
//! under [`cli`]; what failed is one line on standard error and the exit status.

mod cli;

/// Records are built on the worker threads and freed on the output thread. glibc malloc takes
/// the owning arena's lock for each such free, and with two cores the output thread spent a
/// fifth of its time there; jemalloc returns them through per-thread caches. Measured on the
/// dense capture: 1.4–1.6× faster with two workers at the same peak RSS (README, Performance).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use cli::{Cli, Command};

fn main() {
    let cli = Cli::parse_or_exit();
    cli::logs::init(cli.log_format());
    let result = match cli.command {
        Command::Analyze(args) => cli::analyze::run(*args),
        Command::Live(args) => cli::live::run(*args),
        Command::Report(args) => cli::report::run(args),
        Command::Schema { what } => cli::schema::run(what),
        Command::State { what } => cli::state::run(what),
        Command::Config {
            what: cli::ConfigCommand::Check { file, command },
        } => cli::config::check(&file, command.name()),
    };
    if let Err(e) = result {
        eprintln!("stripwatch: error: {e:#}");
        // An unusable database is bad input like a bad option: exit status 2.
        // So are an interface that cannot be opened or filtered and a metrics address that
        // cannot be bound (`live`, before any capture).
        let usage = e.is::<stripwatch::enrich::EnrichError>()
            || e.is::<cli::UsageError>()
            || e.is::<cli::metrics::BindError>()
            || matches!(
                e.downcast_ref::<stripwatch::capture::CaptureError>(),
                Some(stripwatch::capture::CaptureError::Live { .. })
            );
        std::process::exit(if usage { 2 } else { 1 });
    }
}
