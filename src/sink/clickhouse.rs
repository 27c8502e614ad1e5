//! The ClickHouse sink. The output stage turns each record into a row and hands it over a
//! bounded queue to a dedicated thread (its own tokio runtime), so a slow server slows the
//! pipeline down (back-pressure, counted) instead of filling memory. That thread batches rows
//! per table (up to `batch_rows`, or whatever arrived within `flush_interval`) and inserts each
//! batch with the `clickhouse` crate. A batch the server does not take after a few tries goes
//! to the disk spool, and every later batch follows it there until the spool is replayed, in
//! order, once the server answers again (in this run or the next). Replays are idempotent in
//! ClickHouse (see queries/schema.sql), so a batch that was stored but never acknowledged can
//! be sent again without counting twice.

use super::rows::{CertificateRow, DnsRow, FindingRow, Rows, SessionRow, TABLES};
use super::spool::{Spool, SpoolError};
use super::target::{Failure, Target, classify, error_chain};
use crate::record::CertificateRecord;
use crate::record::DnsRecord;
use crate::record::SessionRecord;
use crate::sink::{SessionSink, SinkError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::mpsc;

/// Tries per batch before it goes to the spool, and the pauses between them.
const RETRY_PAUSES: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];
/// First and longest pause between attempts to replay the spool while the server is away.
const PROBE_FIRST: Duration = Duration::from_millis(250);
const PROBE_MAX: Duration = Duration::from_secs(2);
/// Limits on one INSERT: sending a chunk, and the server's answer (materialized views
/// included). A server that hangs is treated as away once these pass.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const END_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the check before the run waits for an answer (a server that hangs counts as away).
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows queued between the output stage and the writer thread.
const QUEUE_ROWS: usize = 16_384;
/// Batches queued between the batcher and the inserter (bounded memory).
const QUEUE_BATCHES: usize = 1;

/// How to reach ClickHouse and how to behave while it is away.
#[derive(Clone, Debug)]
pub struct ClickHouseOptions {
    /// The server, database and credentials.
    pub target: Target,
    /// Where batches wait while the server is away.
    pub spool_dir: PathBuf,
    /// Largest spool size; batches beyond it are dropped and counted.
    pub spool_max_bytes: u64,
    /// Rows per INSERT at most.
    pub batch_rows: usize,
    /// Rows wait at most this long before they are sent.
    pub flush_interval: Duration,
    /// At the end of the run, how long to keep trying to replay the spool before leaving it
    /// for the next start.
    pub drain_timeout: Duration,
    /// The sensor name (certificate rows carry it; other rows carry their record's).
    pub sensor: String,
    /// Set by a signal: the end-of-run replay stops at once and leaves the spool for the next
    /// start (nothing is lost, the user is not kept waiting).
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Starting the sink failed: the run does not begin.
#[derive(Debug, Error)]
pub enum ClickHouseError {
    /// The spool cannot be used.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The writer thread could not start.
    #[error("cannot start the ClickHouse writer: {0}")]
    Start(std::io::Error),
    /// The server answered, but not as a stripwatch database should.
    #[error("ClickHouse at {url}, database {database}: {reason}")]
    Server {
        /// The server.
        url: String,
        /// The database.
        database: String,
        /// What is wrong.
        reason: String,
    },
}

/// What happened to the rows of a run, for the summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClickHouseStats {
    /// The server (no credentials).
    pub url: String,
    /// The database.
    pub database: String,
    /// Rows the server acknowledged, per table (replays included).
    pub rows_sent: BTreeMap<&'static str, u64>,
    /// INSERTs the server acknowledged (replays included).
    pub batches_sent: u64,
    /// Wall-clock seconds those INSERTs took (rows_sent / this = the insert rate while
    /// inserting, whatever the rest of the pipeline allows).
    pub insert_seconds: f64,
    /// INSERTs that failed (each try counts).
    pub insert_errors: u64,
    /// Tries repeated at once after a failed INSERT.
    pub retries: u64,
    /// Rows written to the spool in this run.
    pub rows_spooled: u64,
    /// Batches written to the spool in this run.
    pub batches_spooled: u64,
    /// Rows delivered from the spool (this run's or earlier runs').
    pub rows_replayed: u64,
    /// Batches delivered from the spool.
    pub batches_replayed: u64,
    /// Rows lost to ClickHouse: the spool was full or unwritable, or a spool file was
    /// unreadable. The ndjson files still have them.
    pub rows_dropped: u64,
    /// Times the output stage found the queue to the writer full and waited.
    pub queue_full_waits: u64,
    /// Rows found in the spool at start (left by an earlier run).
    pub spool_rows_at_start: u64,
    /// Rows still in the spool at the end, to be replayed at the next start.
    pub spool_rows_left: u64,
    /// Bytes still in the spool at the end.
    pub spool_bytes_left: u64,
    /// The spool directory.
    pub spool_dir: String,
    /// `delivered` (every row acknowledged, spool empty), `spooled` (rows wait in the spool
    /// for the next start) or `rows-dropped` (see `rows_dropped`).
    pub state: &'static str,
    /// The last error the server or the spool gave, if any.
    pub last_error: Option<String>,
}

