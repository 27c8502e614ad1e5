//! `stripwatch analyze --follow DIR`: for sites that already capture with rotation (`tcpdump
//! -G/-C`, dumpcap ring buffers, netsniff-ng). The directory's closed files are one packet
//! source (`capture::FollowDir`), read by the same pipeline, judges and sinks as `analyze`
//! (built by the same functions) and run as `live` runs: records released after `--hold` and
//! flushed while it goes on, rotated output files, `--state` saved periodically, until SIGTERM or
//! SIGINT. The files read are remembered in `--state` (or in memory).

use super::analyze::{
    SummaryExtra, check, history, judges_with, open_state, pipeline_config, run_to_the_end,
    sensor_signals, sinks, streaming,
};
use super::reload::{Knobs, Reloader, housekeeping};
use super::{FollowArgs, SharedArgs, UsageError};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stripwatch::capture::follow::{FollowCounters, Ledger, MemoryLedger};
use stripwatch::capture::{FollowDir, SourceStats};
use stripwatch::enrich::Databases;
use stripwatch::pipeline::{WorkerCounts, loss_ratio};
use stripwatch::report::summary::Tally;
use stripwatch::sink::rotating::{Rotation, RotationControl};
use stripwatch::state::Baseline;

/// `--rotate` without a value: as `live`'s default.
pub(super) const DEFAULT_ROTATION: Rotation = Rotation::Hourly;
/// `--state-interval` without a value: as `live`'s default.
pub(super) const DEFAULT_STATE_INTERVAL: u64 = 300;
/// `--log-interval` without a value: as `live`'s default.
pub(super) const DEFAULT_LOG_INTERVAL: u64 = 60;

/// Runs `analyze --follow`. A directory that cannot be read and every bad option fail before
/// the first file is read (status 2 for the directory, as for a bad option).
pub fn run(follow: FollowArgs, args: SharedArgs) -> Result<()> {
    let FollowArgs {
        follow: Some(dir),
        follow_settle,
        hold,
        rotate,
        state_interval,
        log_interval,
        metrics,
    } = follow
    else {
        anyhow::bail!("--follow: no directory");
    };
    // The defaults, the same as `live`'s (none in clap, so that a use without --follow shows).
    let settle = Duration::from_secs(follow_settle.unwrap_or(60));
    let hold = hold.unwrap_or(2);
    let rotate = rotate.unwrap_or(DEFAULT_ROTATION);
    let state_interval = state_interval.unwrap_or(DEFAULT_STATE_INTERVAL);
    let log_interval = log_interval.unwrap_or(DEFAULT_LOG_INTERVAL);
    check(&args)?;
    if !dir.is_dir() {
        return Err(UsageError(format!("--follow {}: not a directory", dir.display())).into());
    }
    std::fs::read_dir(&dir).map_err(|e| UsageError(format!("--follow {}: {e}", dir.display())))?;
    let metrics = metrics.as_deref().map(super::metrics::bind).transpose()?;
    let enrich = Arc::new(Databases::open(&args.geoip_country, &args.geoip_asn)?);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
    let knobs = Knobs {
        rotation: RotationControl::new(rotate),
        state_interval: Arc::new(AtomicU64::new(state_interval)),
        log_interval: Arc::new(AtomicU64::new(log_interval)),
    };
    let mut cfg = pipeline_config(&args, enrich);
    streaming(&mut cfg, hold, &knobs.state_interval);
    let (baseline, ledger) = history_and_position(&args)?;
    let judges = judges_with(&args, baseline)?;
    let (stop, hangup) = sensor_signals()?;
    let reloader = Reloader::new(knobs, args.config.clone())?;
    let (sink, outputs) = sinks(
        &args,
        &cfg.flow.sensor,
        &stop,
        Some(reloader.knobs().rotation.clone()),
    )?;
    let source = FollowDir::open(&dir, settle, ledger, stop.clone())?;
    let counters = source.counters();
    let done = Arc::new(AtomicBool::new(false));
    let watched = Watched {
        follow: counters.clone(),
        worker_counts: cfg.worker_counts.clone(),
        tally: outputs.tally(),
    };
    let hangups = housekeeping(reloader, hangup, done.clone(), move || {
        log_counters(&watched)
    });
    let server = metrics.map(|listener| {
        let sources = super::metrics::Sources {
            capture: super::metrics::Capture::Follow {
                directory: dir.display().to_string(),
                counters: counters.clone(),
            },
            tally: outputs.tally(),
            clickhouse: outputs.clickhouse(),
            memory: cfg.board.clone(),
            worker_counts: cfg.worker_counts.clone(),
        };
        super::metrics::serve(listener, sources, done.clone())
    });
    tracing::info!(
        dir = %dir.display(),
        workers = cfg.workers,
        "following {}; SIGTERM or Ctrl-C stops, SIGHUP starts new files",
        dir.display()
    );
    run_to_the_end(
        source,
        &cfg,
        (sink, outputs),
        judges,
        stop,
        (&done, std::iter::once(hangups).chain(server).collect()),
        (&args, |source: &SourceStats| {
            follow_summary(&dir, &counters, source)
        }),
    )
}

