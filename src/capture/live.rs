//! Live capture from network interfaces through libpcap (the `pcap` crate). On Linux libpcap
//! reads TPACKET_V3 rings; immediate mode would make it fall back to TPACKET_V2, so it is left
//! off and a short read timeout retires partly filled blocks instead.
//!
//! With several workers each interface gets one handle per worker, joined in one
//! `PACKET_FANOUT` group whose classic BPF program (`capture/fanout.rs`) picks the
//! handle by the client's address, as the pipeline shards a file; the source then splits into
//! one part per worker and each worker reads its own handles. Where the kernel refuses the group,
//! one handle per interface is kept and one reader shards, as for files.
//!
//! A reader serves its handles: each is non-blocking, and the reader waits in `poll(2)` on all of
//! them, so a busy interface never starves a quiet one and a silent link still wakes the reader
//! for its wall-clock tick. Kernel and interface drops come from `pcap_stats`, read by the
//! handle's own reader only, once a second and at the end.

use super::fanout::{self, Group};
use super::{CaptureError, LinkType, PacketSource, RawPacket, SourceEvent, SourceStats, Split};
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The kernel filter when none is given: the mail ports and DNS. Content detection on other
/// ports sees nothing unless `--bpf` lets those packets through.
pub const DEFAULT_BPF: &str = "tcp port 25 or 465 or 587 or port 53";

/// How long the reader waits in `poll(2)` for a ready block; also libpcap's read timeout, after
/// which the kernel hands over a partly filled TPACKET_V3 block.
const READ_TIMEOUT_MS: i32 = 100;
/// How often the pipeline hears the wall clock (its tick needs no finer grain).
const TICK: Duration = Duration::from_millis(250);
/// How often the kernel counters are read (libpcap's are u32 and wrap; once a second is far
/// below the wrap at any rate an interface can deliver).
const STATS_EVERY: Duration = Duration::from_secs(1);

/// How to open the interfaces.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Interface names, as `ip link` shows them.
    pub interfaces: Vec<String>,
    /// The kernel BPF filter.
    pub bpf: String,
    /// Bytes kept of each packet.
    pub snaplen: u32,
    /// The kernel ring per interface, in bytes (libpcap's default is only 2 MiB).
    pub buffer_bytes: u32,
    /// Promiscuous mode: needed on a SPAN port or tap, where frames are not addressed to the
    /// host, and the only mode in which Linux fills the interface-drop counter.
    pub promiscuous: bool,
    /// Workers of the pipeline: with more than one, each interface gets one handle per worker
    /// in a `PACKET_FANOUT` group, when the kernel allows it.
    pub workers: usize,
    /// The ports whose side is the server (the SMTP ports and 53): the fanout program sends a
    /// packet to the worker of the other side, the client, as the pipeline shards a file.
    pub server_ports: Vec<u16>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            interfaces: Vec::new(),
            bpf: DEFAULT_BPF.to_string(),
            snaplen: 262_144,
            buffer_bytes: 64 << 20,
            promiscuous: true,
            workers: 1,
            server_ports: vec![25, 465, 587, 53],
        }
    }
}

/// One capture handle's counters, which another thread may read while the capture runs (a
/// periodic log line, metrics). Written only by the handle's reader.
#[derive(Debug, Default)]
pub struct InterfaceCounters {
    /// The interface.
    pub interface: String,
    /// The worker that reads this handle (fanout), or `None` for the one reader that shards.
    pub worker: Option<usize>,
    /// Packets handed to the pipeline.
    pub packets: AtomicU64,
    /// Captured bytes handed to the pipeline.
    pub bytes: AtomicU64,
    /// Kernel drops (`ps_drop`), as of the last read.
    pub kernel_drops: AtomicU64,
    /// Interface drops (`ps_ifdrop`), as of the last read.
    pub interface_drops: AtomicU64,
    /// Packets cut by the snap length (their tails are holes the judges know about).
    pub snapped: AtomicU64,
}

/// One open capture handle.
struct Handle {
    interface: String,
    cap: pcap::Capture<pcap::Active>,
    linktype: LinkType,
    counters: Arc<InterfaceCounters>,
    /// The last `pcap_stats` values (cumulative u32 counters that wrap).
    last_drop: u32,
    last_ifdrop: u32,
}

/// Every interface of one `stripwatch live` (or, once split, one worker's handles).
pub struct LiveCapture {
    name: String,
    handles: Vec<Handle>,
    /// Handles per interface joined in a fanout group (0: none, one reader shards).
    fanout: usize,
    /// Why the fanout is off although several workers were asked for.
    fanout_refused: Option<String>,
}