impl ClickHouseStats {
    /// The human form, for the run summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nClickHouse {} (database {}): {}",
            self.url, self.database, self.state
        );
        for t in TABLES {
            let n = self.rows_sent.get(t).copied().unwrap_or(0);
            let _ = writeln!(s, "  {:<32} {n:>12}", format!("rows sent: {t}"));
        }
        let rate = if self.insert_seconds > 0.0 {
            self.rows_sent.values().sum::<u64>() as f64 / self.insert_seconds
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "  {:<32} {:>12}",
            "insert seconds (rows/s)",
            format!("{:.2} ({rate:.0})", self.insert_seconds)
        );
        let rows: [(&str, u64); 11] = [
            ("batches sent", self.batches_sent),
            ("insert errors", self.insert_errors),
            ("retries", self.retries),
            ("rows spooled", self.rows_spooled),
            ("batches spooled", self.batches_spooled),
            ("rows replayed", self.rows_replayed),
            ("rows dropped", self.rows_dropped),
            ("queue-full waits", self.queue_full_waits),
            ("spool rows at start", self.spool_rows_at_start),
            ("spool rows left", self.spool_rows_left),
            ("spool bytes left", self.spool_bytes_left),
        ];
        for (name, n) in rows {
            let _ = writeln!(s, "  {name:<32} {n:>12}");
        }
        if self.spool_rows_left > 0 {
            let _ = writeln!(
                s,
                "  warning: {} rows wait in {} and will be sent at the next start",
                self.spool_rows_left, self.spool_dir
            );
        }
        if self.rows_dropped > 0 {
            let _ = writeln!(
                s,
                "  warning: {} rows did not reach ClickHouse (the ndjson files have them)",
                self.rows_dropped
            );
        }
        if let Some(e) = &self.last_error {
            let _ = writeln!(s, "  last error: {e}");
        }
        s
    }
}

/// The CLI's view of the sink's counters, readable while the run goes on (`--metrics`) and
/// after it.
#[derive(Clone)]
pub struct ClickHouseReport {
    stats: Arc<Mutex<ClickHouseStats>>,
    /// The row queue, held weakly so that the report never keeps the writer waiting for rows
    /// after the sink has finished.
    queue: mpsc::WeakSender<Msg>,
}

impl ClickHouseReport {
    /// The counters as they are now.
    pub fn snapshot(&self) -> ClickHouseStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Rows queued for the writer thread now, and how many the queue holds at most; `None`
    /// once the sink has finished. A queue that stays near full means ClickHouse (or the
    /// spool) is slower than the traffic, and the output stage will soon wait.
    pub fn queue_depth(&self) -> Option<(usize, usize)> {
        let tx = self.queue.upgrade()?;
        Some((tx.max_capacity() - tx.capacity(), tx.max_capacity()))
    }
}

enum Msg {
    Session(Box<SessionRow>),
    Finding(FindingRow),
    Dns(DnsRow),
    Certificate(CertificateRow),
}

