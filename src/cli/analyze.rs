//! `stripwatch analyze`: the pipeline, the judges and the sinks, each built from the arguments by
//! its own function, then the run, the summary and (unless `--no-report`) the report.

use super::{AnalyzeArgs, SharedArgs};
use anyhow::{Context, Result, bail};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stripwatch::capture::CaptureFile;
use stripwatch::capture::SourceStats;
use stripwatch::decode::DefragLimits;
use stripwatch::detect::CorrelatorConfig;
use stripwatch::detect::certs::CertJudge;
use stripwatch::detect::dns_judge::{DnsJudge, DnsJudgeConfig, KnownMx};
use stripwatch::dns::DnsConfig;
use stripwatch::enrich::Databases;
use stripwatch::flow::reassembly::ReassemblyLimits;
use stripwatch::memory::{Board, Budget, Window};
use stripwatch::pipeline::{self, Judges, PipelineConfig, RunStats};
use stripwatch::pipeline::{FlowConfig, PortSet};
use stripwatch::report::embedded::{Aggregator, ReportSink};
use stripwatch::report::summary::{Summary, Tally, TallySink};
use stripwatch::sink::clickhouse::{ClickHouseOptions, ClickHouseReport, ClickHouseSink};
use stripwatch::sink::ndjson::NdjsonSink;
use stripwatch::sink::rotating::{RotatingNdjsonSink, RotationControl};
use stripwatch::sink::shared_baseline::SharedBaseline;
use stripwatch::sink::{Fanout, SessionSink};
use stripwatch::smtp::SmtpConfig;
use stripwatch::state::{Baseline, NoBaseline, StateStore};
use stripwatch::tls::dane::TlsaStore;
use stripwatch::tls::verify::Validator;

/// Runs `analyze`. Everything that can fail on bad input (options, databases, captures, the
/// output directory, trust anchors, TLSA and MX files, the state file) fails before the first
/// packet is read.
pub fn run(args: AnalyzeArgs) -> Result<()> {
    let AnalyzeArgs {
        captures,
        no_progress,
        follow,
        shared: args,
    } = args;
    if follow.follow.is_some() {
        return super::follow::run(follow, args);
    }
    super::follow::refuse_without_follow(&follow)?;
    if captures.is_empty() {
        return Err(super::UsageError(
            "the following required arguments were not provided: <CAPTURES>... (or --follow DIR)"
                .into(),
        )
        .into());
    }
    check(&args)?;
    if captures.iter().filter(|c| c.as_str() == "-").count() > 1 {
        bail!("standard input ('-') can be read only once");
    }
    let enrich = Arc::new(Databases::open(&args.geoip_country, &args.geoip_asn)?);
    // Open every input first: a missing file fails before any work is done.
    let inputs = captures
        .iter()
        .map(|path| CaptureFile::open(path))
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
    let cfg = pipeline_config(&args, enrich);
    let judges = judges(&args)?;
    let stop = stop_on_signal()?;
    let (sink, outputs) = sinks(&args, &cfg.flow.sensor, &stop, None)?;
    let total: Option<u64> = inputs.iter().map(|i| i.size()).sum();
    let mut progress = Progress::new(!no_progress, total);
    let started = Instant::now();
    let stats = pipeline::run(
        inputs,
        &cfg,
        sink,
        judges,
        stop,
        &mut |name: &str, consumed: u64| progress.update(name, consumed),
    )?;
    progress.finish();
    outputs.finish(&args, &stats, started.elapsed().as_secs_f64(), None)
}

/// What a run's outputs need after the pipeline ends: the tally the summary is made from, and
/// ClickHouse's report with `--clickhouse`.
pub(super) struct RunOutputs {
    tally: Arc<Mutex<Tally>>,
    clickhouse: Option<ClickHouseReport>,
    /// The report aggregated while the records were written: a run of plain files (not
    /// rotated) without `--no-report`. Otherwise the report reads the directory back.
    report: Option<Arc<Mutex<Aggregator>>>,
}

