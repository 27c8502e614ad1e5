//! The pipeline: one reading thread decodes packets and shards them by initiator address to one
//! worker per core; workers track flows and produce session records; one output thread runs the
//! correlator and the sinks. Packets travel in reusable batches, so the steady state allocates
//! nothing per packet.

pub mod order;
pub mod worker;

pub use worker::{FlowConfig, FlowStats, PortSet};

use crate::capture::{CaptureError, PacketSource, SourceEvent, SourceStats};
use crate::decode::{DecodeStats, Decoder, DefragLimits, PacketMeta, Transport};
use crate::detect::certs::{CertJudge, CertStats};
use crate::detect::dns_judge::{DnsJudge, DnsJudgeStats};
use crate::detect::{Correlator, CorrelatorConfig, CorrelatorStats};
use crate::dns::DnsStats;
use crate::memory::{Board, Budget, Gauges, MemoryStats, Window};
use crate::record::{CertificateRecord, SessionRecord};
use crate::sink::{SessionSink, SinkError};
use crate::state::{Baseline, SaveStats, StateError};
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use order::{CaptureOrder, Produced};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use thiserror::Error;
use worker::{Outputs, Worker};

/// Everything the pipeline needs to know.
#[derive(Clone)]
pub struct PipelineConfig {
    /// Worker threads (flow tables).
    pub workers: usize,
    /// Flow handling, shared by all workers (`max_flows` is per worker).
    pub flow: FlowConfig,
    /// Cross-session rules.
    pub correlator: CorrelatorConfig,
    /// IP fragment limits.
    pub defrag: DefragLimits,
    /// Ports whose side is the server, for sharding by client.
    pub server_ports: PortSet,
    /// Country and ASN databases for the output stage (empty: enrichment off).
    pub enrich: Arc<crate::enrich::Databases>,
    /// Live: seconds of wall clock between saves of what the run learned into the baseline
    /// (with `--state`), so a crash loses at most that much; shared, so that a reloaded
    /// configuration can change it. `None`: at the end only (files).
    pub state_interval: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The memory budget (the windows' byte bounds above are already taken from it).
    pub budget: Budget,
    /// Where every stage publishes its windows' sizes (read by `--metrics` and the summary).
    pub board: Arc<Board>,
}

/// Counters of a whole run.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    /// Per input: its name and what reading it produced.
    pub sources: Vec<(String, SourceStats)>,
    /// Decoding counters.
    pub decode: DecodeStats,
    /// Flow counters of all workers.
    pub flow: FlowStats,
    /// Correlator counters.
    pub correlator: CorrelatorStats,
    /// Certificate counters.
    pub certs: CertStats,
    /// DNS counters of all workers.
    pub dns: DnsStats,
    /// Cross-client DNS judgement counters.
    pub dns_judge: DnsJudgeStats,
    /// What saving the persistent baseline did (None without `--state`... or before saving).
    pub baseline_saved: Option<SaveStats>,
    /// Baseline lookups that failed and counted as "nothing known".
    pub baseline_lookup_errors: u64,
    /// Sessions handed to the sink.
    pub sessions_out: u64,
    /// What enrichment looked up and found.
    pub enrichment: crate::enrich::EnrichStats,
    /// The run was interrupted (signal) before the input ended.
    pub interrupted: bool,
    /// The windows' sizes at the end, their peaks, limits and evictions.
    pub memory: MemoryStats,
}

/// Errors that stop a run.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// An input could not be read.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// An output could not be written.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The persistent baseline could not be saved.
    #[error(transparent)]
    State(#[from] StateError),
    /// A worker thread died (a bug: reported, not hidden).
    #[error("internal error: {0}")]
    Internal(String),
}

const BATCH_PACKETS: usize = 512;
const BATCH_BYTES: usize = 512 * 1024;
/// Batches queued per worker; the reader blocks beyond this (back-pressure, not loss).
const QUEUE_BATCHES: usize = 16;
/// Capture time after which partial batches are sent anyway, so idle workers see time pass.
const TICK_US: i64 = 1_000_000;
/// Live capture: how far behind the wall clock a tick puts capture time on a quiet link, so that
/// a packet still waiting in the kernel ring (at most the read timeout) is not older than what
/// the workers were told they had seen.
const LIVE_SLACK_US: i64 = 500_000;
/// Live capture: the capture-order merge's bucket. Offline it is 10 s (longer than the delay with
/// which DNS records are written, so lookups meet in answer order); live, records must reach the
/// files within seconds, and a session that arrives before its lookup's record waits for it in
/// the correlator instead.
const LIVE_BUCKET_US: i64 = 1_000_000;

