//! The `stripwatch` binary's command line: the clap definitions, and one module per subcommand
//! that builds the library's components from its arguments and runs them. It belongs to the
//! binary, not to the library: nothing here is an API, and `main.rs` only dispatches to it.

pub mod analyze;
pub mod config;
pub mod follow;
pub mod live;
pub mod logs;
pub mod metrics;
pub mod privileges;
pub mod reload;
pub mod report;
pub mod schema;
pub mod state;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use stripwatch::sink::rotating::Rotation;
use stripwatch::sink::target::Target;

/// Passive monitor for the security of mail transport: finds stripped STARTTLS, failed and
/// refused upgrades, plaintext fallbacks and injected cleartext in SMTP traffic.
#[derive(Parser)]
#[command(name = "stripwatch", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Analyse capture files (pcap/pcapng, gzip/zstd; `-` for standard input).
    Analyze(Box<AnalyzeArgs>),
    /// Capture from network interfaces (libpcap) and judge as `analyze` does, writing records
    /// while traffic flows, until SIGTERM or SIGINT.
    Live(Box<LiveArgs>),
    /// Render the report (terminal, Markdown, HTML, CSV, TLS-RPT) of an analysis.
    Report(ReportArgs),
    /// The ClickHouse schema (queries/schema.sql).
    Schema {
        #[command(subcommand)]
        what: SchemaCommand,
    },
    /// Inspect the persistent baseline written by `analyze --state`.
    State {
        #[command(subcommand)]
        what: StateCommand,
    },
    /// Configuration files (`--config`).
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a file: TOML, every key a long option of the command, every value valid for it.
    /// Exit status 0 when it is, 2 (and one line saying why) when not.
    Check {
        /// The file.
        file: PathBuf,
        /// The command the file is for.
        #[arg(long, value_enum, default_value = "live")]
        command: ConfigFor,
    },
}

/// The commands that take `--config`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ConfigFor {
    Live,
    Analyze,
}

impl ConfigFor {
    /// The subcommand's name.
    pub fn name(self) -> &'static str {
        match self {
            ConfigFor::Live => "live",
            ConfigFor::Analyze => "analyze",
        }
    }
}

/// Bad input found after the arguments were parsed (a configuration file, a user, a directory
/// the service cannot use): one line on standard error, exit status 2, before any work starts.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Subcommand)]
pub enum StateCommand {
    /// Entries per table.
    Show {
        /// The state file.
        path: PathBuf,
    },
    /// Every entry, one JSON object per line.
    Dump {
        /// The state file.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum SchemaCommand {
    /// Create the database and every table and view in it (idempotent: IF NOT EXISTS).
    Apply(SchemaApplyArgs),
    /// Print the schema (the statements `apply` runs).
    Print(SchemaPrintArgs),
}

#[derive(Args)]
pub struct SchemaApplyArgs {
    #[command(flatten)]
    pub server: ClickHouseArgs,
    /// Create the schema on every node of this cluster (a `remote_servers` entry of the
    /// server's config): replicated `*_local` tables ON CLUSTER, `Distributed` tables under the
    /// names sensors and queries use, rollup views on the local tables.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
}

#[derive(Args)]
pub struct SchemaPrintArgs {
    /// Print the cluster form for this cluster (see `schema apply --cluster`).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The database the cluster form names (the single-server form names none).
    #[arg(long, value_name = "NAME", default_value = stripwatch::sink::target::DEFAULT_DATABASE,
          requires = "cluster")]
    pub database: String,
    /// Instead, print the statements that rebuild the rollups from the event tables, to run on
    /// one replica of each shard after a node died during inserts (README "Scaling out").
    #[arg(long, requires = "cluster")]
    pub rebuild_rollups: bool,
}

/// Where ClickHouse is. The user comes from STRIPWATCH_CLICKHOUSE_USER, the password from
/// STRIPWATCH_CLICKHOUSE_PASSWORD or --clickhouse-password-file, never from the command line.
#[derive(Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP URL (http://127.0.0.1:8123); a path names the database.
    #[arg(long, value_name = "URL")]
    pub clickhouse: String,
    #[command(flatten)]
    pub access: ClickHouseAccess,
}

