//! `stripwatch live`: the same pipeline, judges and sinks as `analyze` (built by the same
//! functions from the same options), fed by libpcap on live interfaces instead of files. It runs
//! until SIGTERM or SIGINT, then judges what is held, writes the summary and exits 0.

use super::LiveArgs;
use super::analyze::{SummaryExtra, check, judges, micros, pipeline_config, sinks, stop_on_signal};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use stripwatch::capture::{InterfaceCounters, LiveCapture, LiveOptions, PacketSource, SourceStats};
use stripwatch::enrich::Databases;
use stripwatch::pipeline;

/// How often a line with the capture counters goes to standard error.
const LOG_EVERY: Duration = Duration::from_secs(60);

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
        shared: args,
    } = args;
    check(&args)?;
    let metrics = metrics.as_deref().map(super::metrics::bind).transpose()?;
    let enrich = Arc::new(Databases::open(&args.geoip_country, &args.geoip_asn)?);
    let capture = LiveCapture::open(&LiveOptions {
        interfaces,
        bpf,
        snaplen,
        buffer_bytes: buffer_size,
        promiscuous: !no_promiscuous,
    })?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
    let mut cfg = pipeline_config(&args, enrich);
    // Offline a session waits for the whole run for evidence from later sessions; live it may
    // wait only so long, or it would never reach the files.
    cfg.correlator.hold_us = micros(hold);
    let judges = judges(&args)?;
    // SIGTERM/SIGINT stop the capture; what was read is judged and written, and ClickHouse's
    // unsent rows go to the spool for the next start.
    let stop = stop_on_signal()?;
    let (sink, outputs) = sinks(&args, &cfg.flow.sensor, &stop)?;
    let name = capture.name().to_string();
    let done = Arc::new(AtomicBool::new(false));
    let logger = log_periodically(capture.counters(), name.clone(), done.clone());
    let server = metrics.map(|listener| {
        let sources = super::metrics::Sources {
            interfaces: capture.counters(),
            tally: outputs.tally(),
            clickhouse: outputs.clickhouse(),
            memory: cfg.board.clone(),
        };
        super::metrics::serve(listener, sources, done.clone())
    });
    eprintln!(
        "stripwatch: capturing on {name} ({} workers); SIGTERM or Ctrl-C stops",
        cfg.workers
    );
    let started = Instant::now();
    let result = pipeline::run(
        vec![capture],
        &cfg,
        sink,
        judges,
        stop,
        &mut |_: &str, _: u64| {},
    );
    done.store(true, Ordering::Relaxed);
    let _ = logger.join();
    if let Some(server) = server {
        let _ = server.join();
    }
    let stats = result?;
    let source = stats.sources.first().map(|(_, s)| *s).unwrap_or_default();
    outputs.finish(
        &args,
        &stats,
        started.elapsed().as_secs_f64(),
        Some(&capture_summary(&name, &source)),
    )
}

/// What the capture itself counted, for summary.json (`capture`) and the text summary.
fn capture_summary(interfaces: &str, s: &SourceStats) -> SummaryExtra {
    SummaryExtra {
        capture: serde_json::json!({
            "interfaces": interfaces,
            "packets": s.packets,
            "bytes": s.bytes,
            "snapped": s.snapped,
            "kernel_drops": s.kernel_drops,
            "interface_drops": s.interface_drops,
        }),
        text: format!(
            "\ncapture on {interfaces}: {} packets, {} bytes, {} cut by the snap length, \
             {} kernel drops, {} interface drops\n",
            s.packets, s.bytes, s.snapped, s.kernel_drops, s.interface_drops
        ),
    }
}

/// A thread that writes the capture counters to standard error every [`LOG_EVERY`], so loss is
/// visible while the sensor runs, until `done`.
fn log_periodically(
    counters: Vec<Arc<InterfaceCounters>>,
    name: String,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = Instant::now();
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            if last.elapsed() >= LOG_EVERY {
                last = Instant::now();
                let sum = |f: fn(&InterfaceCounters) -> &AtomicU64| -> u64 {
                    counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
                };
                eprintln!(
                    "stripwatch: capture on {name}: {} packets, {} bytes, {} kernel drops, {} interface drops",
                    sum(|c| &c.packets),
                    sum(|c| &c.bytes),
                    sum(|c| &c.kernel_drops),
                    sum(|c| &c.interface_drops),
                );
            }
        }
    })
}
