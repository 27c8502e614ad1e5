//! Live capture from network interfaces through libpcap (the `pcap` crate). On Linux libpcap
//! reads TPACKET_V3 rings; immediate mode would make it fall back to TPACKET_V2, so it is left
//! off and a short read timeout retires partly filled blocks instead.
//!
//! One reader serves every interface: each handle is non-blocking, and the reader waits in
//! `poll(2)` on all of them, so a busy interface never starves a quiet one and a silent link still
//! wakes the reader for its wall-clock tick. Kernel and interface drops come from `pcap_stats`,
//! read here only, once a second and at the end.

use super::{CaptureError, LinkType, PacketSource, RawPacket, SourceEvent, SourceStats};
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
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            interfaces: Vec::new(),
            bpf: DEFAULT_BPF.to_string(),
            snaplen: 262_144,
            buffer_bytes: 64 << 20,
            promiscuous: true,
        }
    }
}

/// One interface's counters, which another thread may read while the capture runs (a periodic
/// log line, metrics). Written only by the reader.
#[derive(Debug, Default)]
pub struct InterfaceCounters {
    /// The interface.
    pub interface: String,
    /// Packets handed to the pipeline.
    pub packets: AtomicU64,
    /// Captured bytes handed to the pipeline.
    pub bytes: AtomicU64,
    /// Kernel drops (`ps_drop`), as of the last read.
    pub kernel_drops: AtomicU64,
    /// Interface drops (`ps_ifdrop`), as of the last read.
    pub interface_drops: AtomicU64,
}

/// One open interface.
struct Handle {
    interface: String,
    cap: pcap::Capture<pcap::Active>,
    linktype: LinkType,
    counters: Arc<InterfaceCounters>,
    /// The last `pcap_stats` values (cumulative u32 counters that wrap).
    last_drop: u32,
    last_ifdrop: u32,
}

/// Every interface of one `stripwatch live`, read by one thread.
pub struct LiveCapture {
    name: String,
    handles: Vec<Handle>,
}

impl LiveCapture {
    /// Opens, configures and filters every interface. Everything that can go wrong with the
    /// interfaces (unknown name, no permission, a filter that does not compile) fails here,
    /// before any packet is read.
    pub fn open(opts: &LiveOptions) -> Result<LiveCapture, CaptureError> {
        let mut handles = Vec::with_capacity(opts.interfaces.len());
        for interface in &opts.interfaces {
            let err = |what: &str, e: pcap::Error| CaptureError::Live {
                interface: interface.clone(),
                message: format!("{what}: {e}"),
            };
            let snaplen = i32::try_from(opts.snaplen).unwrap_or(i32::MAX);
            let buffer = i32::try_from(opts.buffer_bytes).unwrap_or(i32::MAX);
            let cap = pcap::Capture::from_device(interface.as_str())
                .map_err(|e| err("cannot open", e))?
                .snaplen(snaplen)
                .buffer_size(buffer)
                .promisc(opts.promiscuous)
                .immediate_mode(false)
                .timeout(READ_TIMEOUT_MS)
                .open()
                .map_err(|e| err("cannot capture", e))?;
            let mut cap = cap.setnonblock().map_err(|e| err("non-blocking mode", e))?;
            cap.filter(&opts.bpf, true)
                .map_err(|e| err("BPF filter", e))?;
            let linktype = LinkType(cap.get_datalink().0 as u32);
            handles.push(Handle {
                interface: interface.clone(),
                cap,
                linktype,
                counters: Arc::new(InterfaceCounters {
                    interface: interface.clone(),
                    ..InterfaceCounters::default()
                }),
                last_drop: 0,
                last_ifdrop: 0,
            });
        }
        Ok(LiveCapture {
            name: opts.interfaces.join(","),
            handles,
        })
    }

    /// Each interface's counters, for other threads to read while the capture runs.
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
