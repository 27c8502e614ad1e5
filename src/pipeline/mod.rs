//! The pipeline: one reading thread decodes packets and shards them by initiator address to one
//! worker per core; workers track flows and produce session records; one output thread runs the
//! correlator and the sinks. Packets travel in reusable batches, so the steady state allocates
//! nothing per packet. A source that the kernel already splits by client (live capture with
//! `PACKET_FANOUT`, see [`PacketSource::split`]) has no reading thread: each worker reads and
//! decodes its own part.

pub mod order;
pub mod worker;

pub use worker::{FlowConfig, FlowStats, PortSet};

use crate::capture::{CaptureError, PacketSource, SourceEvent, SourceStats, Split};
use crate::decode::{DecodeStats, Decoder, DefragLimits, PacketMeta, Transport};
use crate::detect::certs::{CertJudge, CertStats};
use crate::detect::dns_judge::{DnsJudge, DnsJudgeStats};
use crate::detect::mta_sts::StsStats;
use crate::detect::{Correlator, CorrelatorConfig, CorrelatorStats};
use crate::dns::DnsStats;
use crate::memory::{Board, Budget, Gauges, MemoryStats, Window};
use crate::record::SessionRecord;
use crate::sink::{SessionSink, SinkError};
use crate::state::{Baseline, SaveStats, StateError};
use crate::util::CaptureClock;
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
    /// Where each worker publishes its counts (read by `--metrics` and the log).
    pub worker_counts: Arc<WorkerCounts>,
}

/// What each worker has done so far, published after every batch. One slot per worker, written
/// by that worker only.
///
/// The capture-loss estimate from acknowledgments above holes, as Zeek's `capture_loss.log`
/// makes it: of the acknowledgments that acknowledged new data, how many acknowledged data the
/// capture never saw. Loss upstream of the host (a SPAN port, a tap) shows here, where the
/// kernel's drop counters never see it. And each worker's share of the work: workers are
/// chosen by client address (a client's lookups and sessions must meet on one worker), so a few
/// heavy clients can load one worker more than the others.
#[derive(Debug, Default)]
pub struct WorkerCounts {
    workers: Vec<WorkerCounters>,
}

/// One worker's counts as of its last batch.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Acknowledgments of new data ([`FlowStats::acks`]).
    pub acks: std::sync::atomic::AtomicU64,
    /// Holes acknowledged ([`FlowStats::acked_gaps`]).
    pub gaps: std::sync::atomic::AtomicU64,
    /// TCP and UDP packets handled.
    pub packets: std::sync::atomic::AtomicU64,
    /// SMTP sessions ended.
    pub sessions: std::sync::atomic::AtomicU64,
    /// DNS messages parsed.
    pub dns_messages: std::sync::atomic::AtomicU64,
}

impl WorkerCounts {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> WorkerCounts {
        WorkerCounts {
            workers: (0..workers).map(|_| WorkerCounters::default()).collect(),
        }
    }

    /// Each worker's counts, in worker order.
    pub fn workers(&self) -> &[WorkerCounters] {
        &self.workers
    }

    /// Acknowledgments and holes over all workers.
    pub fn totals(&self) -> (u64, u64) {
        self.workers.iter().fold((0, 0), |(a, g), w| {
            (
                a + w.acks.load(Ordering::Relaxed),
                g + w.gaps.load(Ordering::Relaxed),
            )
        })
    }

    /// Publishes worker `index`'s counts (a worker beyond the slots is not published).
    fn publish(&self, index: usize, (flow, dns): &(FlowStats, DnsStats)) {
        if let Some(w) = self.workers.get(index) {
            w.acks.store(flow.acks, Ordering::Relaxed);
            w.gaps.store(flow.acked_gaps, Ordering::Relaxed);
            w.packets
                .store(flow.tcp_packets + flow.udp_packets, Ordering::Relaxed);
            w.sessions.store(flow.sessions, Ordering::Relaxed);
            w.dns_messages.store(dns.messages, Ordering::Relaxed);
        }
    }
}

/// Holes acknowledged per acknowledgment of new data (0 when there was none).
pub fn loss_ratio(acks: u64, gaps: u64) -> f64 {
    if acks == 0 {
        0.0
    } else {
        gaps as f64 / acks as f64
    }
}