#[derive(Args)]
pub struct ClickHouseAccess {
    /// Database (default: the URL's path, else `stripwatch`).
    #[arg(long, value_name = "NAME")]
    pub clickhouse_database: Option<String>,
    /// File whose first line is the ClickHouse password.
    #[arg(long, value_name = "FILE")]
    pub clickhouse_password_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct AnalyzeArgs {
    /// Capture files, read in the order given; `-` reads standard input. Required unless
    /// --follow (checked after parsing, so that a configuration file may give `follow`).
    pub captures: Vec<String>,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub follow: FollowArgs,
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// `analyze --follow DIR`: a directory another program fills with rotated captures, read as
/// one long run until SIGTERM, with records written while it runs (as `live` writes them).
#[derive(Args)]
pub struct FollowArgs {
    /// Instead of CAPTURES, follow DIR: read each closed capture file (.pcap, .pcapng, .cap,
    /// tcpdump -C's .pcapN; also .gz, .zst) in name order, exactly once, as one run (flows go on
    /// across files), and wait for the next until SIGTERM or SIGINT. A file is closed when a
    /// later one exists and it has not changed for 2 s, or when it has not changed for
    /// --follow-settle; never while a process has it open for writing. With --state the files
    /// read are remembered there and a restart goes on after them; without, only in memory (a
    /// restart reads them all again).
    #[arg(long, value_name = "DIR", conflicts_with = "captures")]
    pub follow: Option<PathBuf>,
    /// With --follow: seconds the newest file must stay unchanged (and not open for writing)
    /// before it is read while no later file exists [default: 60].
    #[arg(long, value_name = "SECS")]
    pub follow_settle: Option<u64>,
    /// With --follow: seconds (packet time) a session that may still gain a cross-session
    /// finding waits for later sessions before it is written, as in `live` [default: 2].
    #[arg(long, value_name = "SECS")]
    pub hold: Option<u64>,
    /// With --follow: when a new set of output files starts, as in `live`: `hourly` (wall
    /// clock, UTC) or a size (K, M, G); SIGHUP also starts one [default: hourly].
    #[arg(long, value_name = "hourly|SIZE", value_parser = parse_rotation)]
    pub rotate: Option<Rotation>,
    /// With --follow: seconds between saves of what the run learned into --state [default:
    /// 300].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub state_interval: Option<u64>,
    /// With --follow: seconds between the log events that carry the follow's counters (files,
    /// packets, sessions written, the capture-loss estimate) [default: 60].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub log_interval: Option<u64>,
    /// With --follow: serve Prometheus metrics at http://ADDR:PORT/metrics (a bare port binds
    /// 127.0.0.1), as `live --metrics` does: files, packets, sessions by verdict, findings,
    /// capture loss, state windows and evictions, ClickHouse.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
}

#[derive(Args)]
pub struct LiveArgs {
    /// Interface to capture on; repeat for more (with --workers N, each worker reads its own
    /// handle of each, in a PACKET_FANOUT group).
    #[arg(short = 'i', long = "interface", value_name = "IFACE", required = true)]
    pub interfaces: Vec<String>,
    /// Kernel BPF filter. SMTP on other ports (content detection) is seen only if the filter lets
    /// it through: widen it, e.g. `tcp or port 53`; MTA-STS policy fetches only with `or tcp
    /// port 443`.
    #[arg(long, value_name = "EXPR", default_value = stripwatch::capture::live::DEFAULT_BPF)]
    pub bpf: String,
    /// Kernel capture buffer per interface (bytes; K, M, G suffixes; 1M up to 2G).
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_buffer_size)]
    pub buffer_size: u32,
    /// Bytes kept of each packet (1 to 262144).
    #[arg(long, value_name = "BYTES", default_value_t = 262_144,
          value_parser = clap::value_parser!(u32).range(1..=262_144))]
    pub snaplen: u32,
    /// Do not put the interfaces in promiscuous mode (then frames not addressed to this host are
    /// missed, and the kernel does not count interface drops).
    #[arg(long)]
    pub no_promiscuous: bool,
    /// Seconds (packet time) a session that may still gain a cross-session finding
    /// (`starttls-missing`, `plaintext-fallback`) waits for later sessions before it is written;
    /// `analyze` waits for the whole run.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    pub hold: u64,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (a bare port binds 127.0.0.1).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// Seconds between the log events that carry the capture counters (packets, drops).
    #[arg(long, value_name = "SECS", default_value_t = follow::DEFAULT_LOG_INTERVAL,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub log_interval: u64,
    /// After opening the capture (and the metrics port, state file and output directory),
    /// switch to this user and drop every capability, before any thread starts.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Keep running as root (with its capabilities) when started as root without --user.
    #[arg(long)]
    pub allow_root: bool,
    /// When a new set of output files starts: `hourly` (wall clock, UTC), or a size (bytes; K,
    /// M, G suffixes) that one of the files reached; SIGHUP also starts one.
    #[arg(long, value_name = "hourly|SIZE", default_value = "hourly", value_parser = parse_rotation)]
    pub rotate: Rotation,
    /// Seconds between saves of what the run learned into --state (also saved at exit).
    #[arg(long, value_name = "SECS", default_value_t = follow::DEFAULT_STATE_INTERVAL,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub state_interval: u64,
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// The options `analyze` and `live` share: outputs, judgement windows, limits, enrichment and
/// ClickHouse. One struct, so the two commands cannot drift apart.
#[derive(Args)]
pub struct SharedArgs {
    /// TOML file whose keys are the long options (`buffer-size = "256M"`, `interface = ["eth1"]`,
    /// `no-report = true`); an option on the command line wins over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output directory for sessions.ndjson, findings.ndjson and summary.json.
    #[arg(long, short)]
    pub out: PathBuf,
    /// TCP ports where SMTP is expected.
    #[arg(long, value_delimiter = ',', default_value = "25,587,465")]
    pub smtp_ports: Vec<u16>,
    /// Ports where TLS starts at once (implicit TLS, RFC 8314).
    #[arg(long, value_delimiter = ',', default_value = "465")]
    pub implicit_tls_ports: Vec<u16>,
    /// Do not look for SMTP on other ports (a 220 greeting answered by EHLO/HELO).
    #[arg(long)]
    pub no_content_detection: bool,
    /// Do not follow TCP/443 connections to recognise MTA-STS policy fetches by their
    /// ClientHello SNI (`sts_fetch` is then null). Live, the default --bpf does not pass port
    /// 443: add `or tcp port 443` to see fetches.
    #[arg(long)]
    pub no_mta_sts_fetches: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Flows tracked at once (all workers together); the oldest are evicted beyond this.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_flows: usize,
    /// Out-of-order bytes buffered per flow direction.
    #[arg(long, default_value_t = 65_536)]
    pub max_flow_buffer: usize,
    /// Seconds of capture time without packets after which a flow is closed.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout: u64,
    /// Seconds within which a plaintext session after a failed upgrade is a fallback.
    #[arg(long, default_value_t = 3600)]
    pub fallback_window: u64,
    /// Seconds before an SMTP session within which the client's MX lookup can have led to it.
    #[arg(long, default_value_t = 600)]
    pub mx_window: u64,
    /// Operator's known MX sets: lines `domain mx1 mx2 ...`; other answers are `mx-mismatch`.
    #[arg(long, value_name = "FILE")]
    pub known_mx: Option<PathBuf>,
    /// Seconds within which MX answers other clients or resolvers received are compared.
    #[arg(long, default_value_t = 86_400)]
    pub mx_compare_window: u64,
    /// Persistent baseline (created if missing): STARTTLS offers, server keys, MX sets and
    /// signed names from earlier runs count as evidence, and this run's are added.
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Use the history every sensor wrote to the --clickhouse database as the baseline
    /// (STARTTLS offers, server keys, MX sets, signed names), loaded at start; findings it
    /// convicts name the sensor that saw the fact and when. This run's observations reach the
    /// others through the normal inserts. Instead of --state.
    #[arg(long, requires = "clickhouse", conflicts_with = "state")]
    pub shared_baseline: bool,
    /// Seconds between reloads of the shared baseline during the run (0: load only at start).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub shared_baseline_refresh: u64,
    /// Days (of capture time) after which a baseline entry not seen again is dropped.
    #[arg(long, default_value_t = 90)]
    pub state_retention: u64,
    /// Sessions held for cross-session judgement before the oldest is judged early.
    #[arg(long, default_value_t = 200_000)]
    pub max_held_sessions: usize,
    /// Memory for state that grows with the traffic (flows, held sessions, DNS memory, MX
    /// answers, certificates, the order buffer), shared out among them; beyond a share the
    /// oldest entries are evicted and counted (bytes; K, M, G suffixes are powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "160M", value_parser = parse_memory_limit)]
    pub memory_limit: u64,
    /// Record envelope addresses (MAIL FROM / RCPT TO). Off by default for privacy.
    #[arg(long)]
    pub log_envelope: bool,
    /// Sensor name written into every record (default: the host name).
    #[arg(long)]
    pub sensor: Option<String>,
    /// Extra trusted CA certificates (PEM), besides the Mozilla root set; may be repeated.
    #[arg(long = "trust-anchors", value_name = "PEM")]
    pub trust_anchors: Vec<PathBuf>,
    /// TLSA records (zone-file lines, `_25._tcp.<mx>. IN TLSA 3 1 1 <hex>`) for the DANE check.
    #[arg(long, value_name = "FILE")]
    pub tlsa: Option<PathBuf>,
    /// Country database (.mmdb: GeoLite2-Country/City, DB-IP, IPinfo, ip-location-db); repeatable.
    #[arg(long = "geoip-country", value_name = "FILE")]
    pub geoip_country: Vec<PathBuf>,
    /// ASN database (.mmdb: GeoLite2-ASN, DB-IP, IPinfo, ip-location-db); repeatable.
    #[arg(long = "geoip-asn", value_name = "FILE")]
    pub geoip_asn: Vec<PathBuf>,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Also send sessions, findings, DNS transactions and certificates to ClickHouse at this
    /// HTTP URL (create the tables first with `stripwatch schema apply`).
    #[arg(long, value_name = "URL")]
    pub clickhouse: Option<String>,
    #[command(flatten)]
    pub clickhouse_access: ClickHouseAccess,
    /// Where batches wait while ClickHouse is away (default: OUT/clickhouse-spool); replayed
    /// first at the next start.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Largest spool size (bytes; K, M, G suffixes are powers of 1024); batches beyond it are
    /// dropped, counted, and the run exits with an error.
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_bytes)]
    pub spool_max_bytes: u64,
    /// Rows per ClickHouse INSERT at most (rows also go at least once a second).
    #[arg(long, value_name = "ROWS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub clickhouse_batch_rows: u64,
    /// Seconds to keep replaying the spool at the end of the run before leaving it for the next
    /// start.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub clickhouse_drain_timeout: u64,
    /// Do not write the report (report.md, report.html, csv/, tlsrpt/) into the output directory.
    #[arg(long)]
    pub no_report: bool,
    /// Log events on standard error as text lines or as JSON objects, one per line.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: logs::LogFormat,
}