struct Batch {
    metas: Vec<PacketMeta>,
    spans: Vec<(u32, u32)>,
    data: Vec<u8>,
    /// Capture time the reader had reached when it sent this batch.
    watermark_us: i64,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            metas: Vec::with_capacity(BATCH_PACKETS),
            spans: Vec::with_capacity(BATCH_PACKETS),
            data: Vec::with_capacity(BATCH_BYTES + 65_536),
            watermark_us: i64::MIN,
        }
    }

    fn clear(&mut self) {
        self.metas.clear();
        self.spans.clear();
        self.data.clear();
    }

    fn full(&self) -> bool {
        self.metas.len() >= BATCH_PACKETS || self.data.len() >= BATCH_BYTES
    }
}

/// The cross-session judges the output stage runs, and the history they consult.
pub struct Judges {
    /// Certificates.
    pub certs: CertJudge,
    /// DNS answers across clients.
    pub dns: DnsJudge,
    /// Earlier runs (`NoBaseline` without `--state`).
    pub baseline: Box<dyn Baseline>,
    /// Save what this run learned into `baseline` at the end.
    pub save_baseline: bool,
}

/// Progress reporting hook: called with the raw bytes read so far of the current input.
pub type ProgressFn<'a> = &'a mut dyn FnMut(&str, u64);

