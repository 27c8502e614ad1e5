//! `stripwatch live`: the same pipeline, judges and sinks as `analyze` (built by the same
//! functions from the same options), fed by libpcap on live interfaces instead of files. It runs
//! until SIGTERM or SIGINT, then judges what is held, writes the summary and exits 0.

use super::analyze::{
    SummaryExtra, check, judges, pipeline_config, run_to_the_end, sensor_signals, sinks, spool_dir,
    streaming,
};
use super::reload::{Knobs, Reloader, housekeeping};
use super::{LiveArgs, SharedArgs, UsageError, privileges};
use anyhow::{Context, Result};
use nix::unistd::{Uid, User};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use stripwatch::capture::{InterfaceCounters, LiveCapture, LiveOptions, PacketSource, SourceStats};
use stripwatch::enrich::Databases;
use stripwatch::pipeline::{WorkerCounts, loss_ratio};
use stripwatch::report::summary::Tally;
use stripwatch::sink::rotating::RotationControl;

/// Runs `live`. Bad options, an unknown interface, missing permission and a BPF filter that does
/// not compile all fail before the first packet is read.
pub fn run(args: LiveArgs) -> Result<()> {
    let LiveArgs {
        interfaces,
        bpf,
        buffer_size,
        snaplen,
        no_promiscuous,
        hold,
        metrics,
        log_interval,
        user,
        allow_root,
        rotate,
        state_interval,
        shared: args,
    } = args;
    check(&args)?;
    privileges::refuse_root(user.as_deref(), allow_root)?;
    let user = user.as_deref().map(privileges::resolve).transpose()?;
    let metrics = metrics.as_deref().map(super::metrics::bind).transpose()?;
    let enrich = Arc::new(Databases::open(&args.geoip_country, &args.geoip_asn)?);
    let mut cfg = pipeline_config(&args, enrich);
    let mut server_ports = args.smtp_ports.clone();
    server_ports.push(53);
    let capture = LiveCapture::open(&LiveOptions {
        interfaces,
        bpf,
        snaplen,
        buffer_bytes: buffer_size,
        promiscuous: !no_promiscuous,
        workers: cfg.workers,
        server_ports,
    })?;
    let fanout = capture.fanout() > 0;
    let fanout_refused = capture.fanout_refused().map(str::to_string);
    // Everything that needs the privilege or must belong to the user is opened or made now;
    // then the privileges go, before the first thread starts.
    let made = Made::before(&args);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
    if args.clickhouse.is_some() {
        std::fs::create_dir_all(spool_dir(&args))
            .with_context(|| format!("cannot create {}", spool_dir(&args).display()))?;
    }
    let knobs = Knobs {
        rotation: RotationControl::new(rotate),
        state_interval: Arc::new(AtomicU64::new(state_interval)),
        log_interval: Arc::new(AtomicU64::new(log_interval)),
    };
    streaming(&mut cfg, hold, &knobs.state_interval);
    let judges = judges(&args)?;
    if !(user.is_none() && Uid::effective().is_root()) {
        if let Some(user) = &user {
            made.give(&args, user)?;
        }
        privileges::drop_privileges(user.as_ref())?;
        writable_after_drop(&args)?;
    }
    let (stop, hangup) = sensor_signals()?;
    let reloader = Reloader::new(knobs, args.config.clone())?;
    let (sink, outputs) = sinks(
        &args,
        &cfg.flow.sensor,
        &stop,
        Some(reloader.knobs().rotation.clone()),
    )?;
    let name = capture.name().to_string();
    let done = Arc::new(AtomicBool::new(false));
    let logged = (
        capture.counters(),
        cfg.worker_counts.clone(),
        outputs.tally(),
    );
    let logger = housekeeping(reloader, hangup, done.clone(), move || {
        log_counters(&logged.0, &logged.1, &logged.2)
    });
    let server = metrics.map(|listener| {
        let sources = super::metrics::Sources {
            capture: super::metrics::Capture::Interfaces(capture.counters()),
            tally: outputs.tally(),
            clickhouse: outputs.clickhouse(),
            memory: cfg.board.clone(),
            worker_counts: cfg.worker_counts.clone(),
        };
        super::metrics::serve(listener, sources, done.clone())
    });
    let counters = capture.counters();
    tracing::info!(
        interfaces = %name,
        workers = cfg.workers,
        fanout,
        "capturing on {name}; SIGTERM or Ctrl-C stops, SIGHUP starts new files and reloads"
    );
    run_to_the_end(
        capture,
        &cfg,
        (sink, outputs),
        judges,
        stop,
        (&done, std::iter::once(logger).chain(server).collect()),
        (&args, |source: &SourceStats| {
            capture_summary(
                &name,
                source,
                (fanout, fanout_refused.as_deref()),
                &counters,
            )
        }),
    )
}