#[derive(Args)]
pub struct ReportArgs {
    /// An `analyze` output directory.
    #[arg(required_unless_present = "clickhouse", conflicts_with = "clickhouse")]
    pub dir: Option<PathBuf>,
    /// Read the events from ClickHouse at this HTTP URL instead (queries/*.sql).
    #[arg(long, value_name = "URL")]
    pub clickhouse: Option<String>,
    #[command(flatten)]
    pub clickhouse_access: ClickHouseAccess,
    /// Where to write the files (default: DIR; needed with --clickhouse unless only the terminal
    /// summary is asked for).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Outputs: terminal, markdown, html, csv, tlsrpt or all (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub format: Vec<ReportFormat>,
    /// Only sessions from this time on: YYYY-MM-DD or RFC 3339 (whole seconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Only sessions before this time: RFC 3339, or YYYY-MM-DD (that day included).
    #[arg(long)]
    pub until: Option<String>,
    /// TLS-RPT `organization-name`.
    #[arg(long, default_value = "stripwatch")]
    pub tlsrpt_organization: String,
    /// TLS-RPT `contact-info`.
    #[arg(long, default_value = "postmaster@localhost")]
    pub tlsrpt_contact: String,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Terminal,
    Markdown,
    Html,
    Csv,
    Tlsrpt,
    All,
}

