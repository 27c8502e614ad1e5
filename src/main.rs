//! The `stripwatch` command line.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stripwatch::capture::CaptureFile;
use stripwatch::decode::DefragLimits;
use stripwatch::detect::CorrelatorConfig;
use stripwatch::detect::certs::CertJudge;
use stripwatch::detect::dns_judge::{DnsJudge, DnsJudgeConfig, KnownMx};
use stripwatch::flow::reassembly::ReassemblyLimits;
use stripwatch::flow::{FlowConfig, PortSet};
use stripwatch::pipeline::{self, Judges, PipelineConfig, SessionSink};
use stripwatch::sink::Fanout;
use stripwatch::sink::clickhouse::{ClickHouseOptions, ClickHouseSink};
use stripwatch::sink::ndjson::NdjsonSink;
use stripwatch::sink::summary::{Summary, Tally, TallySink};
use stripwatch::sink::target::Target;
use stripwatch::smtp::SmtpConfig;
use stripwatch::state::{Baseline, NoBaseline, StateStore};
use stripwatch::tls::dane::TlsaStore;
use stripwatch::tls::verify::Validator;

/// Passive monitor for the security of mail transport: finds stripped STARTTLS, failed and
/// refused upgrades, plaintext fallbacks and injected cleartext in SMTP traffic.
#[derive(Parser)]
#[command(name = "stripwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse capture files (pcap/pcapng, gzip/zstd; `-` for standard input).
    Analyze(Box<AnalyzeArgs>),
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
}

