//! `live --metrics ADDR:PORT`: the Prometheus text exposition format (0.0.4) at `/metrics`, made
//! at each scrape from the counters the run keeps anyway (the capture's per-interface counters,
//! the summary's tally, ClickHouse's report). The format is a few lines of text and the server a
//! blocking loop on one thread, so no HTTP or metrics crate is needed.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stripwatch::capture::InterfaceCounters;
use stripwatch::memory::{Board, WindowRow};
use stripwatch::pipeline::{CaptureLoss, loss_ratio};
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

/// What the endpoint reports.
pub struct Sources {
    /// Each interface's capture counters.
    pub interfaces: Vec<Arc<InterfaceCounters>>,
    /// Sessions by verdict, findings by kind, DNS transactions.
    pub tally: Arc<Mutex<Tally>>,
    /// ClickHouse's rows, with `--clickhouse`.
    pub clickhouse: Option<ClickHouseReport>,
    /// The windows' sizes the workers and the output stage publish (relaxed atomics).
    pub memory: Arc<Board>,
    /// Each worker's capture-loss counts.
    pub loss: Arc<CaptureLoss>,
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
        while !done.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => answer(stream, &sources),
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
fn answer(mut stream: TcpStream, sources: &Sources) {
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
        ("200 OK", render(sources))
    } else {
        ("404 Not Found", "only /metrics is served\n".to_string())
    };
    let _ = write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A label value as the exposition format wants it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: HELP and TYPE, then a sample per (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// The exposition text as of now.
pub fn render(sources: &Sources) -> String {
    let mut out = String::new();
    let per_interface = |f: &dyn Fn(&InterfaceCounters) -> u64| -> Vec<(String, u64)> {
        sources
            .interfaces
            .iter()
            .map(|c| {
                let worker = c.worker.map_or("reader".to_string(), |w| w.to_string());
                (
                    format!("interface=\"{}\",worker=\"{worker}\"", label(&c.interface)),
                    f(c),
                )
            })
            .collect()
    };
    family(
        &mut out,
        "stripwatch_build_info",
        "gauge",
        "The running build.",
        &[(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)],
    );
    family(
        &mut out,
        "stripwatch_capture_packets_total",
        "counter",
        "Packets captured and handed to the pipeline.",
        &per_interface(&|c| c.packets.load(Ordering::Relaxed)),
    );
    family(
        &mut out,
        "stripwatch_capture_bytes_total",
        "counter",
        "Captured bytes handed to the pipeline.",
        &per_interface(&|c| c.bytes.load(Ordering::Relaxed)),
    );
    family(
        &mut out,
        "stripwatch_capture_kernel_drops_total",
        "counter",
        "Packets the kernel dropped because the capture buffer was full (ps_drop).",
        &per_interface(&|c| c.kernel_drops.load(Ordering::Relaxed)),
    );
    family(
        &mut out,
        "stripwatch_capture_interface_drops_total",
        "counter",
        "Packets the interface or driver dropped (ps_ifdrop; promiscuous mode only).",
        &per_interface(&|c| c.interface_drops.load(Ordering::Relaxed)),
    );
    let per_worker =
        |f: &dyn Fn(&stripwatch::pipeline::LossCounters) -> u64| -> Vec<(String, u64)> {
            sources
                .loss
                .workers()
                .iter()
                .enumerate()
                .map(|(w, c)| (format!("worker=\"{w}\""), f(c)))
                .collect()
        };
    family(
        &mut out,
        "stripwatch_capture_loss_acks_total",
        "counter",
        "Acknowledgments of new data in SMTP flows (the capture-loss estimate's denominator).",
        &per_worker(&|c| c.acks.load(Ordering::Relaxed)),
    );
    family(
        &mut out,
        "stripwatch_capture_loss_gaps_total",
        "counter",
        "Acknowledgments above a hole: data the peer received and the capture never saw.",
        &per_worker(&|c| c.gaps.load(Ordering::Relaxed)),
    );
    let (acks, gaps) = sources.loss.totals();
    let _ = writeln!(
        out,
        "# HELP stripwatch_capture_loss_ratio Acknowledged holes per acknowledgment of new data \
         (as Zeek's capture_loss), over the run.\n# TYPE stripwatch_capture_loss_ratio gauge\n\
         stripwatch_capture_loss_ratio {}",
        loss_ratio(acks, gaps)
    );
    let (verdicts, kinds, dns) = match sources.tally.lock() {
        Ok(t) => (
            t.verdicts
                .iter()
                .map(|(v, n)| (format!("verdict=\"{}\"", label(v)), *n))
                .collect::<Vec<_>>(),
            t.findings
                .iter()
                .map(|(k, n)| (format!("kind=\"{}\"", label(k)), *n))
                .collect::<Vec<_>>(),
            t.dns_transactions,
        ),
        Err(_) => (Vec::new(), Vec::new(), 0),
    };
    family(
        &mut out,
        "stripwatch_sessions_total",
        "counter",
        "SMTP sessions written, by verdict.",
        &verdicts,
    );
    family(
        &mut out,
        "stripwatch_findings_total",
        "counter",
        "Findings written (sessions and DNS), by kind.",
        &kinds,
    );
    family(
        &mut out,
        "stripwatch_dns_transactions_total",
        "counter",
        "DNS transactions written.",
        &[(String::new(), dns)],
    );
    if let Some(ch) = &sources.clickhouse {
        let s = ch.snapshot();
        let rows: Vec<(String, u64)> = s
            .rows_sent
            .iter()
            .map(|(t, n)| (format!("table=\"{}\"", label(t)), *n))
            .collect();
        family(
            &mut out,
            "stripwatch_clickhouse_rows_sent_total",
            "counter",
            "Rows ClickHouse acknowledged, by table.",
            &rows,
        );
        family(
            &mut out,
            "stripwatch_clickhouse_insert_errors_total",
            "counter",
            "INSERTs that failed (each try).",
            &[(String::new(), s.insert_errors)],
        );
        family(
            &mut out,
            "stripwatch_clickhouse_rows_spooled_total",
            "counter",
            "Rows written to the disk spool.",
            &[(String::new(), s.rows_spooled)],
        );
        family(
            &mut out,
            "stripwatch_clickhouse_rows_dropped_total",
            "counter",
            "Rows dropped because the spool was full.",
            &[(String::new(), s.rows_dropped)],
        );
    }
    let memory = sources.memory.snapshot();
    let per_window = |f: &dyn Fn(&WindowRow) -> u64| -> Vec<(String, u64)> {
        memory
            .windows
            .iter()
            .map(|(name, w)| (format!("window=\"{name}\""), f(w)))
            .collect()
    };
    family(
        &mut out,
        "stripwatch_state_entries",
        "gauge",
        "Entries held by each state window (flows, held sessions, DNS memory, ...).",
        &per_window(&|w| w.entries),
    );
    family(
        &mut out,
        "stripwatch_state_bytes",
        "gauge",
        "Bytes held by each state window (estimated), against its share of --memory-limit.",
        &per_window(&|w| w.bytes),
    );
    family(
        &mut out,
        "stripwatch_state_limit_bytes",
        "gauge",
        "Each state window's share of --memory-limit.",
        &per_window(&|w| w.limit_bytes),
    );
    family(
        &mut out,
        "stripwatch_state_evictions_total",
        "counter",
        "Entries evicted, released early or refused by each state window to stay within bounds.",
        &per_window(&|w| w.evictions),
    );
    out
}