/// The output-stage side of the sink: makes rows and queues them.
pub struct ClickHouseSink {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Mutex<ClickHouseStats>>,
    queue_full_waits: u64,
    sensor: String,
}

impl ClickHouseSink {
    /// Opens the spool, starts the writer thread and checks the server: unreachable is fine
    /// (rows go to the spool until it answers), but a server that answers without the
    /// stripwatch tables, or refuses the credentials, stops the run before it starts.
    pub fn start(
        opts: ClickHouseOptions,
    ) -> Result<(ClickHouseSink, ClickHouseReport), ClickHouseError> {
        let spool = Spool::open(&opts.spool_dir, opts.spool_max_bytes)?;
        let stats = Arc::new(Mutex::new(ClickHouseStats {
            url: opts.target.base_url.clone(),
            database: opts.target.database.clone(),
            rows_sent: TABLES.iter().map(|t| (*t, 0)).collect(),
            spool_rows_at_start: spool.rows(),
            spool_dir: spool.dir().display().to_string(),
            state: "delivered",
            ..ClickHouseStats::default()
        }));
        let (tx, rx) = mpsc::channel::<Msg>(QUEUE_ROWS);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let writer_stats = stats.clone();
        let sensor = opts.sensor.clone();
        let thread = std::thread::Builder::new()
            .name("clickhouse".into())
            .spawn(move || writer_thread(opts, spool, rx, writer_stats, ready_tx))
            .map_err(ClickHouseError::Start)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                drop(tx);
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(ClickHouseError::Start(std::io::Error::other(
                    "the writer thread ended before it was ready",
                )));
            }
        }
        let weak = tx.downgrade();
        Ok((
            ClickHouseSink {
                tx: Some(tx),
                thread: Some(thread),
                stats: stats.clone(),
                queue_full_waits: 0,
                sensor,
            },
            ClickHouseReport { stats, queue: weak },
        ))
    }

    fn send(&mut self, msg: Msg) -> Result<(), SinkError> {
        let closed = || SinkError {
            what: "ClickHouse writer".into(),
            source: std::io::Error::other("the writer thread stopped"),
        };
        let tx = self.tx.as_ref().ok_or_else(closed)?;
        match tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.queue_full_waits += 1;
                tx.blocking_send(msg).map_err(|_| closed())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(closed()),
        }
    }
}

impl SessionSink for ClickHouseSink {
    fn session(&mut self, rec: &SessionRecord) -> Result<(), SinkError> {
        self.send(Msg::Session(Box::new(SessionRow::new(rec))))?;
        for f in &rec.finding_details {
            self.send(Msg::Finding(FindingRow::new(f)))?;
        }
        Ok(())
    }

    fn dns(&mut self, rec: &DnsRecord) -> Result<(), SinkError> {
        self.send(Msg::Dns(DnsRow::new(rec)))?;
        for f in &rec.finding_details {
            self.send(Msg::Finding(FindingRow::new(f)))?;
        }
        Ok(())
    }

    fn certificate(&mut self, cert: &CertificateRecord) -> Result<(), SinkError> {
        let row = CertificateRow::new(cert, &self.sensor);
        self.send(Msg::Certificate(row))
    }

    /// Sends what is queued and waits for the writer: it delivers or spools every row and
    /// tries to empty the spool for up to the drain timeout.
    fn finish(&mut self) -> Result<(), SinkError> {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            return Err(SinkError {
                what: "ClickHouse writer".into(),
                source: std::io::Error::other("the writer thread panicked"),
            });
        }
        if let Ok(mut s) = self.stats.lock() {
            s.queue_full_waits += self.queue_full_waits;
        }
        self.queue_full_waits = 0;
        Ok(())
    }
}

