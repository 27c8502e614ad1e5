//! `live --metrics ADDR:PORT` and `analyze --follow DIR --metrics ADDR:PORT`: the Prometheus text exposition format (0.0.4) at `/metrics`,
//! encoded by the `prometheus-client` crate from a collector that reads, at each scrape, the
//! counters the run keeps anyway (each capture handle's counters, the workers' capture-loss
//! counts, the summary's tally, ClickHouse's report, the memory board). Nothing is counted
//! twice, and the capture threads never touch a metrics object. The server is a blocking loop on
//! one thread: one scrape at a time is all Prometheus needs.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text::{CONTENT_TYPE, encode};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stripwatch::capture::InterfaceCounters;
use stripwatch::capture::follow::FollowCounters;
use stripwatch::memory::{Board, WindowRow};
use stripwatch::pipeline::{WorkerCounters, WorkerCounts, loss_ratio};
use stripwatch::report::summary::Tally;
use stripwatch::sink::clickhouse::ClickHouseReport;

/// The metrics address could not be bound (in use, not an address, not allowed): bad input,
/// exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("--metrics {addr}: {reason}")]
pub struct BindError {
    addr: String,
    reason: String,
}

/// Where the packets come from, and the counters that source keeps.
pub enum Capture {
    /// `live`: each capture handle's counters (one per interface, or per interface and worker
    /// with fanout).
    Interfaces(Vec<Arc<InterfaceCounters>>),
    /// `analyze --follow`: the followed directory and its counters.
    Follow {
        /// The directory, as given.
        directory: String,
        /// Files, packets and bytes read so far.
        counters: Arc<FollowCounters>,
    },
}

/// What the endpoint reports.
pub struct Sources {
    /// The packet source's counters.
    pub capture: Capture,
    /// Sessions by verdict, findings by kind, DNS transactions.
    pub tally: Arc<Mutex<Tally>>,
    /// ClickHouse's rows, with `--clickhouse`.
    pub clickhouse: Option<ClickHouseReport>,
    /// The windows' sizes the workers and the output stage publish (relaxed atomics).
    pub memory: Arc<Board>,
    /// Each worker's capture-loss counts.
    pub worker_counts: Arc<WorkerCounts>,
}

/// Binds `addr` (`127.0.0.1:9187`, `[::1]:9187`; a bare port means loopback) before anything is
/// captured, so an address in use is an error at start.
pub fn bind(addr: &str) -> Result<TcpListener, BindError> {
    let err = |reason: String| BindError {
        addr: addr.to_string(),
        reason,
    };
    let parsed: SocketAddr = match addr.parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => addr
            .parse()
            .map_err(|_| err("expected ADDR:PORT, e.g. 127.0.0.1:9187".into()))?,
    };
    let listener = TcpListener::bind(parsed).map_err(|e| err(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| err(e.to_string()))?;
    Ok(listener)
}

/// Serves scrapes on a thread of its own until `done`.
pub fn serve(
    listener: TcpListener,
    sources: Sources,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(sources)));
        while !done.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => answer(stream, &registry),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
}

/// Answers one request: the metrics for `GET /metrics`, 404 for anything else. A slow or
/// broken client costs at most the timeouts, never the capture.
fn answer(mut stream: TcpStream, registry: &Registry) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 4096];
    let mut len = 0;
    while len < head.len() {
        match stream.read(&mut head[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
        if head[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let request = String::from_utf8_lossy(&head[..len]);
    let (status, body) = if request.starts_with("GET /metrics ") {
        ("200 OK", render(registry))
    } else {
        ("404 Not Found", "only /metrics is served\n".to_string())
    };
    let _ = write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: {CONTENT_TYPE}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The exposition text as of now.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// The collector: every family made from the run's own counters at each scrape.
struct Scrape(Sources);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stripwatch metrics")
    }
}

/// Label pairs of one sample.
type Labels = Vec<(&'static str, String)>;

/// One family of samples: `name` (counters get `_total` from the encoder), its help, its type.
fn family<V>(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    samples: &[(Labels, V)],
) -> std::fmt::Result
where
    V: Copy
        + prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let metric = family.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*value).encode(metric)?,
            _ => ConstGauge::new(*value).encode(metric)?,
        }
    }
    Ok(())
}

/// A counter family.
fn counter(name: &'static str, help: &'static str) -> (&'static str, &'static str, MetricType) {
    (name, help, MetricType::Counter)
}

/// A gauge family.
fn gauge(name: &'static str, help: &'static str) -> (&'static str, &'static str, MetricType) {
    (name, help, MetricType::Gauge)
}