#[derive(Subcommand)]
enum StateCommand {
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
enum SchemaCommand {
    /// Create the database and every table and view in it (idempotent: IF NOT EXISTS).
    Apply(ClickHouseArgs),
    /// Print the schema.
    Print,
}

/// Where ClickHouse is. The user comes from STRIPWATCH_CLICKHOUSE_USER, the password from
/// STRIPWATCH_CLICKHOUSE_PASSWORD or --clickhouse-password-file, never from the command line.
#[derive(Args)]
struct ClickHouseArgs {
    /// ClickHouse HTTP URL (http://127.0.0.1:8123); a path names the database.
    #[arg(long, value_name = "URL")]
    clickhouse: String,
    #[command(flatten)]
    access: ClickHouseAccess,
}

#[derive(Args)]
struct ClickHouseAccess {
    /// Database (default: the URL's path, else `stripwatch`).
    #[arg(long, value_name = "NAME")]
    clickhouse_database: Option<String>,
    /// File whose first line is the ClickHouse password.
    #[arg(long, value_name = "FILE")]
    clickhouse_password_file: Option<PathBuf>,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// Capture files, read in the order given; `-` reads standard input.
    #[arg(required = true)]
    captures: Vec<String>,
    /// Output directory for sessions.ndjson, findings.ndjson and summary.json.
    #[arg(long, short)]
    out: PathBuf,
    /// TCP ports where SMTP is expected.
    #[arg(long, value_delimiter = ',', default_value = "25,587,465")]
    smtp_ports: Vec<u16>,
    /// Ports where TLS starts at once (implicit TLS, RFC 8314).
    #[arg(long, value_delimiter = ',', default_value = "465")]
    implicit_tls_ports: Vec<u16>,
    /// Do not look for SMTP on other ports (a 220 greeting answered by EHLO/HELO).
    #[arg(long)]
    no_content_detection: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Flows tracked at once (all workers together); the oldest are evicted beyond this.
    #[arg(long, default_value_t = 1_000_000)]
    max_flows: usize,
    /// Out-of-order bytes buffered per flow direction.
    #[arg(long, default_value_t = 65_536)]
    max_flow_buffer: usize,
    /// Seconds of capture time without packets after which a flow is closed.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// Seconds within which a plaintext session after a failed upgrade is a fallback.
    #[arg(long, default_value_t = 3600)]
    fallback_window: u64,
    /// Seconds before an SMTP session within which the client's MX lookup can have led to it.
    #[arg(long, default_value_t = 600)]
    mx_window: u64,
    /// Operator's known MX sets: lines `domain mx1 mx2 ...`; other answers are `mx-mismatch`.
    #[arg(long, value_name = "FILE")]
    known_mx: Option<PathBuf>,
    /// Seconds within which MX answers other clients or resolvers received are compared.
    #[arg(long, default_value_t = 86_400)]
    mx_compare_window: u64,
    /// Persistent baseline (created if missing): STARTTLS offers, server keys, MX sets and
    /// signed names from earlier runs count as evidence, and this run's are added.
    #[arg(long, value_name = "PATH")]
    state: Option<PathBuf>,
    /// Days (of capture time) after which a baseline entry not seen again is dropped.
    #[arg(long, default_value_t = 90)]
    state_retention: u64,
    /// Sessions held for cross-session judgement before the oldest is judged early.
    #[arg(long, default_value_t = 200_000)]
    max_held_sessions: usize,
    /// Record envelope addresses (MAIL FROM / RCPT TO). Off by default for privacy.
    #[arg(long)]
    log_envelope: bool,
    /// Sensor name written into every record (default: the host name).
    #[arg(long)]
    sensor: Option<String>,
    /// Extra trusted CA certificates (PEM), besides the Mozilla root set; may be repeated.
    #[arg(long = "trust-anchors", value_name = "PEM")]
    trust_anchors: Vec<PathBuf>,
    /// TLSA records (zone-file lines, `_25._tcp.<mx>. IN TLSA 3 1 1 <hex>`) for the DANE check.
    #[arg(long, value_name = "FILE")]
    tlsa: Option<PathBuf>,
    /// Country database (.mmdb: GeoLite2-Country/City, DB-IP, IPinfo, ip-location-db); repeatable.
    #[arg(long = "geoip-country", value_name = "FILE")]
    geoip_country: Vec<PathBuf>,
    /// ASN database (.mmdb: GeoLite2-ASN, DB-IP, IPinfo, ip-location-db); repeatable.
    #[arg(long = "geoip-asn", value_name = "FILE")]
    geoip_asn: Vec<PathBuf>,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    json: bool,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Also send sessions, findings, DNS transactions and certificates to ClickHouse at this
    /// HTTP URL (create the tables first with `stripwatch schema apply`).
    #[arg(long, value_name = "URL")]
    clickhouse: Option<String>,
    #[command(flatten)]
    clickhouse_access: ClickHouseAccess,
    /// Where batches wait while ClickHouse is away (default: OUT/clickhouse-spool); replayed
    /// first at the next start.
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Largest spool size (bytes; K, M, G suffixes are powers of 1024); batches beyond it are
    /// dropped, counted, and the run exits with an error.
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_bytes)]
    spool_max_bytes: u64,
    /// Rows per ClickHouse INSERT at most (rows also go at least once a second).
    #[arg(long, value_name = "ROWS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    clickhouse_batch_rows: u64,
    /// Seconds to keep replaying the spool at the end of the run before leaving it for the next
    /// start.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    clickhouse_drain_timeout: u64,
    /// Do not write the report (report.md, report.html, csv/, tlsrpt/) into the output directory.
    #[arg(long)]
    no_report: bool,
}