/// Runs the whole pipeline over `inputs` (read in order) and hands judged sessions to `sink`.
/// `stop` ends the run early (signal handling); what was read so far is still judged and written.
///
/// A live source (see [`PacketSource::live`]) also moves capture time with the wall clock on a
/// quiet link, and the output stage then releases records within seconds and flushes the sinks,
/// instead of holding them for the whole run.
pub fn run<S: PacketSource>(
    inputs: Vec<S>,
    cfg: &PipelineConfig,
    sink: Box<dyn SessionSink>,
    judges: Judges,
    stop: Arc<AtomicBool>,
    progress: ProgressFn<'_>,
) -> Result<RunStats, PipelineError> {
    let workers = cfg.workers.max(1);
    let live = inputs.iter().any(PacketSource::live);
    let (recycle_tx, recycle_rx) = unbounded::<Batch>();
    let (out_tx, out_rx) = bounded::<(usize, Outputs)>(256);
    let mut batch_txs = Vec::with_capacity(workers);
    let mut worker_handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let (tx, rx) = bounded::<Batch>(QUEUE_BATCHES);
        batch_txs.push(tx);
        let recycle = recycle_tx.clone();
        let out = out_tx.clone();
        let flow_cfg = cfg.flow.clone();
        let gauges = cfg.board.stage();
        gauges.set_limit(Window::Flows, cfg.flow.max_flow_bytes);
        gauges.set_limit(Window::DnsPending, cfg.budget.limit(Window::DnsPending));
        gauges.set_limit(Window::DnsClients, cfg.flow.dns.max_client_bytes);
        worker_handles.push(std::thread::spawn(move || {
            worker(index, rx, recycle, out, flow_cfg, &gauges)
        }));
    }
    drop(out_tx);
    let correlator_cfg = cfg.correlator;
    let enricher = crate::enrich::Enricher::new(cfg.enrich.clone());
    let state_interval = cfg.state_interval.clone().filter(|_| live);
    let gauges = cfg.board.stage();
    for w in [Window::Order, Window::Certificates, Window::MxAnswers] {
        gauges.set_limit(w, cfg.budget.limit(w));
    }
    gauges.set_limit(Window::Held, correlator_cfg.held_bytes);
    gauges.set_limit(Window::DnsWait, correlator_cfg.wait_bytes);
    gauges.set_limit(Window::Offers, correlator_cfg.offers_bytes);
    let order_bytes = cfg.budget.limit(Window::Order);
    let output = std::thread::spawn(move || {
        output_thread(
            out_rx,
            workers,
            correlator_cfg,
            judges,
            enricher,
            sink,
            OutputMode {
                live,
                state_interval,
                order_bytes,
                gauges: &gauges,
            },
        )
    });

    let mut stats = RunStats::default();
    let mut decoder = Decoder::new(cfg.defrag);
    let mut batches: Vec<Batch> = (0..workers).map(|_| Batch::new()).collect();
    let hasher = ahash::RandomState::with_seeds(0x5717, 0x1ab5, 0xc0de, 0xfeed);
    let mut last_tick = i64::MIN;
    let mut clock = crate::util::CaptureClock::default();
    let mut now = i64::MIN;
    let mut read_error = None;
    let mut disconnected = false;

    'inputs: for input in inputs {
        let name = input.name().to_string();
        let counter = input.progress_counter();
        let consumed = || counter.as_ref().map_or(0, |c| c.load(Ordering::Relaxed));
        let mut since_progress = 0u32;
        let result = input.for_each_event(|event| {
            if stop.load(Ordering::Relaxed) {
                return ControlFlow::Break(());
            }
            // Once a second of capture time: partial batches go out, so idle workers see time
            // pass, and old fragments expire.
            macro_rules! tick {
                () => {
                    if now >= last_tick.saturating_add(TICK_US) {
                        last_tick = now;
                        decoder.expire(now);
                        if !send_partials(&mut batches, &batch_txs, &recycle_rx, now) {
                            disconnected = true;
                            return ControlFlow::Break(());
                        }
                    }
                };
            }
            let pkt = match event {
                SourceEvent::Packet(pkt) => pkt,
                SourceEvent::Tick(wall_us) => {
                    // A live source's packets carry the wall clock's time, so on a quiet link
                    // capture time moves with it: idle flows close, finished sessions go out.
                    now = now.max(wall_us.saturating_sub(LIVE_SLACK_US));
                    tick!();
                    return ControlFlow::Continue(());
                }
            };
            since_progress += 1;
            if since_progress >= 8192 {
                since_progress = 0;
                progress(&name, consumed());
            }
            now = now.max(clock.observe(pkt.ts_us));
            if let Ok(d) = decoder.decode(pkt) {
                let shard = shard_of(&d.meta, &cfg.server_ports, &hasher, workers);
                let b = &mut batches[shard];
                let start = b.data.len() as u32;
                b.data.extend_from_slice(d.payload);
                b.spans.push((start, d.payload.len() as u32));
                b.metas.push(d.meta);
                if b.full() {
                    let fresh = recycle_rx.try_recv().unwrap_or_else(|_| Batch::new());
                    let mut full = std::mem::replace(b, fresh);
                    full.watermark_us = now;
                    if batch_txs[shard].send(full).is_err() {
                        disconnected = true;
                        return ControlFlow::Break(());
                    }
                }
            }
            tick!();
            ControlFlow::Continue(())
        });
        match result {
            Ok(s) => {
                progress(&name, consumed());
                stats.sources.push((name, s));
            }
            Err(e) => {
                read_error = Some(e);
                break 'inputs;
            }
        }
        if stop.load(Ordering::Relaxed) {
            stats.interrupted = true;
            break;
        }
        if disconnected {
            break;
        }
    }
    for (shard, mut b) in batches.into_iter().enumerate() {
        b.watermark_us = now;
        let _ = batch_txs[shard].send(b);
    }
    drop(batch_txs);
    stats.decode = decoder.stats;
    for h in worker_handles {
        let (flow, dns) = h
            .join()
            .map_err(|_| PipelineError::Internal("a worker thread panicked".into()))?;
        stats.flow.merge(&flow);
        stats.dns.merge(&dns);
    }
    let done = output
        .join()
        .map_err(|_| PipelineError::Internal("the output thread panicked".into()))??;
    stats.correlator = done.correlator;
    stats.certs = done.certs;
    stats.dns_judge = done.dns_judge;
    stats.baseline_saved = done.baseline_saved;
    stats.baseline_lookup_errors = done.baseline_lookup_errors;
    stats.sessions_out = done.sessions_out;
    stats.enrichment = done.enrichment;
    stats.memory = cfg.board.snapshot();
    stats.memory.limit_bytes = cfg.budget.total();
    if let Some(e) = read_error {
        return Err(e.into());
    }
    Ok(stats)
}