impl LiveCapture {
    /// Opens, configures and filters every interface. Everything that can go wrong with the
    /// interfaces (unknown name, no permission, a filter that does not compile) fails here,
    /// before any packet is read. A fanout the kernel refuses is not an error: it is logged
    /// once, and one reader shards instead.
    pub fn open(opts: &LiveOptions) -> Result<LiveCapture, CaptureError> {
        let mut handles = Vec::with_capacity(opts.interfaces.len() * opts.workers.max(1));
        for interface in &opts.interfaces {
            handles.push(open_handle(interface, opts, None)?);
        }
        let mut fanout = 0;
        let mut fanout_refused = None;
        if opts.workers > 1 {
            match join_fanout(&mut handles, opts) {
                Ok(()) => fanout = opts.workers,
                Err(reason) => {
                    // Members already joined leave their group as they close; a lone first
                    // member of a group receives every packet of its interface.
                    handles.retain(|h| h.counters.worker.is_none_or(|w| w == 0));
                    for h in &mut handles {
                        h.counters = Arc::new(InterfaceCounters {
                            interface: h.interface.clone(),
                            ..InterfaceCounters::default()
                        });
                    }
                    tracing::warn!(
                        reason = %reason,
                        "PACKET_FANOUT unavailable: one reader shards the packets to the workers"
                    );
                    fanout_refused = Some(reason);
                }
            }
        }
        // After the join: libpcap discards what the socket received before its filter, so
        // nothing from before the group formed is read twice.
        for h in &mut handles {
            h.cap
                .filter(&opts.bpf, true)
                .map_err(|e| CaptureError::Live {
                    interface: h.interface.clone(),
                    message: format!("BPF filter: {e}"),
                })?;
        }
        Ok(LiveCapture {
            name: opts.interfaces.join(","),
            handles,
            fanout,
            fanout_refused,
        })
    }

    /// Handles per interface in the fanout group, one per worker (0 when one reader shards).
    pub fn fanout(&self) -> usize {
        self.fanout
    }

    /// Why the fanout is off although several workers were asked for (the kernel's answer).
    pub fn fanout_refused(&self) -> Option<&str> {
        self.fanout_refused.as_deref()
    }

    /// Each handle's counters, for other threads to read while the capture runs.
    pub fn counters(&self) -> Vec<Arc<InterfaceCounters>> {
        self.handles.iter().map(|h| h.counters.clone()).collect()
    }