/// The options that mean something only with `--follow`, given without it: a usage error, one
/// line and status 2. (Checked here: they have no default in clap, so that one can tell.)
pub fn refuse_without_follow(follow: &FollowArgs) -> Result<(), UsageError> {
    let given = [
        ("--follow-settle", follow.follow_settle.is_some()),
        ("--hold", follow.hold.is_some()),
        ("--rotate", follow.rotate.is_some()),
        ("--state-interval", follow.state_interval.is_some()),
        ("--log-interval", follow.log_interval.is_some()),
        ("--metrics", follow.metrics.is_some()),
    ];
    match given.iter().find(|(_, set)| *set) {
        Some((option, _)) => Err(UsageError(format!(
            "{option} is for a long run: it needs --follow DIR (or `stripwatch live`)"
        ))),
        None => Ok(()),
    }
}

/// The baseline and where the follow remembers the files it read: both in the `--state` file
/// (one store, two tables), else the history the arguments name and a position in memory.
fn history_and_position(args: &SharedArgs) -> Result<(Box<dyn Baseline>, Box<dyn Ledger>)> {
    match args.state.as_deref() {
        Some(path) => {
            let store = open_state(path, args.state_retention)?;
            let ledger = store
                .follow_ledger()
                .map_err(|e| anyhow::anyhow!("--state: {e}"))?;
            Ok((Box::new(store), Box::new(ledger)))
        }
        None => Ok((history(args)?, Box::new(MemoryLedger::default()))),
    }
}

/// What the follow's periodic log line reads.
struct Watched {
    follow: Arc<FollowCounters>,
    worker_counts: Arc<WorkerCounts>,
    tally: Arc<Mutex<Tally>>,
}

/// The follow's periodic log event: files read and skipped, packets, sessions written and the
/// capture-loss estimate, so that progress and loss show while it runs.
fn log_counters(watched: &Watched) {
    let read = |v: &AtomicU64| v.load(Ordering::Relaxed);
    let sessions = watched.tally.lock().map_or(0, |t| t.sessions);
    let (acks, gaps) = watched.worker_counts.totals();
    tracing::info!(
        files = read(&watched.follow.files),
        skipped_files = read(&watched.follow.skipped),
        packets = read(&watched.follow.packets),
        bytes = read(&watched.follow.bytes),
        snapped = read(&watched.follow.snapped),
        sessions,
        acks,
        acked_gaps = gaps,
        loss_ratio = loss_ratio(acks, gaps),
        "follow counters"
    );
}

/// What the follow counted, for summary.json (`capture`) and the text summary.
fn follow_summary(dir: &Path, c: &FollowCounters, s: &SourceStats) -> SummaryExtra {
    let files = c.files.load(Ordering::Relaxed);
    let skipped = c.skipped.load(Ordering::Relaxed);
    SummaryExtra {
        capture: serde_json::json!({
            "directory": dir.display().to_string(),
            "files": files,
            "skipped_files": skipped,
            "packets": s.packets,
            "bytes": s.bytes,
            "snapped": s.snapped,
            "truncated": s.truncated,
        }),
        text: format!(
            "\nfollowed {}: {files} files read ({skipped} skipped), {} packets, {} bytes\n",
            dir.display(),
            s.packets,
            s.bytes
        ),
    }
}