/// Reads `1073741824`, `512M`, `1G`, `64KiB`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `hourly`, or a size of at least 1K.
fn parse_rotation(s: &str) -> Result<Rotation, String> {
    if s.eq_ignore_ascii_case("hourly") {
        return Ok(Rotation::Hourly);
    }
    match parse_bytes(s)? {
        n if n < 1 << 10 => Err(format!("{s:?} is below 1K")),
        n => Ok(Rotation::Size(n)),
    }
}

/// A memory budget: a size of at least `memory::MIN_LIMIT`.
fn parse_memory_limit(s: &str) -> Result<u64, String> {
    let n = parse_bytes(s)?;
    if n < stripwatch::memory::MIN_LIMIT {
        return Err(format!("{s:?} is below 64K"));
    }
    Ok(n)
}

/// A kernel capture buffer: at least 1 MiB, and below 2 GiB (libpcap takes an `int`).
fn parse_buffer_size(s: &str) -> Result<u32, String> {
    let n = parse_bytes(s)?;
    if n < 1 << 20 {
        return Err(format!("{s:?} is below 1M"));
    }
    u32::try_from(n)
        .ok()
        .filter(|&n| n <= i32::MAX as u32)
        .ok_or_else(|| format!("{s:?} is 2G or more"))
}

impl Cli {
    /// The log format the command asks for (text for those without the option).
    pub fn log_format(&self) -> logs::LogFormat {
        match &self.command {
            Command::Analyze(a) => a.shared.log_format,
            Command::Live(l) => l.shared.log_format,
            _ => logs::LogFormat::default(),
        }
    }