/// The sinks of a run, all behind one: the NDJSON files in OUT, the tally for the summary, and
/// ClickHouse with `--clickhouse` (which `stop` tells to stop waiting for the server).
///
/// With `rotation` (long runs) the files are rotated sets (`sink::rotating`); without, one set
/// with the plain names.
pub(super) fn sinks(
    args: &SharedArgs,
    sensor: &str,
    stop: &Arc<AtomicBool>,
    rotation: Option<Arc<RotationControl>>,
) -> Result<(Box<dyn SessionSink>, RunOutputs)> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let report = (rotation.is_none() && !args.no_report)
        .then(|| Arc::new(Mutex::new(Aggregator::new(Default::default()))));
    let files: Box<dyn SessionSink> = match rotation {
        Some(control) => Box::new(RotatingNdjsonSink::create(&args.out, control)?),
        None => Box::new(NdjsonSink::create(&args.out)?),
    };
    let mut sinks: Vec<Box<dyn SessionSink>> = vec![files, Box::new(TallySink(tally.clone()))];
    if let Some(report) = &report {
        sinks.push(Box::new(ReportSink(report.clone())));
    }
    let clickhouse = match &args.clickhouse {
        Some(url) => {
            let (sink, report) = clickhouse_sink(args, url, sensor, stop)?;
            sinks.push(Box::new(sink));
            Some(report)
        }
        None => None,
    };
    Ok((
        Box::new(Fanout(sinks)),
        RunOutputs {
            tally,
            clickhouse,
            report,
        },
    ))
}

impl RunOutputs {
    /// The tally the summary is made from, as it grows.
    pub(super) fn tally(&self) -> Arc<Mutex<Tally>> {
        self.tally.clone()
    }

    /// ClickHouse's counters, with `--clickhouse`.
    pub(super) fn clickhouse(&self) -> Option<ClickHouseReport> {
        self.clickhouse.clone()
    }

    /// Writes and prints the summary (with what `extra` adds), fails when ClickHouse dropped
    /// rows, and writes the report unless `--no-report`.
    pub(super) fn finish(
        self,
        args: &SharedArgs,
        stats: &RunStats,
        elapsed: f64,
        extra: Option<&SummaryExtra>,
    ) -> Result<()> {
        let tally = self.tally.lock().map(|t| t.clone()).unwrap_or_default();
        let mut summary = Summary::new(stats, &tally, elapsed);
        summary.clickhouse = self.clickhouse.as_ref().map(|r| r.snapshot());
        write_summary(&summary, extra, &args.out, args.json)?;
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
            let aggregated = self.report.and_then(|a| {
                let mut a = a.lock().ok()?;
                Some(std::mem::replace(
                    &mut *a,
                    Aggregator::new(Default::default()),
                ))
            });
            super::report::after_analyze(&args.out, aggregated, args.json)?;
        }
        Ok(())
    }
}

/// The checks clap cannot express.
pub(super) fn check(args: &SharedArgs) -> Result<()> {
    if args.smtp_ports.is_empty() {
        bail!("--smtp-ports needs at least one port");
    }
    if args.max_flows == 0 || args.max_held_sessions == 0 {
        bail!("--max-flows and --max-held-sessions must be at least 1");
    }
    Ok(())
}

/// Seconds on the command line, microseconds of capture time inside (saturating, as a huge
/// window means "never").
pub(super) fn micros(seconds: u64) -> i64 {
    (seconds as i64).saturating_mul(1_000_000)
}