/// Sends every worker its partial batch stamped with the watermark `now_us`, so idle workers see
/// capture time pass. False when a worker is gone.
fn send_partials(
    batches: &mut [Batch],
    batch_txs: &[Sender<Batch>],
    recycle_rx: &Receiver<Batch>,
    now_us: i64,
) -> bool {
    for (shard, b) in batches.iter_mut().enumerate() {
        let fresh = recycle_rx.try_recv().unwrap_or_else(|_| Batch::new());
        let mut partial = std::mem::replace(b, fresh);
        partial.watermark_us = now_us;
        if batch_txs[shard].send(partial).is_err() {
            return false;
        }
    }
    true
}

fn worker(
    index: usize,
    rx: Receiver<Batch>,
    recycle: Sender<Batch>,
    out: Sender<(usize, Outputs)>,
    cfg: FlowConfig,
    gauges: &Gauges,
) -> (FlowStats, DnsStats) {
    let mut worker = Worker::new(cfg);
    let mut last_sent_us = i64::MIN;
    for mut batch in rx {
        for (meta, &(start, len)) in batch.metas.iter().zip(&batch.spans) {
            let payload = &batch.data[start as usize..(start + len) as usize];
            worker.packet(meta, payload);
            let now = worker.now_us();
            worker.outputs().stamp(now);
        }
        worker.advance(batch.watermark_us);
        let now = worker.now_us();
        worker.outputs().stamp(now);
        // Sent when there is something, and otherwise once per second of capture time: the
        // watermark lets the output stage release what other workers produced until then.
        let watermark_us = batch.watermark_us.max(now);
        if !worker.outputs().is_empty() || watermark_us >= last_sent_us.saturating_add(TICK_US) {
            let mut done = std::mem::take(worker.outputs());
            done.watermark_us = watermark_us;
            last_sent_us = watermark_us;
            if out.send((index, done)).is_err() {
                break;
            }
        }
        worker.publish(gauges);
        batch.clear();
        let _ = recycle.send(batch);
    }
    worker.finish_all();
    worker.publish(gauges);
    let now = worker.now_us();
    let mut done = std::mem::take(worker.outputs());
    done.stamp(now);
    done.watermark_us = i64::MAX;
    let _ = out.send((index, done));
    worker.stats()
}

/// What the output stage does next: take a record, or (live) let capture time pass.
enum Step {
    Record(Produced),
    Advance(i64),
}

/// What the output stage hands back.
struct OutputDone {
    correlator: CorrelatorStats,
    certs: CertStats,
    dns_judge: DnsJudgeStats,
    baseline_saved: Option<SaveStats>,
    baseline_lookup_errors: u64,
    sessions_out: u64,
    enrichment: crate::enrich::EnrichStats,
}

/// How the output stage runs: for files, or live (records released within seconds, and the
/// baseline saved every `state_interval` seconds of wall clock).
struct OutputMode<'a> {
    live: bool,
    state_interval: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The capture-order merge buffer's share of the memory budget.
    order_bytes: usize,
    /// Where the output stage publishes its windows' sizes.
    gauges: &'a Gauges,
}