impl Drop for ClickHouseSink {
    fn drop(&mut self) {
        // A run that failed elsewhere still lets the writer spool what it holds.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Ready = std::sync::mpsc::Sender<Result<(), ClickHouseError>>;

fn writer_thread(
    opts: ClickHouseOptions,
    spool: Spool,
    rx: mpsc::Receiver<Msg>,
    stats: Arc<Mutex<ClickHouseStats>>,
    ready: Ready,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(ClickHouseError::Start(e)));
            return;
        }
    };
    rt.block_on(async move {
        let client = opts.target.client();
        match check_server(&client).await {
            Ok(()) => {}
            Err(CheckError::Unreachable(e)) => {
                if let Ok(mut s) = stats.lock() {
                    s.last_error = Some(e);
                }
            }
            Err(CheckError::Fatal(reason)) => {
                let _ = ready.send(Err(ClickHouseError::Server {
                    url: opts.target.base_url.clone(),
                    database: opts.target.database.clone(),
                    reason,
                }));
                return;
            }
        }
        let _ = ready.send(Ok(()));
        let (batch_tx, batch_rx) = mpsc::channel::<Rows>(QUEUE_BATCHES);
        let mut writer = Writer {
            client,
            spool,
            stats,
            probe_pause: PROBE_FIRST,
            next_probe: Instant::now(),
        };
        let batcher = batcher(rx, batch_tx, opts.batch_rows.max(1), opts.flush_interval);
        let stop = opts.stop.clone();
        let deliver = async {
            writer.run(batch_rx).await;
            writer
                .drain(Instant::now() + opts.drain_timeout, stop.as_deref())
                .await;
            writer.close();
        };
        tokio::join!(batcher, deliver);
    });
}

enum CheckError {
    Unreachable(String),
    Fatal(String),
}

/// Is the server there, does it take our credentials, and does the database have our tables?
async fn check_server(client: &clickhouse::Client) -> Result<(), CheckError> {
    let query = client
        .query("SELECT name FROM system.tables WHERE database = currentDatabase()")
        .fetch_all();
    let names: Vec<String> = tokio::time::timeout(CHECK_TIMEOUT, query)
        .await
        .map_err(|_| {
            CheckError::Unreachable(format!("no answer within {} s", CHECK_TIMEOUT.as_secs()))
        })?
        .map_err(|e| match classify(&e) {
            Failure::Unreachable => CheckError::Unreachable(error_chain(&e)),
            Failure::Refused if matches!(e, clickhouse::error::Error::BadResponse(_)) => {
                CheckError::Fatal(format!(
                    "{} (is the database there? `stripwatch schema apply` creates it)",
                    error_chain(&e)
                ))
            }
            Failure::Refused => CheckError::Fatal(error_chain(&e)),
        })?;
    let missing: Vec<&str> = TABLES
        .iter()
        .copied()
        .filter(|t| !names.iter().any(|n| n == t))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CheckError::Fatal(format!(
            "tables {} are missing: run `stripwatch schema apply` first",
            missing.join(", ")
        )))
    }
}