/// Which of the paths a run writes did not exist before it started: only those are handed to
/// `--user` (stripwatch never changes the owner of something it did not create).
struct Made {
    out: bool,
    spool: bool,
    state: bool,
}

impl Made {
    fn before(args: &SharedArgs) -> Made {
        Made {
            out: !args.out.exists(),
            spool: args.clickhouse.is_some() && !spool_dir(args).exists(),
            state: args.state.as_ref().is_some_and(|s| !s.exists()),
        }
    }

    fn give(&self, args: &SharedArgs, user: &User) -> Result<(), UsageError> {
        if self.out {
            privileges::give(&args.out, user)?;
        }
        if self.spool {
            privileges::give(&spool_dir(args), user)?;
        }
        if let Some(state) = args.state.as_ref().filter(|_| self.state) {
            privileges::give(state, user)?;
        }
        Ok(())
    }
}

/// After the switch: the output directory (and the summary an earlier run left there), the
/// spool and the state file must be writable, or the run fails now rather than at its end.
fn writable_after_drop(args: &SharedArgs) -> Result<(), UsageError> {
    privileges::check_writable(&args.out, "--out")?;
    privileges::check_writable(&args.out.join("summary.json"), "--out")?;
    if args.clickhouse.is_some() {
        privileges::check_writable(&spool_dir(args), "--spool")?;
    }
    if let Some(state) = &args.state {
        privileges::check_writable(state, "--state")?;
    }
    Ok(())
}

/// What the capture itself counted, for summary.json (`capture`) and the text summary: the
/// totals, whether the kernel split the packets among the workers (`fanout`, and the kernel's
/// reason when it refused), and each capture handle's own counters (`handles`: per interface and
/// worker).
fn capture_summary(
    interfaces: &str,
    s: &SourceStats,
    (fanout, refused): (bool, Option<&str>),
    counters: &[Arc<InterfaceCounters>],
) -> SummaryExtra {
    let read = |v: &AtomicU64| v.load(Ordering::Relaxed);
    let handles: Vec<serde_json::Value> = counters
        .iter()
        .map(|c| {
            serde_json::json!({
                "interface": c.interface,
                "worker": c.worker,
                "packets": read(&c.packets),
                "bytes": read(&c.bytes),
                "kernel_drops": read(&c.kernel_drops),
                "interface_drops": read(&c.interface_drops),
            })
        })
        .collect();
    SummaryExtra {
        capture: serde_json::json!({
            "interfaces": interfaces,
            "fanout": fanout,
            "fanout_refused": refused,
            "packets": s.packets,
            "bytes": s.bytes,
            "snapped": s.snapped,
            "kernel_drops": s.kernel_drops,
            "interface_drops": s.interface_drops,
            "handles": handles,
        }),
        text: format!(
            "\ncapture on {interfaces} ({}): {} packets, {} bytes, {} cut by the snap length, \
             {} kernel drops, {} interface drops\n",
            if fanout {
                "one handle per worker, PACKET_FANOUT"
            } else {
                "one reader"
            },
            s.packets,
            s.bytes,
            s.snapped,
            s.kernel_drops,
            s.interface_drops
        ),
    }
}

/// The live sensor's periodic log events: each capture handle's counters (and the sessions
/// written), and the capture-loss estimate, so loss is visible while the sensor runs.
fn log_counters(counters: &[Arc<InterfaceCounters>], loss: &WorkerCounts, tally: &Mutex<Tally>) {
    let sessions = tally.lock().map_or(0, |t| t.sessions);
    for c in counters {
        let read = |v: &AtomicU64| v.load(Ordering::Relaxed);
        tracing::info!(
            interface = %c.interface,
            worker = c.worker,
            packets = read(&c.packets),
            bytes = read(&c.bytes),
            snapped = read(&c.snapped),
            kernel_drops = read(&c.kernel_drops),
            interface_drops = read(&c.interface_drops),
            sessions,
            "capture counters"
        );
    }
    let (acks, gaps) = loss.totals();
    tracing::info!(
        acks,
        acked_gaps = gaps,
        ratio = loss_ratio(acks, gaps),
        "capture loss estimate"
    );
}