fn output_thread(
    rx: Receiver<(usize, Outputs)>,
    workers: usize,
    cfg: CorrelatorConfig,
    judges: Judges,
    mut enricher: crate::enrich::Enricher,
    mut sink: Box<dyn SessionSink>,
    mode: OutputMode,
) -> Result<OutputDone, PipelineError> {
    let OutputMode {
        live,
        state_interval,
        order_bytes,
        gauges,
    } = mode;
    let mut last_save = std::time::Instant::now();
    let Judges {
        certs,
        dns,
        baseline,
        save_baseline,
    } = judges;
    let mut correlator = Correlator::new(cfg, certs, dns, baseline);
    let mut order = if live {
        CaptureOrder::with_bucket(workers, LIVE_BUCKET_US)
    } else {
        CaptureOrder::new(workers)
    }
    .with_max_bytes(order_bytes);
    let publish = |correlator: &Correlator, order: &CaptureOrder| {
        for w in [Window::Held, Window::DnsWait, Window::Offers] {
            if let Some(u) = correlator.usage(w) {
                gauges.publish(w, u);
            }
        }
        gauges.publish(Window::MxAnswers, correlator.dns.usage());
        gauges.publish(Window::Certificates, correlator.certs.usage());
        gauges.publish(Window::Order, order.usage());
    };

    let mut written = 0u64;
    let mut failure: Option<SinkError> = None;
    // One closure shape for handing judged sessions to the sink, made anew where needed so
    // the sink can also be used for DNS records in between.
    macro_rules! emitter {
        () => {
            |mut rec: SessionRecord| {
                if failure.is_none() {
                    enricher.session(&mut rec);
                    match sink.session(&rec) {
                        Ok(()) => written += 1,
                        Err(e) => failure = Some(e),
                    }
                }
            }
        };
    }
    let mut dns_failure: Option<SinkError> = None;
    let mut handle = |step: Step, correlator: &mut Correlator| match step {
        Step::Record(Produced::Dns(mut rec)) => {
            correlator.push_dns(&mut rec, &mut emitter!());
            if dns_failure.is_none() && failure.is_none() {
                enricher.dns(&mut rec);
                if let Err(e) = sink.dns(&rec) {
                    dns_failure = Some(e);
                }
            }
        }
        Step::Record(Produced::Session(rec)) => correlator.push(*rec, &mut emitter!()),
        Step::Advance(now_us) => {
            correlator.advance(now_us, &mut emitter!());
            // After every chunk: a flush with nothing buffered makes no system call, and under
            // load a chunk comes per batch of 512 packets, so this costs little.
            if failure.is_none()
                && let Err(e) = sink.flush()
            {
                failure = Some(e);
            }
        }
    };
    for (worker, chunk) in rx {
        order.push(worker, chunk);
        while let Some(p) = order.pop_ready() {
            handle(Step::Record(p), &mut correlator);
        }
        if live {
            // Nothing may come for a while on a quiet link: what waits on time alone (held
            // sessions, lookups that never came) is released by the workers' watermarks.
            handle(Step::Advance(order.low_watermark()), &mut correlator);
        }
        if let Some(every) = state_interval.as_ref().filter(|_| save_baseline)
            && last_save.elapsed().as_secs() >= every.load(Ordering::Relaxed)
        {
            last_save = std::time::Instant::now();
            // A failure here is logged and the run goes on; the save at the end reports it.
            match correlator.save_baseline() {
                Ok(s) => tracing::info!(written = s.written, expired = s.expired, "state saved"),
                Err(e) => tracing::warn!(error = %e, "state not saved"),
            }
        }
        publish(&correlator, &order);
    }
    // Every worker has finished (or died, which the caller reports): release the rest.
    for w in 0..workers {
        order.push(
            w,
            Outputs {
                watermark_us: i64::MAX,
                ..Outputs::default()
            },
        );
    }
    while let Some(p) = order.pop_ready() {
        handle(Step::Record(p), &mut correlator);
    }
    publish(&correlator, &order);
    correlator.flush(&mut emitter!());
    if let Some(e) = failure.or(dns_failure) {
        return Err(e.into());
    }
    let mut certs: Vec<&CertificateRecord> = correlator.certs.certificates().collect();
    certs.sort_by(|a, b| {
        a.first_seen
            .cmp(&b.first_seen)
            .then(a.info.fingerprint.cmp(&b.info.fingerprint))
    });
    for c in certs {
        sink.certificate(c)?;
    }
    sink.finish()?;
    let baseline_saved = if save_baseline {
        Some(correlator.save_baseline()?)
    } else {
        None
    };
    Ok(OutputDone {
        correlator: correlator.stats,
        certs: correlator.certs.stats,
        dns_judge: correlator.dns.stats,
        baseline_saved,
        baseline_lookup_errors: correlator.baseline_lookup_errors(),
        sessions_out: written,
        enrichment: enricher.stats().clone(),
    })
}

/// Chooses the worker for a packet: the hash of the initiator's address (the side that is not
/// on a server port), so a client's DNS lookups and its SMTP connections meet on one worker.
fn shard_of(
    meta: &PacketMeta,
    server_ports: &PortSet,
    hasher: &ahash::RandomState,
    n: usize,
) -> usize {
    if n == 1 {
        return 0;
    }
    let (s, d) = (meta.sport, meta.dport);
    let client: IpAddr = match (server_ports.contains(s), server_ports.contains(d)) {
        (false, true) => meta.src,
        (true, false) => meta.dst,
        _ if matches!(meta.transport, Transport::Udp) && d == 53 => meta.src,
        _ if s > d => meta.src,
        _ if d > s => meta.dst,
        _ => meta.src.min(meta.dst),
    };
    (hasher.hash_one(client) % n as u64) as usize
}