    /// Reads `pcap_stats` of every interface and adds what grew since the last read. The
    /// counters are u32 and wrap, so the difference is taken modulo 2^32.
    fn read_drops(&mut self, stats: &mut SourceStats) -> Result<(), CaptureError> {
        for h in &mut self.handles {
            let s = h.cap.stats().map_err(|e| CaptureError::Live {
                interface: h.interface.clone(),
                message: format!("pcap_stats: {e}"),
            })?;
            let drops = u64::from(s.dropped.wrapping_sub(h.last_drop));
            let ifdrops = u64::from(s.if_dropped.wrapping_sub(h.last_ifdrop));
            h.last_drop = s.dropped;
            h.last_ifdrop = s.if_dropped;
            stats.kernel_drops += drops;
            stats.interface_drops += ifdrops;
            h.counters.kernel_drops.fetch_add(drops, Ordering::Relaxed);
            h.counters
                .interface_drops
                .fetch_add(ifdrops, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Opens and activates one handle of `interface`, non-blocking, not yet filtered.
fn open_handle(
    interface: &str,
    opts: &LiveOptions,
    worker: Option<usize>,
) -> Result<Handle, CaptureError> {
    let err = |what: &str, e: pcap::Error| CaptureError::Live {
        interface: interface.to_string(),
        message: format!("{what}: {e}"),
    };
    let snaplen = i32::try_from(opts.snaplen).unwrap_or(i32::MAX);
    let buffer = i32::try_from(opts.buffer_bytes).unwrap_or(i32::MAX);
    let cap = pcap::Capture::from_device(interface)
        .map_err(|e| err("cannot open", e))?
        .snaplen(snaplen)
        .buffer_size(buffer)
        .promisc(opts.promiscuous)
        .immediate_mode(false)
        .timeout(READ_TIMEOUT_MS)
        .open()
        .map_err(|e| err("cannot capture", e))?;
    let cap = cap.setnonblock().map_err(|e| err("non-blocking mode", e))?;
    let linktype = LinkType(cap.get_datalink().0 as u32);
    Ok(Handle {
        interface: interface.to_string(),
        cap,
        linktype,
        counters: Arc::new(InterfaceCounters {
            interface: interface.to_string(),
            worker,
            ..InterfaceCounters::default()
        }),
        last_drop: 0,
        last_ifdrop: 0,
    })
}

/// Joins each interface's first handle and `workers - 1` new ones into one fanout group per
/// interface, members in worker order (the kernel numbers them so). The first refusal ends the
/// attempt with the kernel's reason; the caller then keeps the first handles only.
fn join_fanout(handles: &mut Vec<Handle>, opts: &LiveOptions) -> Result<(), String> {
    let program = fanout::program(&opts.server_ports)?;
    for (position, interface) in opts.interfaces.iter().enumerate() {
        let mut group = Group::new(position);
        let first = handles
            .iter_mut()
            .find(|h| &h.interface == interface && h.counters.worker.is_none())
            .ok_or_else(|| format!("{interface}: no handle"))?;
        group
            .join(first.cap.as_raw_fd(), &program)
            .map_err(|e| format!("{interface}: {e}"))?;
        first.counters = Arc::new(InterfaceCounters {
            interface: interface.clone(),
            worker: Some(0),
            ..InterfaceCounters::default()
        });
        for worker in 1..opts.workers {
            let h = open_handle(interface, opts, Some(worker)).map_err(|e| e.to_string())?;
            // Pushed before joining: a member that joined is closed with the others on failure.
            handles.push(h);
            let fd = handles.last().map_or(-1, |h| h.cap.as_raw_fd());
            group
                .join(fd, &program)
                .map_err(|e| format!("{interface}: {e}"))?;
        }
    }
    Ok(())
}

/// Microseconds since the Unix epoch by the wall clock.
fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A libpcap timestamp in microseconds since the Unix epoch. `time_t` and `suseconds_t` are
/// narrower than i64 on some targets, hence conversions clippy finds useless on this one.
#[allow(clippy::useless_conversion)]
fn timeval_us(ts: libc::timeval) -> i64 {
    i64::from(ts.tv_sec)
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.tv_usec))
}

impl PacketSource for LiveCapture {
    /// One worker's handles, one per interface.
    type Part = LiveCapture;

    /// One part per worker when every interface's handles form a fanout group of `workers`.
    fn split(self, workers: usize) -> Split<Self> {
        if self.fanout != workers || workers < 2 {
            return Split::Whole(self);
        }
        let mut parts: Vec<LiveCapture> = (0..workers)
            .map(|_| LiveCapture {
                name: self.name.clone(),
                handles: Vec::new(),
                fanout: 0,
                fanout_refused: None,
            })
            .collect();
        for h in self.handles {
            let w = h.counters.worker.unwrap_or(0).min(workers - 1);
            parts[w].handles.push(h);
        }
        Split::Parts(parts)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn live(&self) -> bool {
        true
    }

    fn for_each_event<F>(mut self, mut on_event: F) -> Result<SourceStats, CaptureError>
    where
        F: FnMut(SourceEvent<'_>) -> ControlFlow<()>,
    {
        let mut stats = SourceStats::default();
        let mut fds: Vec<libc::pollfd> = self
            .handles
            .iter()
            .map(|h| libc::pollfd {
                fd: h.cap.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut last_tick = Instant::now();
        let mut last_stats = Instant::now();
        let mut stop = false;
        while !stop {
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures that lives across
            // the call. EINTR (a signal) and other failures only end the wait early: every
            // handle is read below anyway.
            unsafe {
                libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, READ_TIMEOUT_MS);
            }
            for h in &mut self.handles {
                let linktype = h.linktype;
                let counters = &h.counters;
                let stats = &mut stats;
                let on_event = &mut on_event;
                let stopped = &mut stop;
                h.cap
                    .dispatch(None, |p| {
                        if *stopped {
                            return;
                        }
                        let pkt = RawPacket {
                            ts_us: timeval_us(p.header.ts),
                            linktype,
                            data: p.data,
                            orig_len: p.header.len,
                        };
                        stats.packets += 1;
                        stats.bytes += p.data.len() as u64;
                        if p.header.len as usize > p.data.len() {
                            stats.snapped += 1;
                            counters.snapped.fetch_add(1, Ordering::Relaxed);
                        }
                        counters.packets.fetch_add(1, Ordering::Relaxed);
                        counters
                            .bytes
                            .fetch_add(p.data.len() as u64, Ordering::Relaxed);
                        *stopped = on_event(SourceEvent::Packet(&pkt)).is_break();
                    })
                    .map_err(|e| CaptureError::Live {
                        interface: h.interface.clone(),
                        message: format!("read failed: {e}"),
                    })?;
                if stop {
                    break;
                }
            }
            if last_stats.elapsed() >= STATS_EVERY {
                last_stats = Instant::now();
                self.read_drops(&mut stats)?;
            }
            if !stop && last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                stop = on_event(SourceEvent::Tick(wall_us())).is_break();
            }
        }
        self.read_drops(&mut stats)?;
        Ok(stats)
    }
}