#[derive(Args)]
struct ReportArgs {
    /// An `analyze` output directory.
    #[arg(required_unless_present = "clickhouse", conflicts_with = "clickhouse")]
    dir: Option<PathBuf>,
    /// Read the events from ClickHouse at this HTTP URL instead (queries/*.sql).
    #[arg(long, value_name = "URL")]
    clickhouse: Option<String>,
    #[command(flatten)]
    clickhouse_access: ClickHouseAccess,
    /// Where to write the files (default: DIR; needed with --clickhouse unless only the terminal
    /// summary is asked for).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Outputs: terminal, markdown, html, csv, tlsrpt or all (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    format: Vec<ReportFormat>,
    /// Only sessions from this time on: YYYY-MM-DD or RFC 3339 (whole seconds).
    #[arg(long)]
    since: Option<String>,
    /// Only sessions before this time: RFC 3339, or YYYY-MM-DD (that day included).
    #[arg(long)]
    until: Option<String>,
    /// TLS-RPT `organization-name`.
    #[arg(long, default_value = "stripwatch")]
    tlsrpt_organization: String,
    /// TLS-RPT `contact-info`.
    #[arg(long, default_value = "postmaster@localhost")]
    tlsrpt_contact: String,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReportFormat {
    Terminal,
    Markdown,
    Html,
    Csv,
    Tlsrpt,
    All,
}

/// Reads `1073741824`, `512M`, `1G`, `64KiB`.
fn parse_bytes(s: &str) -> Result<u64, String> {
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

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
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
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("error: invalid arguments");
            eprintln!("{first} (see 'stripwatch --help')");
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Analyze(args) => analyze(*args),
        Command::Report(args) => report(args),
        Command::Schema { what } => schema(what),
        Command::State { what } => state(what),
    };
    if let Err(e) = result {
        eprintln!("stripwatch: error: {e:#}");
        // An unusable database is bad input like a bad option: exit status 2.
        let usage = e.is::<stripwatch::enrich::EnrichError>();
        std::process::exit(if usage { 2 } else { 1 });
    }
}