/// One worker's share of a run's work (the summary's `workers`).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct WorkerRow {
    /// TCP and UDP packets handled.
    pub packets: u64,
    /// SMTP sessions ended.
    pub sessions: u64,
    /// DNS messages parsed.
    pub dns_messages: u64,
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
    /// Each worker's share of the work, in worker order.
    pub workers: Vec<WorkerRow>,
    /// Correlator counters.
    pub correlator: CorrelatorStats,
    /// Certificate counters.
    pub certs: CertStats,
    /// DNS counters of all workers.
    pub dns: DnsStats,
    /// Cross-client DNS judgement counters.
    pub dns_judge: DnsJudgeStats,
    /// MTA-STS judgement counters (the workers' linker counters are in `dns.sts`).
    pub sts: StsStats,
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
    // A source the kernel already splits by client is read by the workers themselves.
    let (inputs, mut parts) = match <[S; 1]>::try_from(inputs) {
        Ok([one]) if workers > 1 => match one.split(workers) {
            Split::Whole(one) => (vec![one], Vec::new()),
            Split::Parts(parts) => (Vec::new(), parts),
        },
        Ok([one]) => (vec![one], Vec::new()),
        Err(inputs) => (inputs, Vec::new()),
    };
    let split = !parts.is_empty();
    let part_name = inputs
        .first()
        .map(|i| i.name().to_string())
        .or_else(|| parts.first().map(|p| p.name().to_string()))
        .unwrap_or_default();
    let abort = Arc::new(AtomicBool::new(false));
    let (recycle_tx, recycle_rx) = unbounded::<Batch>();
    let (out_tx, out_rx) = bounded::<(usize, Outputs)>(256);
    let mut batch_txs = Vec::with_capacity(workers);
    let mut worker_handles = Vec::with_capacity(workers);
    parts.reverse();
    for index in 0..workers {
        let out = out_tx.clone();
        let flow_cfg = cfg.flow.clone();
        let gauges = Published {
            gauges: cfg.board.stage(),
            worker_counts: cfg.worker_counts.clone(),
        };
        gauges
            .gauges
            .set_limit(Window::Flows, cfg.flow.max_flow_bytes);
        gauges
            .gauges
            .set_limit(Window::DnsPending, cfg.budget.limit(Window::DnsPending));
        gauges
            .gauges
            .set_limit(Window::DnsClients, cfg.flow.dns.max_client_bytes);
        gauges
            .gauges
            .set_limit(Window::StsClients, cfg.flow.dns.max_sts_bytes);
        if let Some(part) = parts.pop() {
            let reading = PartReader {
                defrag: cfg.defrag,
                stop: stop.clone(),
                abort: abort.clone(),
            };
            worker_handles.push(spawn_named(format!("sw-worker-{index}"), move || {
                read_part(index, part, reading, out, flow_cfg, &gauges)
            }));
            continue;
        }
        let (tx, rx) = bounded::<Batch>(QUEUE_BATCHES);
        batch_txs.push(tx);
        let recycle = recycle_tx.clone();
        worker_handles.push(spawn_named(format!("sw-worker-{index}"), move || {
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
    gauges.set_limit(Window::StsDomains, correlator_cfg.sts_domains_bytes);
    let order_bytes = cfg.budget.limit(Window::Order);
    let output = spawn_named("sw-output".to_string(), move || {
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
    let mut batches: Vec<Batch> = (0..batch_txs.len()).map(|_| Batch::new()).collect();
    let hasher = ahash::RandomState::with_seeds(0x5717, 0x1ab5, 0xc0de, 0xfeed);
    let mut last_tick = i64::MIN;
    let mut clock = CaptureClock::default();
    let mut now = i64::MIN;
    let mut read_error = None;
    let mut disconnected = false;

    'inputs: for input in inputs {
        let name = input.name().to_string();
        let counter = input.progress_counter();
        let consumed = || counter.as_ref().map_or(0, |c| c.load(Ordering::Relaxed));
        let mut since_progress = 0u32;
        // The stop is looked at after a packet, never before: a packet the source has counted
        // is always judged, so the summary's packet counts are exactly what the records come
        // from (a stopped live run with one reader equals `analyze` on that many packets; with a
        // fanout each worker's socket stops at its own packet, so the packets judged are a
        // prefix of every flow, not of the wire).
        let stopped = || {
            if stop.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let result = input.for_each_event(|event| {
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
                    return stopped();
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
            stopped()
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
    let mut part_stats = SourceStats::default();
    for h in worker_handles {
        let done = h
            .join()
            .map_err(|_| PipelineError::Internal("a worker thread panicked".into()))?;
        stats.workers.push(WorkerRow {
            packets: done.flow.tcp_packets + done.flow.udp_packets,
            sessions: done.flow.sessions,
            dns_messages: done.dns.messages,
        });
        stats.flow.merge(&done.flow);
        stats.dns.merge(&done.dns);
        stats.decode.merge(&done.decode);
        match done.source {
            Some(Ok(s)) => part_stats.merge(&s),
            Some(Err(e)) => read_error = read_error.or(Some(e)),
            None => {}
        }
    }
    if split {
        stats.sources.push((part_name, part_stats));
        stats.interrupted = stop.load(Ordering::Relaxed);
    }
    let done = output
        .join()
        .map_err(|_| PipelineError::Internal("the output thread panicked".into()))??;
    stats.correlator = done.correlator;
    stats.certs = done.certs;
    stats.dns_judge = done.dns_judge;
    stats.sts = done.sts;
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

/// What a worker hands back when it ends: its counters, and, when it read a part of the
/// source itself, that part's decoding and reading.
struct WorkerDone {
    flow: FlowStats,
    dns: DnsStats,
    decode: DecodeStats,
    source: Option<Result<SourceStats, CaptureError>>,
}

/// A worker fed by the reader's batches.
fn worker(
    index: usize,
    rx: Receiver<Batch>,
    recycle: Sender<Batch>,
    out: Sender<(usize, Outputs)>,
    cfg: FlowConfig,
    gauges: &Published,
) -> WorkerDone {
    let mut worker = Worker::new(cfg);
    let mut last_sent_us = i64::MIN;
    for mut batch in rx {
        for (meta, &(start, len)) in batch.metas.iter().zip(&batch.spans) {
            let payload = &batch.data[start as usize..(start + len) as usize];
            worker.packet(meta, payload);
            let now = worker.now_us();
            worker.outputs().stamp(now);
        }
        if !hand_on(
            &mut worker,
            index,
            batch.watermark_us,
            &mut last_sent_us,
            &out,
            gauges,
        ) {
            break;
        }
        batch.clear();
        let _ = recycle.send(batch);
    }
    let (flow, dns) = finish_worker(worker, index, &out, gauges);
    WorkerDone {
        flow,
        dns,
        decode: DecodeStats::default(),
        source: None,
    }
}

/// After a batch (or as many packets read directly): lets the worker's capture time reach the
/// watermark, and hands on what it produced. Sent when there is something, and otherwise once
/// per second of capture time: the watermark lets the output stage release what other workers
/// produced until then. False when the output stage is gone.
fn hand_on(
    worker: &mut Worker,
    index: usize,
    watermark_us: i64,
    last_sent_us: &mut i64,
    out: &Sender<(usize, Outputs)>,
    gauges: &Published,
) -> bool {
    worker.advance(watermark_us);
    let now = worker.now_us();
    worker.outputs().stamp(now);
    let watermark_us = watermark_us.max(now);
    if !worker.outputs().is_empty() || watermark_us >= last_sent_us.saturating_add(TICK_US) {
        let mut done = std::mem::take(worker.outputs());
        done.watermark_us = watermark_us;
        *last_sent_us = watermark_us;
        if out.send((index, done)).is_err() {
            return false;
        }
    }
    gauges.publish(worker, index);
    true
}

/// What a worker publishes for other threads: its windows' sizes and its capture-loss counts.
struct Published {
    gauges: Arc<Gauges>,
    worker_counts: Arc<WorkerCounts>,
}

impl Published {
    fn publish(&self, worker: &Worker, index: usize) {
        worker.publish(&self.gauges);
        self.worker_counts.publish(index, &worker.stats());
    }
}

/// Ends every flow of the worker and hands on the rest with the final watermark.
fn finish_worker(
    mut worker: Worker,
    index: usize,
    out: &Sender<(usize, Outputs)>,
    gauges: &Published,
) -> (FlowStats, DnsStats) {
    worker.finish_all();
    gauges.publish(&worker, index);
    let now = worker.now_us();
    let mut done = std::mem::take(worker.outputs());
    done.stamp(now);
    done.watermark_us = i64::MAX;
    let _ = out.send((index, done));
    worker.stats()
}

/// What a worker that reads its own part needs besides the flow configuration.
struct PartReader {
    defrag: DefragLimits,
    /// The run's stop flag (signals).
    stop: Arc<AtomicBool>,
    /// Raised by a worker whose part failed, so that the others end too.
    abort: Arc<AtomicBool>,
}

/// A worker that reads its own part of a split source: decodes each packet and hands it to its
/// flow table directly, so no packet passes through another thread. Time moves as in the reader:
/// by the packets, and on a quiet link by the source's wall-clock tick; what was produced goes
/// on every `BATCH_PACKETS` packets and at least once per second of capture time.
fn read_part<P: PacketSource>(
    index: usize,
    part: P,
    reading: PartReader,
    out: Sender<(usize, Outputs)>,
    cfg: FlowConfig,
    gauges: &Published,
) -> WorkerDone {
    let PartReader {
        defrag,
        stop,
        abort,
    } = reading;
    let mut worker = Worker::new(cfg);
    let mut decoder = Decoder::new(defrag);
    let mut clock = CaptureClock::default();
    let mut now = i64::MIN;
    let mut last_tick = i64::MIN;
    let mut last_sent_us = i64::MIN;
    let mut unsent = 0usize;
    // As in `run`: the stop is looked at after a packet, so every packet counted is judged.
    let result = part.for_each_event(|event| {
        match event {
            SourceEvent::Packet(pkt) => {
                now = now.max(clock.observe(pkt.ts_us));
                if let Ok(d) = decoder.decode(pkt) {
                    worker.packet(&d.meta, d.payload);
                    let t = worker.now_us();
                    worker.outputs().stamp(t);
                }
                unsent += 1;
            }
            SourceEvent::Tick(wall_us) => now = now.max(wall_us.saturating_sub(LIVE_SLACK_US)),
        }
        let second = now >= last_tick.saturating_add(TICK_US);
        if second {
            last_tick = now;
            decoder.expire(now);
        }
        if second || unsent >= BATCH_PACKETS {
            unsent = 0;
            if !hand_on(&mut worker, index, now, &mut last_sent_us, &out, gauges) {
                return ControlFlow::Break(());
            }
        }
        if stop.load(Ordering::Relaxed) || abort.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if result.is_err() {
        abort.store(true, Ordering::Relaxed);
    }
    let (flow, dns) = finish_worker(worker, index, &out, gauges);
    WorkerDone {
        flow,
        dns,
        decode: decoder.stats,
        source: Some(result),
    }
}

/// How long the output stage of a long run waits for input before it flushes, rotates and saves
/// anyway (wall clock).
const IDLE_WAKE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long (capture time) a long run keeps a certificate it has written and not seen since,
/// before forgetting it to make room: longer than any session is held, so a session released
/// late still finds its certificate.
const CERTIFICATE_LINGER_US: i64 = 3_600_000_000;

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
    sts: StsStats,
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
        for w in [
            Window::Held,
            Window::DnsWait,
            Window::Offers,
            Window::StsDomains,
        ] {
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
            |mut rec: Box<SessionRecord>| {
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
        Step::Record(Produced::Session(rec)) => correlator.push(rec, &mut emitter!()),
        Step::Advance(now_us) => {
            correlator.advance(now_us, &mut emitter!());
            if failure.is_none() && sink.rotation_due() {
                // The set of files that closes lists the certificates seen while it was open.
                for c in correlator.certs.take_unwritten() {
                    if let Err(e) = sink.certificate(&c) {
                        failure = Some(e);
                        break;
                    }
                }
                correlator
                    .certs
                    .forget_written(now_us.saturating_sub(CERTIFICATE_LINGER_US));
            }
            // After every chunk: a flush with nothing buffered makes no system call, and under
            // load a chunk comes per batch of 512 packets, so this costs little.
            if failure.is_none()
                && let Err(e) = sink.flush()
            {
                failure = Some(e);
            }
        }
    };
    loop {
        // A long run also wakes without input: a followed directory sends nothing while no new
        // file comes, yet the files must rotate on time (and on SIGHUP), and the state be saved.
        let next = if live {
            match rx.recv_timeout(IDLE_WAKE) {
                Ok(next) => Some(next),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(next) => Some(next),
                Err(_) => break,
            }
        };
        if let Some((worker, chunk)) = next {
            order.push(worker, chunk);
            while let Some(p) = order.pop_ready() {
                handle(Step::Record(p), &mut correlator);
            }
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
    for c in correlator.certs.take_unwritten() {
        sink.certificate(&c)?;
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
        sts: correlator.sts.stats,
        baseline_saved,
        baseline_lookup_errors: correlator.baseline_lookup_errors(),
        sessions_out: written,
        enrichment: enricher.stats().clone(),
    })
}

/// Starts a thread with a name, so that `top -H`, `perf` and `bench/threads.py` tell the
/// stages apart. Like `std::thread::spawn`, it panics when the system cannot start a thread.
fn spawn_named<F, T>(name: String, f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .unwrap_or_else(|e| panic!("cannot start a thread: {e}"))
}

/// Chooses the worker for a packet: the hash of the initiator's address (the side that is not
/// on a server port), so a client's DNS lookups and its SMTP connections meet on one worker.
/// Live capture with `PACKET_FANOUT` makes the same choice in the kernel (`capture/fanout.rs`):
/// change both together.
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