    /// Parses the process's arguments, or exits. Help and version go to standard output with
    /// status 0 (2 when help stands in for a missing subcommand); any other mistake is a single
    /// line on standard error and status 2, so that a script's log shows the reason, not a page
    /// of usage.
    ///
    /// With `--config FILE` the file's options are added to the command line first (see
    /// [`config::merge`]); a bad file is one line and status 2 too.
    pub fn parse_or_exit() -> Cli {
        use clap::FromArgMatches;
        let args: Vec<OsString> = std::env::args_os().collect();
        let (args, provenance) = match config::merge(args) {
            Ok(merged) => merged,
            Err(config::MergeError::Clap(e)) => exit_on(&e, None),
            Err(config::MergeError::Config(e)) => {
                eprintln!("stripwatch: error: {e}");
                std::process::exit(2);
            }
        };
        let parsed = <Cli as clap::CommandFactory>::command()
            .try_get_matches_from(args)
            .and_then(|m| Cli::from_arg_matches(&m));
        match parsed {
            Ok(cli) => cli,
            Err(e) => exit_on(&e, provenance.as_ref()),
        }
    }
}

/// Prints help or version (status 0, or 2 when help stands in for a missing subcommand), or the
/// error in one line (status 2), and exits.
fn exit_on(e: &clap::Error, provenance: Option<&config::Provenance>) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        std::process::exit(
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                2
            } else {
                0
            },
        );
    }
    eprintln!("{} (see 'stripwatch --help')", explain(e, provenance));
    std::process::exit(2);
}

/// The first line of clap's message (the rest is usage), with the line it announces when it
/// ends in a colon (`the following required arguments were not provided:`).
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("error: invalid arguments");
    match lines.next() {
        Some(next) if first.ends_with(':') => format!("{first} {next}"),
        _ => first.to_string(),
    }
}

/// The first line of clap's message, saying which file a bad value came from.
fn explain(e: &clap::Error, provenance: Option<&config::Provenance>) -> String {
    let line = first_line(e);
    let arg = e
        .get(clap::error::ContextKind::InvalidArg)
        .map(|v| v.to_string());
    match (provenance, arg) {
        (Some(p), Some(arg))
            if p.keys
                .iter()
                .any(|k| arg.split([' ', '=']).next() == Some(&format!("--{k}"))) =>
        {
            format!("{line} (from config {})", p.path.display())
        }
        _ => line,
    }
}

/// The process's arguments with the configuration file merged in again (SIGHUP), or why not.
pub fn reparse() -> Result<Cli, String> {
    use clap::{CommandFactory, FromArgMatches};
    let (args, provenance) = config::merge(std::env::args_os().collect()).map_err(|e| match e {
        config::MergeError::Clap(e) => first_line(&e),
        config::MergeError::Config(e) => e.to_string(),
    })?;
    Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
        .map_err(|e| explain(&e, provenance.as_ref()))
}

impl ClickHouseAccess {
    /// The server at `url` with this database and password (the user comes from the
    /// environment inside [`Target::from_args`]).
    pub fn target(&self, url: &str) -> Result<Target> {
        Ok(Target::from_args(
            url,
            self.clickhouse_database.as_deref(),
            self.clickhouse_password_file.as_deref(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clap_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_the_rest() {
        assert_eq!(parse_bytes("1073741824"), Ok(1 << 30));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes(" 3 b "), Ok(3));
        assert!(parse_bytes("1X").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("G").unwrap_err().contains("not a size"));
        assert!(
            parse_bytes("99999999999T")
                .unwrap_err()
                .contains("too large")
        );
    }
}