/// The pipeline's configuration: ports, limits (`--max-flows` is shared out among the
/// workers) and windows in the pipeline's units.
pub(super) fn pipeline_config(args: &SharedArgs, enrich: Arc<Databases>) -> PipelineConfig {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256);
    // Packets are sharded by client; port 53 marks the resolver's end, so that a client's DNS
    // lookups and its SMTP connections meet on one worker.
    let mut server_ports = args.smtp_ports.clone();
    server_ports.push(53);
    server_ports.push(stripwatch::pipeline::worker::POLICY_FETCH_PORT);
    let budget = Budget::new(args.memory_limit, workers);
    PipelineConfig {
        workers,
        budget,
        board: Arc::new(Board::default()),
        worker_counts: Arc::new(pipeline::WorkerCounts::new(workers)),
        flow: FlowConfig {
            max_flow_bytes: budget.limit(Window::Flows),
            smtp_ports: PortSet::new(&args.smtp_ports),
            implicit_tls_ports: PortSet::new(&args.implicit_tls_ports),
            probe_other_ports: !args.no_content_detection,
            mta_sts_fetches: !args.no_mta_sts_fetches,
            max_flows: (args.max_flows / workers).max(1),
            idle_timeout_us: micros(args.idle_timeout),
            reassembly: ReassemblyLimits {
                max_pending_bytes: args.max_flow_buffer,
                ..ReassemblyLimits::default()
            },
            smtp: SmtpConfig {
                log_envelope: args.log_envelope,
                ..SmtpConfig::default()
            },
            sensor: args.sensor.clone().unwrap_or_else(hostname),
            dns: DnsConfig {
                link_window_us: micros(args.mx_window),
                max_pending_bytes: budget.limit(Window::DnsPending),
                max_client_bytes: budget.limit(Window::DnsClients),
                max_sts_bytes: budget.limit(Window::StsClients),
                ..DnsConfig::default()
            },
        },
        correlator: CorrelatorConfig {
            max_held: args.max_held_sessions,
            fallback_window_us: micros(args.fallback_window),
            held_bytes: budget.limit(Window::Held),
            wait_bytes: budget.limit(Window::DnsWait),
            dns_link_window_us: micros(args.mx_window),
            offers_bytes: budget.limit(Window::Offers),
            sts_domains_bytes: budget.limit(Window::StsDomains),
            ..CorrelatorConfig::default()
        },
        defrag: DefragLimits::default(),
        server_ports: PortSet::new(&server_ports),
        enrich,
        state_interval: None,
    }
}

/// The sensor name when `--sensor` is not given.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "stripwatch".to_string())
}

/// The certificate, DNS and baseline judges, from the trust anchors, TLSA records, known MX
/// sets and state file the arguments name.
pub(super) fn judges(args: &SharedArgs) -> Result<Judges> {
    judges_with(args, history(args)?)
}

/// The judges with `baseline` as the history (`analyze --follow` opens the state file itself,
/// to keep its position there too).
pub(super) fn judges_with(args: &SharedArgs, baseline: Box<dyn Baseline>) -> Result<Judges> {
    // The judges live in the output stage: their shares are not divided among workers.
    let budget = Budget::new(args.memory_limit, 1);
    let certs = CertJudge::new(validator(&args.trust_anchors)?, tlsa(args.tlsa.as_deref())?)
        .with_max_bytes(budget.limit(Window::Certificates));
    let dns = DnsJudge::new(
        DnsJudgeConfig {
            mx_window_us: micros(args.mx_compare_window),
            max_bytes: budget.limit(Window::MxAnswers),
            ..DnsJudgeConfig::default()
        },
        known_mx(args.known_mx.as_deref())?,
    );
    Ok(Judges {
        certs,
        dns,
        baseline,
        save_baseline: args.state.is_some(),
    })
}

/// The history the arguments name: `--shared-baseline`, `--state`, or none.
pub(super) fn history(args: &SharedArgs) -> Result<Box<dyn Baseline>> {
    if args.shared_baseline {
        return shared_baseline(args);
    }
    Ok(match args.state.as_deref() {
        Some(path) => Box::new(open_state(path, args.state_retention)?),
        None => Box::new(NoBaseline),
    })
}

