//! Packet sources: capture files (pcap, pcapng, optionally gzip- or zstd-compressed), standard
//! input, and live interfaces through libpcap. Every source hands out borrowed packets one at a
//! time so that nothing is copied before the decoder has decided the packet is interesting, and
//! every source implements [`PacketSource`], so the pipeline does not know which kind it reads.

mod fanout;
mod file;
pub mod follow;
pub mod live;

pub use file::{CaptureFile, Compression};
pub use follow::FollowDir;
pub use live::{InterfaceCounters, LiveCapture, LiveOptions};

/// What [`PacketSource::split`] gives: the source as it is, for one reader that shards its
/// packets to the workers, or one part per worker that the kernel has already balanced.
pub enum Split<S: PacketSource> {
    /// One source, read by one thread.
    Whole(S),
    /// One part per worker, in worker order. Every packet of a connection, in both directions,
    /// and every DNS message of the connection's client reach the same part, so each worker may
    /// read its part on its own thread without the packets passing through another thread.
    Parts(Vec<S::Part>),
}

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use thiserror::Error;

/// What a source hands the pipeline.
#[derive(Clone, Copy, Debug)]
pub enum SourceEvent<'a> {
    /// One captured frame.
    Packet(&'a RawPacket<'a>),
    /// A live source's wall-clock tick, sent every few hundred milliseconds whether or not
    /// packets came, with the wall-clock time in microseconds since the Unix epoch. On a
    /// silent link this is the only way the pipeline learns that time has passed, so that idle
    /// flows close and finished sessions reach the files. Files never send it.
    Tick(i64),
}

/// A source of packets: a capture file or a set of live interfaces. The pipeline drives any of
/// them through this one seam, so a native AF_PACKET or AF_XDP reader can come later without
/// touching it.
pub trait PacketSource {
    /// What one worker reads when the source is split (see [`PacketSource::split`]).
    type Part: PacketSource + Send + 'static;

    /// The name for the summary (a path, `-`, or the interfaces).
    fn name(&self) -> &str;

    /// True when the packets' timestamps are the wall clock's (live capture). The pipeline then
    /// moves capture time forward on [`SourceEvent::Tick`] and releases records within seconds
    /// instead of holding them for the whole run.
    fn live(&self) -> bool {
        false
    }

    /// A shared counter of the raw bytes read so far (for a progress bar), when that means
    /// something: files of known size.
    fn progress_counter(&self) -> Option<Arc<AtomicU64>> {
        None
    }

    /// Splits the source into one part per worker when the kernel already balances its packets
    /// by client (live capture with `PACKET_FANOUT`), so that no thread copies packets to
    /// another. The default, and any source that cannot, stays whole.
    fn split(self, workers: usize) -> Split<Self>
    where
        Self: Sized,
    {
        let _ = workers;
        Split::Whole(self)
    }

    /// Reads until the source ends or `on_event` returns `ControlFlow::Break`.
    fn for_each_event<F>(self, on_event: F) -> Result<SourceStats, CaptureError>
    where
        F: FnMut(SourceEvent<'_>) -> ControlFlow<()>,
        Self: Sized;
}

/// A link-layer header type as numbered by tcpdump.org (`LINKTYPE_*`), kept as the raw number so
/// that an unknown type becomes a counter instead of a parse failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkType(pub u32);

impl LinkType {
    /// BSD loopback: a 4-byte address family in host byte order.
    pub const NULL: LinkType = LinkType(0);
    /// Ethernet II, possibly with 802.1Q / QinQ tags.
    pub const ETHERNET: LinkType = LinkType(1);
    /// Raw IP (the 101 that libpcap writes; 12 and 14 are historical aliases).
    pub const RAW: LinkType = LinkType(101);
    /// OpenBSD loopback: a 4-byte address family in network byte order.
    pub const LOOP: LinkType = LinkType(108);
    /// Linux "cooked" capture v1 (`any` interface).
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// Raw IPv4.
    pub const IPV4: LinkType = LinkType(228);
    /// Raw IPv6.
    pub const IPV6: LinkType = LinkType(229);
    /// Linux "cooked" capture v2.
    pub const LINUX_SLL2: LinkType = LinkType(276);
}

/// One captured frame, borrowed from the source's buffer. The timestamp is the packet's own
/// (microseconds since the Unix epoch), never the wall clock: every judgement is made in capture
/// time.
#[derive(Clone, Copy, Debug)]
pub struct RawPacket<'a> {
    /// Capture timestamp in microseconds since the Unix epoch.
    pub ts_us: i64,
    /// How to read the first bytes of `data`.
    pub linktype: LinkType,
    /// The captured bytes (possibly shorter than the packet on the wire).
    pub data: &'a [u8],
    /// The packet's length on the wire; larger than `data.len()` when the snap length cut it.
    pub orig_len: u32,
}

/// What a source can fail with. Malformed packets are not errors (they are counted by the
/// decoder); these are problems with the file as a whole.
#[derive(Debug, Error)]
pub enum CaptureError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file that failed.
        path: String,
        /// The operating system's reason: in the message, and not also the error's source, so
        /// that a chain printed with `{:#}` says it once.
        reason: std::io::Error,
    },
    /// The bytes are neither pcap nor pcapng (after decompression).
    #[error("{path}: not a pcap or pcapng capture")]
    NotACapture {
        /// The offending input.
        path: String,
    },
    /// The file is empty.
    #[error("{path}: empty input")]
    Empty {
        /// The offending input.
        path: String,
    },
    /// A live interface could not be opened, filtered or read (libpcap's message).
    #[error("{interface}: {message}")]
    Live {
        /// The interface.
        interface: String,
        /// What libpcap said, with what was being done.
        message: String,
    },
}

/// What reading one source produced, for the run's summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceStats {
    /// Packets handed to the pipeline.
    pub packets: u64,
    /// Captured bytes handed to the pipeline.
    pub bytes: u64,
    /// Packets whose capture length was smaller than their wire length.
    pub snapped: u64,
    /// Blocks the reader could not parse (corrupt records); reading stops at the first one.
    pub corrupt_blocks: u64,
    /// The file ended inside a record (a capture cut short).
    pub truncated: bool,
    /// Live capture: packets the kernel dropped because the capture buffer was full (libpcap's
    /// `ps_drop`), summed over the interfaces.
    pub kernel_drops: u64,
    /// Live capture: packets the interface or its driver dropped (`ps_ifdrop`; Linux fills it
    /// in promiscuous mode only).
    pub interface_drops: u64,
}

impl SourceStats {
    /// Adds the counters of another part of the same source (a worker's share of a split one).
    pub fn merge(&mut self, o: &SourceStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.snapped += o.snapped;
        self.corrupt_blocks += o.corrupt_blocks;
        self.truncated |= o.truncated;
        self.kernel_drops += o.kernel_drops;
        self.interface_drops += o.interface_drops;
    }
}