/// A sample without labels.
fn one<V>(value: V) -> [(Labels, V); 1] {
    [(Vec::new(), value)]
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let sources = &self.0;
        let e = &mut encoder;
        let read = |v: &AtomicU64| v.load(Ordering::Relaxed);
        family(
            e,
            gauge("stripwatch_build_info", "The running build."),
            &[(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                1u64,
            )],
        )?;
        match &sources.capture {
            Capture::Interfaces(interfaces) => interface_families(e, interfaces)?,
            Capture::Follow {
                directory,
                counters,
            } => follow_families(e, directory, counters)?,
        }
        let per_worker = |f: &dyn Fn(&WorkerCounters) -> u64| -> Vec<(Labels, u64)> {
            sources
                .worker_counts
                .workers()
                .iter()
                .enumerate()
                .map(|(w, c)| (vec![("worker", w.to_string())], f(c)))
                .collect()
        };
        family(
            e,
            counter(
                "stripwatch_capture_loss_acks",
                "Acknowledgments of new data in SMTP flows (the capture-loss estimate's base).",
            ),
            &per_worker(&|c| read(&c.acks)),
        )?;
        family(
            e,
            counter(
                "stripwatch_capture_loss_gaps",
                "Acknowledgments above a hole: data the peer received and the capture never saw.",
            ),
            &per_worker(&|c| read(&c.gaps)),
        )?;
        for (name, help, field) in [
            (
                "stripwatch_worker_packets",
                "TCP and UDP packets each worker handled (workers are chosen by client address).",
                (|c| c.packets.load(Ordering::Relaxed)) as fn(&WorkerCounters) -> u64,
            ),
            (
                "stripwatch_worker_sessions",
                "SMTP sessions each worker ended.",
                |c| c.sessions.load(Ordering::Relaxed),
            ),
            (
                "stripwatch_worker_dns_messages",
                "DNS messages each worker parsed.",
                |c| c.dns_messages.load(Ordering::Relaxed),
            ),
        ] {
            family(e, counter(name, help), &per_worker(&field))?;
        }
        let (acks, gaps) = sources.worker_counts.totals();
        family(
            e,
            gauge(
                "stripwatch_capture_loss_ratio",
                "Acknowledged holes per acknowledgment of new data over the run (Zeek's capture_loss).",
            ),
            &one(loss_ratio(acks, gaps)),
        )?;
        let (verdicts, kinds, dns) = match sources.tally.lock() {
            Ok(t) => (
                t.verdicts
                    .iter()
                    .map(|(v, n)| (vec![("verdict", v.to_string())], *n))
                    .collect::<Vec<_>>(),
                t.findings
                    .iter()
                    .map(|(k, n)| (vec![("kind", k.to_string())], *n))
                    .collect::<Vec<_>>(),
                t.dns_transactions,
            ),
            Err(_) => (Vec::new(), Vec::new(), 0),
        };
        family(
            e,
            counter("stripwatch_sessions", "SMTP sessions written, by verdict."),
            &verdicts,
        )?;
        family(
            e,
            counter(
                "stripwatch_findings",
                "Findings written (sessions and DNS), by kind.",
            ),
            &kinds,
        )?;
        family(
            e,
            counter("stripwatch_dns_transactions", "DNS transactions written."),
            &one(dns),
        )?;
        if let Some(ch) = &sources.clickhouse {
            let s = ch.snapshot();
            let rows: Vec<(Labels, u64)> = s
                .rows_sent
                .iter()
                .map(|(t, n)| (vec![("table", t.to_string())], *n))
                .collect();
            family(
                e,
                counter(
                    "stripwatch_clickhouse_rows_sent",
                    "Rows ClickHouse acknowledged, by table.",
                ),
                &rows,
            )?;
            for (name, help, value) in [
                (
                    "stripwatch_clickhouse_insert_errors",
                    "INSERTs that failed (each try).",
                    s.insert_errors,
                ),
                (
                    "stripwatch_clickhouse_rows_spooled",
                    "Rows written to the disk spool.",
                    s.rows_spooled,
                ),
                (
                    "stripwatch_clickhouse_rows_dropped",
                    "Rows dropped because the spool was full.",
                    s.rows_dropped,
                ),
            ] {
                family(e, counter(name, help), &one(value))?;
            }
            family(
                e,
                gauge(
                    "stripwatch_clickhouse_spool_bytes",
                    "Bytes waiting in the disk spool now.",
                ),
                &one(s.spool_bytes_left),
            )?;
            let (queued, capacity) = ch.queue_depth().unwrap_or((0, 0));
            family(
                e,
                gauge(
                    "stripwatch_clickhouse_queue_rows",
                    "Rows waiting for the ClickHouse writer thread now.",
                ),
                &one(queued as u64),
            )?;
            family(
                e,
                gauge(
                    "stripwatch_clickhouse_queue_capacity_rows",
                    "Rows the queue to the ClickHouse writer holds at most.",
                ),
                &one(capacity as u64),
            )?;
        }
        let memory = sources.memory.snapshot();
        let per_window = |f: &dyn Fn(&WindowRow) -> u64| -> Vec<(Labels, u64)> {
            memory
                .windows
                .iter()
                .map(|(name, w)| (vec![("window", name.to_string())], f(w)))
                .collect()
        };
        family(
            e,
            gauge(
                "stripwatch_state_entries",
                "Entries held by each state window (flows, held sessions, DNS memory, ...).",
            ),
            &per_window(&|w| w.entries),
        )?;
        family(
            e,
            gauge(
                "stripwatch_state_bytes",
                "Bytes held by each state window (estimated), against its share of --memory-limit.",
            ),
            &per_window(&|w| w.bytes),
        )?;
        family(
            e,
            gauge(
                "stripwatch_state_limit_bytes",
                "Each state window's share of --memory-limit.",
            ),
            &per_window(&|w| w.limit_bytes),
        )?;
        family(
            e,
            counter(
                "stripwatch_state_evictions",
                "Entries evicted, released early or refused by each state window to stay within bounds.",
            ),
            &per_window(&|w| w.evictions),
        )
    }
}