/// Collects rows into per-table batches and hands them to the inserter when a table has
/// `batch_rows` rows or the oldest row has waited `interval`.
async fn batcher(
    mut rx: mpsc::Receiver<Msg>,
    out: mpsc::Sender<Rows>,
    batch_rows: usize,
    interval: Duration,
) {
    let mut sessions = Vec::new();
    let mut findings = Vec::new();
    let mut dns = Vec::new();
    let mut certs = Vec::new();
    let mut oldest: Option<tokio::time::Instant> = None;
    loop {
        let msg = match oldest {
            None => rx.recv().await,
            Some(t) => match tokio::time::timeout_at(t + interval, rx.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    oldest = None;
                    for rows in [
                        Rows::Sessions(std::mem::take(&mut sessions)),
                        Rows::Findings(std::mem::take(&mut findings)),
                        Rows::Dns(std::mem::take(&mut dns)),
                        Rows::Certificates(std::mem::take(&mut certs)),
                    ] {
                        if !rows.is_empty() && out.send(rows).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            },
        };
        let Some(msg) = msg else { break };
        oldest.get_or_insert_with(tokio::time::Instant::now);
        let full = match msg {
            Msg::Session(r) => {
                sessions.push(*r);
                (sessions.len() >= batch_rows)
                    .then(|| Rows::Sessions(std::mem::take(&mut sessions)))
            }
            Msg::Finding(r) => {
                findings.push(r);
                (findings.len() >= batch_rows)
                    .then(|| Rows::Findings(std::mem::take(&mut findings)))
            }
            Msg::Dns(r) => {
                dns.push(r);
                (dns.len() >= batch_rows).then(|| Rows::Dns(std::mem::take(&mut dns)))
            }
            Msg::Certificate(r) => {
                certs.push(r);
                (certs.len() >= batch_rows).then(|| Rows::Certificates(std::mem::take(&mut certs)))
            }
        };
        if let Some(rows) = full {
            if out.send(rows).await.is_err() {
                return;
            }
            if sessions.is_empty() && findings.is_empty() && dns.is_empty() && certs.is_empty() {
                oldest = None;
            }
        }
    }
    for rows in [
        Rows::Sessions(sessions),
        Rows::Findings(findings),
        Rows::Dns(dns),
        Rows::Certificates(certs),
    ] {
        if !rows.is_empty() && out.send(rows).await.is_err() {
            return;
        }
    }
}

/// Sent with every INSERT. On a cluster it makes the `Distributed` table write every shard's
/// part before it answers, so an acknowledged batch is on every shard (at least one replica
/// each), and a shard that cannot be reached fails the INSERT: the batch is tried again and
/// spooled like any failed batch, and the shards that did take their part recognise it when it
/// comes again (block deduplication). Without it the receiving node would acknowledge once the
/// batch is queued on its own disk. A single server ignores the setting.
const INSERT_SETTINGS: [(&str, &str); 1] = [("insert_distributed_sync", "1")];

/// Inserts one batch.
async fn insert(client: &clickhouse::Client, rows: &Rows) -> clickhouse::error::Result<()> {
    match rows {
        Rows::Sessions(v) => insert_rows(client, "sessions", v).await,
        Rows::Findings(v) => insert_rows(client, "findings", v).await,
        Rows::Dns(v) => insert_rows(client, "dns", v).await,
        Rows::Certificates(v) => insert_rows(client, "certificates", v).await,
    }
}

async fn insert_rows<T>(
    client: &clickhouse::Client,
    table: &str,
    rows: &[T],
) -> clickhouse::error::Result<()>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    let mut ins = client
        .insert::<T>(table)
        .await?
        .with_timeouts(Some(SEND_TIMEOUT), Some(END_TIMEOUT));
    for (name, value) in INSERT_SETTINGS {
        ins = ins.with_setting(name, value);
    }
    for r in rows {
        ins.write(r).await?;
    }
    ins.end().await
}

/// The inserter: delivers batches in order, through the spool when the server is away.
struct Writer {
    client: clickhouse::Client,
    spool: Spool,
    stats: Arc<Mutex<ClickHouseStats>>,
    probe_pause: Duration,
    next_probe: Instant,
}