/// What a long run (`live`, `analyze --follow`) changes in the pipeline: a session waits only
/// `hold` seconds of packet time for evidence from later sessions (offline it waits for the whole
/// run, live it would never reach the files), and `--state` is saved every `state_interval`.
pub(super) fn streaming(cfg: &mut PipelineConfig, hold: u64, state_interval: &Arc<AtomicU64>) {
    cfg.state_interval = Some(state_interval.clone());
    cfg.correlator.hold_us = micros(hold);
}

/// A long run's pipeline over its one source, to the end: it runs until SIGTERM/SIGINT; then the
/// threads that served it (housekeeping, metrics) see `done` and are joined, and the summary is
/// written with what `extra` makes of the source's counts.
pub(super) fn run_to_the_end<S: stripwatch::capture::PacketSource>(
    source: S,
    cfg: &PipelineConfig,
    (sink, outputs): (Box<dyn SessionSink>, RunOutputs),
    judges: Judges,
    stop: Arc<AtomicBool>,
    (done, helpers): (&AtomicBool, Vec<std::thread::JoinHandle<()>>),
    (args, extra): (&SharedArgs, impl FnOnce(&SourceStats) -> SummaryExtra),
) -> Result<()> {
    let started = Instant::now();
    let result = pipeline::run(
        vec![source],
        cfg,
        sink,
        judges,
        stop,
        &mut |_: &str, _: u64| {},
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for helper in helpers {
        let _ = helper.join();
    }
    let stats = result?;
    let source = stats.sources.first().map(|(_, s)| *s).unwrap_or_default();
    outputs.finish(
        args,
        &stats,
        started.elapsed().as_secs_f64(),
        Some(&extra(&source)),
    )
}

/// The Mozilla roots plus the `--trust-anchors` PEM files.
fn validator(pem_files: &[PathBuf]) -> Result<Validator> {
    let mut pems = Vec::new();
    for path in pem_files {
        pems.push(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?);
    }
    Validator::new(&pems).map_err(|e| anyhow::anyhow!("--trust-anchors: {e}"))
}

/// A text file the user named, with the path in the error.
fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The `--tlsa` records (none without the option).
fn tlsa(path: Option<&Path>) -> Result<TlsaStore> {
    let Some(path) = path else {
        return Ok(TlsaStore::default());
    };
    TlsaStore::parse(&read_text(path)?).with_context(|| format!("{}", path.display()))
}

/// The `--known-mx` sets (none without the option).
fn known_mx(path: Option<&Path>) -> Result<KnownMx> {
    let Some(path) = path else {
        return Ok(KnownMx::default());
    };
    KnownMx::parse(&read_text(path)?).map_err(|(line, text)| {
        anyhow::anyhow!(
            "{}: line {line}: expected `domain mx-host...`, found `{text}`",
            path.display()
        )
    })
}

/// The `--state` store, whose baseline entries expire after `retention_days` of capture time.
pub(super) fn open_state(path: &Path, retention_days: u64) -> Result<StateStore> {
    StateStore::open(path, (retention_days as i64).saturating_mul(86_400_000_000))
        .map_err(|e| anyhow::anyhow!("--state: {e}"))
}

/// The `--shared-baseline` history from the `--clickhouse` database, reloaded every
/// `--shared-baseline-refresh` seconds.
fn shared_baseline(args: &SharedArgs) -> Result<Box<dyn Baseline>> {
    let url = args
        .clickhouse
        .as_deref()
        .context("--shared-baseline needs --clickhouse")?;
    let target = args.clickhouse_access.target(url)?;
    let refresh = (args.shared_baseline_refresh > 0)
        .then(|| Duration::from_secs(args.shared_baseline_refresh));
    Ok(Box::new(SharedBaseline::start(target, refresh)?))
}

/// The flag that Ctrl-C, SIGTERM and SIGHUP raise: the pipeline stops reading, and what was
/// read is still judged, written and summarised.
pub(super) fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    for signal in [SIGTERM, SIGINT, SIGHUP] {
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot install the signal handler")?;
    }
    Ok(stop)
}