fn state(what: StateCommand) -> Result<()> {
    let (StateCommand::Show { path } | StateCommand::Dump { path }) = &what;
    if !path.exists() {
        bail!("{}: no such state file", path.display());
    }
    let store = StateStore::open(path, i64::MAX).map_err(|e| anyhow::anyhow!("{e}"))?;
    match what {
        StateCommand::Show { .. } => {
            let s = store.summary().map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        StateCommand::Dump { .. } => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            store.dump(&mut lock).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(())
}

fn target(url: &str, access: &ClickHouseAccess) -> Result<Target> {
    Ok(Target::from_args(
        url,
        access.clickhouse_database.as_deref(),
        access.clickhouse_password_file.as_deref(),
    )?)
}

fn schema(what: SchemaCommand) -> Result<()> {
    match what {
        SchemaCommand::Print => {
            print!("{}", stripwatch::schema::SCHEMA_SQL);
            Ok(())
        }
        SchemaCommand::Apply(args) => {
            let t = target(&args.clickhouse, &args.access)?;
            let n = stripwatch::schema::apply(&t)?;
            eprintln!(
                "schema applied to database {} at {} ({n} statements)",
                t.database, t.base_url
            );
            Ok(())
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "stripwatch".to_string())
}

fn analyze(args: AnalyzeArgs) -> Result<()> {
    if args.smtp_ports.is_empty() {
        bail!("--smtp-ports needs at least one port");
    }
    if args.max_flows == 0 || args.max_held_sessions == 0 {
        bail!("--max-flows and --max-held-sessions must be at least 1");
    }
    if args.captures.iter().filter(|c| c.as_str() == "-").count() > 1 {
        bail!("standard input ('-') can be read only once");
    }
    let enrich = Arc::new(stripwatch::enrich::Databases::open(
        &args.geoip_country,
        &args.geoip_asn,
    )?);
    // Open every input first: a missing file fails before any work is done.
    let mut inputs = Vec::new();
    for path in &args.captures {
        inputs.push(CaptureFile::open(path)?);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256);
    let mut server_ports = args.smtp_ports.clone();
    server_ports.push(53);
    let cfg = PipelineConfig {
        workers,
        flow: FlowConfig {
            smtp_ports: PortSet::new(&args.smtp_ports),
            implicit_tls_ports: PortSet::new(&args.implicit_tls_ports),
            probe_other_ports: !args.no_content_detection,
            max_flows: (args.max_flows / workers).max(1),
            idle_timeout_us: (args.idle_timeout as i64).saturating_mul(1_000_000),
            reassembly: ReassemblyLimits {
                max_pending_bytes: args.max_flow_buffer,
                ..ReassemblyLimits::default()
            },
            smtp: SmtpConfig {
                log_envelope: args.log_envelope,
                ..SmtpConfig::default()
            },
            sensor: args.sensor.clone().unwrap_or_else(hostname),
            dns: stripwatch::dns::DnsConfig {
                link_window_us: (args.mx_window as i64).saturating_mul(1_000_000),
                ..stripwatch::dns::DnsConfig::default()
            },
        },
        correlator: CorrelatorConfig {
            max_held: args.max_held_sessions,
            fallback_window_us: (args.fallback_window as i64).saturating_mul(1_000_000),
            ..CorrelatorConfig::default()
        },
        defrag: DefragLimits::default(),
        server_ports: PortSet::new(&server_ports),
        enrich,
    };

    let mut pems = Vec::new();
    for path in &args.trust_anchors {
        pems.push(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?);
    }
    let validator = Validator::new(&pems).map_err(|e| anyhow::anyhow!("--trust-anchors: {e}"))?;
    let tlsa = match &args.tlsa {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            TlsaStore::parse(&text).with_context(|| format!("{}", path.display()))?
        }
        None => TlsaStore::default(),
    };
    let known_mx = match &args.known_mx {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            KnownMx::parse(&text).map_err(|(line, text)| {
                anyhow::anyhow!(
                    "{}: line {line}: expected `domain mx-host...`, found `{text}`",
                    path.display()
                )
            })?
        }
        None => KnownMx::default(),
    };
    let baseline: Box<dyn Baseline> = match &args.state {
        Some(path) => Box::new(
            StateStore::open(
                path,
                (args.state_retention as i64).saturating_mul(86_400_000_000),
            )
            .map_err(|e| anyhow::anyhow!("--state: {e}"))?,
        ),
        None => Box::new(NoBaseline),
    };
    let judges = Judges {
        certs: CertJudge::new(validator, tlsa),
        dns: DnsJudge::new(
            DnsJudgeConfig {
                mx_window_us: (args.mx_compare_window as i64).saturating_mul(1_000_000),
                ..DnsJudgeConfig::default()
            },
            known_mx,
        ),
        baseline,
        save_baseline: args.state.is_some(),
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut sinks: Vec<Box<dyn SessionSink>> = vec![
        Box::new(NdjsonSink::create(&args.out)?),
        Box::new(TallySink(tally.clone())),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("cannot install the signal handler")?;
    }
    let clickhouse = match &args.clickhouse {
        Some(url) => {
            let opts = ClickHouseOptions {
                target: target(url, &args.clickhouse_access)?,
                spool_dir: args
                    .spool
                    .clone()
                    .unwrap_or_else(|| args.out.join("clickhouse-spool")),
                spool_max_bytes: args.spool_max_bytes,
                batch_rows: args.clickhouse_batch_rows as usize,
                flush_interval: Duration::from_secs(1),
                drain_timeout: Duration::from_secs(args.clickhouse_drain_timeout),
                sensor: cfg.flow.sensor.clone(),
                stop: Some(stop.clone()),
            };
            let (sink, report) = ClickHouseSink::start(opts)?;
            sinks.push(Box::new(sink));
            Some(report)
        }
        None => None,
    };
    let total: Option<u64> = inputs.iter().map(|i| i.size()).sum();
    let show_progress = !args.no_progress
        && std::io::stderr().is_terminal()
        && total.is_some_and(|t| t > 50_000_000);
    let bar = show_progress.then(|| {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut done_before = 0u64;
    let mut current = String::new();
    let mut last_value = 0u64;
    let mut progress = |name: &str, consumed: u64| {
        if let Some(bar) = &bar {
            if name != current {
                done_before += last_value;
                current = name.to_string();
                bar.set_message(name.to_string());
            }
            last_value = consumed;
            bar.set_position(done_before + consumed);
        }
    };
    let started = Instant::now();
    let stats = pipeline::run(
        inputs,
        &cfg,
        Box::new(Fanout(sinks)),
        judges,
        stop,
        &mut progress,
    )?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tally = tally.lock().map(|t| t.clone()).unwrap_or_default();
    let mut summary = Summary::new(&stats, &tally, elapsed);
    summary.clickhouse = clickhouse.as_ref().map(|r| r.snapshot());
    let json = serde_json::to_string_pretty(&summary)?;
    let summary_path = args.out.join("summary.json");
    std::fs::write(&summary_path, format!("{json}\n"))
        .with_context(|| format!("cannot write {}", summary_path.display()))?;
    if args.json {
        println!("{json}");
    } else {
        print!("{}", summary.render());
        println!(
            "\nwrote {}/{{sessions,findings}}.ndjson and summary.json",
            args.out.display()
        );
    }
    if let Some(ch) = &summary.clickhouse
        && ch.rows_dropped > 0
    {
        bail!(
            "ClickHouse: {} rows were dropped ({}); the ndjson files in {} have them",
            ch.rows_dropped,
            ch.last_error.as_deref().unwrap_or("spool full"),
            args.out.display()
        );
    }
    if !args.no_report {
        report_after_analyze(&args.out, args.json)?;
    }
    Ok(())
}

/// Writes the embedded report into an analysis directory (`analyze` without `--no-report`).
fn report_after_analyze(out: &std::path::Path, quiet: bool) -> Result<()> {
    use stripwatch::report::{self, Format};
    let started = Instant::now();
    let model = report::embedded::from_dir(out, Default::default())?;
    let formats = [Format::Markdown, Format::Html, Format::Csv, Format::Tlsrpt];
    report::write_files(&model, out, &formats, &Default::default())?;
    if !quiet {
        println!(
            "wrote the report ({}/report.{{md,html}}, csv/, tlsrpt/) in {:.2} s",
            out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn report(args: ReportArgs) -> Result<()> {
    use stripwatch::report::{self, Format, TlsrptIdentity};
    let window = report::window::parse_window(args.since.as_deref(), args.until.as_deref())?;
    let model = match (&args.clickhouse, &args.dir) {
        (Some(url), _) => report::clickhouse::load(&target(url, &args.clickhouse_access)?, window)?,
        (None, Some(dir)) => report::embedded::from_dir(dir, window)?,
        (None, None) => bail!("give an analysis DIR or --clickhouse URL"),
    };
    let mut formats = Vec::new();
    for f in &args.format {
        let add: &[Format] = match f {
            ReportFormat::Terminal => &[Format::Terminal],
            ReportFormat::Markdown => &[Format::Markdown],
            ReportFormat::Html => &[Format::Html],
            ReportFormat::Csv => &[Format::Csv],
            ReportFormat::Tlsrpt => &[Format::Tlsrpt],
            ReportFormat::All => &[
                Format::Terminal,
                Format::Markdown,
                Format::Html,
                Format::Csv,
                Format::Tlsrpt,
            ],
        };
        for a in add {
            if !formats.contains(a) {
                formats.push(*a);
            }
        }
    }
    let files = formats.iter().any(|f| *f != Format::Terminal);
    let out = match args.out.or(args.dir) {
        Some(out) => out,
        None if files => bail!("--out DIR is needed with --clickhouse (or --format terminal)"),
        None => PathBuf::new(),
    };
    let identity = TlsrptIdentity {
        organization: args.tlsrpt_organization,
        contact: args.tlsrpt_contact,
    };
    let written = if files {
        report::write_files(&model, &out, &formats, &identity)?
    } else {
        Vec::new()
    };
    if formats.contains(&Format::Terminal) {
        print!("{}", report::terminal::render(&model));
        if !written.is_empty() {
            println!("\nwrote {} files under {}", written.len(), out.display());
        }
    }
    Ok(())
}