impl Writer {
    fn with_stats(&self, f: impl FnOnce(&mut ClickHouseStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    /// Publishes what waits in the spool now, so that `--metrics` shows an outage growing and
    /// draining while it happens, not only at the end of the run.
    fn spool_level(&self) {
        let (rows, bytes) = (self.spool.rows(), self.spool.bytes());
        self.with_stats(|s| {
            s.spool_rows_left = rows;
            s.spool_bytes_left = bytes;
        });
    }

    fn sent(&self, rows: &Rows, replayed: bool, took: Duration) {
        let n = rows.len() as u64;
        let table = rows.table();
        self.with_stats(|s| {
            *s.rows_sent.entry(table).or_default() += n;
            s.batches_sent += 1;
            s.insert_seconds += took.as_secs_f64();
            if replayed {
                s.rows_replayed += n;
                s.batches_replayed += 1;
            }
        });
    }

    fn failed(&self, e: &clickhouse::error::Error) {
        let text = error_chain(e);
        self.with_stats(|s| {
            s.insert_errors += 1;
            s.last_error = Some(text);
        });
    }

    /// Takes batches until the batcher is done.
    async fn run(&mut self, mut batches: mpsc::Receiver<Rows>) {
        loop {
            if !self.spool.is_empty() && Instant::now() >= self.next_probe {
                self.replay().await;
            }
            let got = if self.spool.is_empty() {
                batches.recv().await
            } else {
                let at = tokio::time::Instant::from_std(self.next_probe);
                match tokio::time::timeout_at(at, batches.recv()).await {
                    Ok(m) => m,
                    Err(_) => continue,
                }
            };
            let Some(rows) = got else { return };
            self.deliver(rows).await;
        }
    }

    /// Sends one live batch: directly when nothing waits in the spool (with a few quick
    /// tries), else behind what waits, so the order holds.
    async fn deliver(&mut self, rows: Rows) {
        if self.spool.is_empty() {
            for attempt in 0..=RETRY_PAUSES.len() {
                let started = Instant::now();
                match insert(&self.client, &rows).await {
                    Ok(()) => {
                        self.sent(&rows, false, started.elapsed());
                        return;
                    }
                    Err(e) => {
                        self.failed(&e);
                        if let Some(pause) = RETRY_PAUSES.get(attempt) {
                            self.with_stats(|s| s.retries += 1);
                            tokio::time::sleep(*pause).await;
                        }
                    }
                }
            }
            self.probe_pause = PROBE_FIRST;
            self.next_probe = Instant::now() + self.probe_pause;
        }
        self.spool_batch(&rows);
    }

    fn spool_batch(&mut self, rows: &Rows) {
        let n = rows.len() as u64;
        match self.spool.push(rows) {
            Ok(()) => {
                self.with_stats(|s| {
                    s.rows_spooled += n;
                    s.batches_spooled += 1;
                });
                self.spool_level();
            }
            Err(e) => self.with_stats(|s| {
                s.rows_dropped += n;
                s.last_error = Some(e.to_string());
            }),
        }
    }

    /// Replays the spool, oldest first, until it is empty or the server fails again.
    async fn replay(&mut self) {
        while let Some(loaded) = self.spool.load_front() {
            let rows = match loaded {
                Ok(rows) => rows,
                Err(e) => {
                    let text = e.to_string();
                    let lost = self.spool.quarantine_front().unwrap_or(0);
                    self.with_stats(|s| {
                        s.rows_dropped += lost;
                        s.last_error = Some(text);
                    });
                    continue;
                }
            };
            let started = Instant::now();
            match insert(&self.client, &rows).await {
                Ok(()) => {
                    self.sent(&rows, true, started.elapsed());
                    if let Err(e) = self.spool.pop_front() {
                        // The batch is in ClickHouse; the file could not be removed, so it
                        // would be replayed again (harmless: replays are idempotent).
                        self.with_stats(|s| s.last_error = Some(e.to_string()));
                    }
                    self.spool_level();
                    self.probe_pause = PROBE_FIRST;
                }
                Err(e) => {
                    self.failed(&e);
                    self.next_probe = Instant::now() + self.probe_pause;
                    self.probe_pause = (self.probe_pause * 2).min(PROBE_MAX);
                    return;
                }
            }
        }
    }

    /// At the end: keeps replaying until the spool is empty or `deadline` passes (one try at
    /// least).
    async fn drain(&mut self, deadline: Instant, stop: Option<&std::sync::atomic::AtomicBool>) {
        let mut tried = false;
        while !self.spool.is_empty() {
            let now = Instant::now();
            let stopped = stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
            if tried && (now >= deadline || stopped) {
                break;
            }
            if now >= self.next_probe || !tried {
                tried = true;
                self.replay().await;
            } else {
                // Short sleeps, so a signal is noticed within a tenth of a second.
                let wake = self
                    .next_probe
                    .min(deadline)
                    .min(now + Duration::from_millis(100));
                tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
            }
        }
    }

    fn close(&mut self) {
        let (rows, bytes) = (self.spool.rows(), self.spool.bytes());
        self.with_stats(|s| {
            s.spool_rows_left = rows;
            s.spool_bytes_left = bytes;
            s.state = if s.rows_dropped > 0 {
                "rows-dropped"
            } else if rows > 0 {
                "spooled"
            } else {
                "delivered"
            };
        });
    }
}