/// The signals of a long run: SIGTERM and SIGINT raise the first flag (stop: judge, write and
/// leave), SIGHUP the second (new files, configuration reloaded).
pub(super) fn sensor_signals() -> Result<(Arc<AtomicBool>, Arc<AtomicBool>)> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let hangup = Arc::new(AtomicBool::new(false));
    for (signal, flag) in [(SIGTERM, &stop), (SIGINT, &stop), (SIGHUP, &hangup)] {
        signal_hook::flag::register(signal, flag.clone())
            .context("cannot install the signal handlers")?;
    }
    Ok((stop, hangup))
}

/// The ClickHouse sink for `--clickhouse URL`, spooling under OUT unless `--spool` says where.
fn clickhouse_sink(
    args: &SharedArgs,
    url: &str,
    sensor: &str,
    stop: &Arc<AtomicBool>,
) -> Result<(ClickHouseSink, ClickHouseReport)> {
    let opts = ClickHouseOptions {
        target: args.clickhouse_access.target(url)?,
        spool_dir: spool_dir(args),
        spool_max_bytes: args.spool_max_bytes,
        batch_rows: args.clickhouse_batch_rows as usize,
        flush_interval: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(args.clickhouse_drain_timeout),
        sensor: sensor.to_string(),
        stop: Some(stop.clone()),
    };
    Ok(ClickHouseSink::start(opts)?)
}

/// Where ClickHouse batches wait: `--spool`, else OUT/clickhouse-spool.
pub(super) fn spool_dir(args: &SharedArgs) -> PathBuf {
    args.spool
        .clone()
        .unwrap_or_else(|| args.out.join("clickhouse-spool"))
}

/// The progress bar over all inputs together, shown only on a terminal and only for more than
/// 50 MB of known size (smaller runs end before a bar is worth reading).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    /// Bytes of the inputs finished before the current one.
    done_before: u64,
    /// The current input's name and bytes read so far.
    current: String,
    last_value: u64,
}

impl Progress {
    fn new(wanted: bool, total: Option<u64>) -> Progress {
        let show =
            wanted && std::io::stderr().is_terminal() && total.is_some_and(|t| t > 50_000_000);
        let bar = show.then(|| {
            let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            done_before: 0,
            current: String::new(),
            last_value: 0,
        }
    }

    /// The pipeline read `consumed` bytes of input `name` so far.
    fn update(&mut self, name: &str, consumed: u64) {
        if let Some(bar) = &self.bar {
            if name != self.current {
                self.done_before += self.last_value;
                self.current = name.to_string();
                bar.set_message(name.to_string());
            }
            self.last_value = consumed;
            bar.set_position(self.done_before + consumed);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// What `live` adds to the summary: the capture's own counters (`capture` in summary.json) and
/// the lines that say them in the text.
pub(super) struct SummaryExtra {
    pub capture: serde_json::Value,
    pub text: String,
}

/// The summary with `capture` after its own fields, in their order.
#[derive(serde::Serialize)]
struct WithCapture<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    capture: &'a serde_json::Value,
}

/// Writes OUT/summary.json and prints the summary: as that JSON with `--json`, else as text.
pub(super) fn write_summary(
    summary: &Summary,
    extra: Option<&SummaryExtra>,
    out: &Path,
    json_only: bool,
) -> Result<()> {
    let json = match extra {
        None => serde_json::to_string_pretty(summary)?,
        Some(extra) => serde_json::to_string_pretty(&WithCapture {
            summary,
            capture: &extra.capture,
        })?,
    };
    let summary_path = out.join("summary.json");
    std::fs::write(&summary_path, format!("{json}\n"))
        .with_context(|| format!("cannot write {}", summary_path.display()))?;
    if json_only {
        println!("{json}");
    } else {
        print!("{}", summary.render());
        if let Some(extra) = extra {
            print!("{}", extra.text);
        }
        println!(
            "\nwrote {}/{{sessions,findings}}.ndjson and summary.json",
            out.display()
        );
    }
    Ok(())
}