/// One counter of a capture handle.
type HandleCounter = fn(&InterfaceCounters) -> &AtomicU64;

/// The capture families of `live`: per capture handle (interface, and worker with fanout).
fn interface_families(
    e: &mut DescriptorEncoder,
    interfaces: &[Arc<InterfaceCounters>],
) -> std::fmt::Result {
    let per_handle = |counter: HandleCounter| -> Vec<(Labels, u64)> {
        interfaces
            .iter()
            .map(|c| {
                let worker = c.worker.map_or("reader".to_string(), |w| w.to_string());
                (
                    vec![("interface", c.interface.clone()), ("worker", worker)],
                    counter(c).load(Ordering::Relaxed),
                )
            })
            .collect()
    };
    let families: [(&str, &str, HandleCounter); 5] = [
        (
            "stripwatch_capture_packets",
            "Packets captured and handed to the pipeline, per interface and worker.",
            |c| &c.packets,
        ),
        (
            "stripwatch_capture_bytes",
            "Captured bytes handed to the pipeline, per interface and worker.",
            |c| &c.bytes,
        ),
        (
            "stripwatch_capture_snapped",
            "Packets cut by the snap length, per interface and worker (their tails are holes).",
            |c| &c.snapped,
        ),
        (
            "stripwatch_capture_kernel_drops",
            "Packets the kernel dropped because the capture buffer was full (ps_drop).",
            |c| &c.kernel_drops,
        ),
        (
            "stripwatch_capture_interface_drops",
            "Packets the interface or driver dropped (ps_ifdrop; promiscuous mode only).",
            |c| &c.interface_drops,
        ),
    ];
    for (name, help, field) in families {
        family(e, counter(name, help), &per_handle(field))?;
    }
    Ok(())
}

/// The capture families of `analyze --follow`: files read and skipped, and what they held.
fn follow_families(
    e: &mut DescriptorEncoder,
    directory: &str,
    c: &FollowCounters,
) -> std::fmt::Result {
    let read = |v: &AtomicU64| v.load(Ordering::Relaxed);
    let labelled = |value: u64| [(vec![("directory", directory.to_string())], value)];
    for (name, help, value) in [
        (
            "stripwatch_follow_files",
            "Capture files of the followed directory read to their end.",
            read(&c.files),
        ),
        (
            "stripwatch_follow_skipped_files",
            "Closed files of the followed directory that were not captures or could not be read.",
            read(&c.skipped),
        ),
        (
            "stripwatch_capture_packets",
            "Packets read from the followed directory's files and handed to the pipeline.",
            read(&c.packets),
        ),
        (
            "stripwatch_capture_bytes",
            "Captured bytes read from the followed directory's files.",
            read(&c.bytes),
        ),
        (
            "stripwatch_capture_snapped",
            "Packets the files hold cut by their snap length (their tails are holes).",
            read(&c.snapped),
        ),
    ] {
        family(e, counter(name, help), &labelled(value))?;
    }
    Ok(())
}
