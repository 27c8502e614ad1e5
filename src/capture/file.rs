//! Capture files and standard input, in pcap or pcapng, plain or gzip/zstd-compressed. The format
//! and the compression are detected from the content, never from the name.

use super::{CaptureError, LinkType, PacketSource, RawPacket, SourceEvent, SourceStats};
use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The reader's starting buffer; it grows (bounded by `MAX_BUFFER`) for jumbo records.
const INITIAL_BUFFER: usize = 1 << 20;
/// No legitimate capture record is larger than this; a larger one is treated as corruption.
const MAX_BUFFER: usize = 64 << 20;

/// How the bytes of a capture are wrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain pcap or pcapng.
    None,
    /// gzip (possibly several members, as `cat a.gz b.gz` makes).
    Gzip,
    /// Zstandard.
    Zstd,
}

/// Counts the raw (compressed) bytes taken from the input, so that progress can be shown against
/// the file size.
struct CountingReader<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// One input: a path, or `-` for standard input.
pub struct CaptureFile {
    name: String,
    reader: Box<dyn Read + Send>,
    compression: Compression,
    consumed: Arc<AtomicU64>,
    size: Option<u64>,
}

impl CaptureFile {
    /// Opens `path` (`-` is standard input) and detects the compression from its first bytes.
    pub fn open(path: &str) -> Result<CaptureFile, CaptureError> {
        let io_err = |reason| CaptureError::Io {
            path: path.to_string(),
            reason,
        };
        let consumed = Arc::new(AtomicU64::new(0));
        let (raw, size): (Box<dyn Read + Send>, Option<u64>) = if path == "-" {
            (Box::new(std::io::stdin()), None)
        } else {
            let file = std::fs::File::open(path).map_err(io_err)?;
            let meta = file.metadata().map_err(io_err)?;
            if meta.is_dir() {
                return Err(CaptureError::Io {
                    path: path.to_string(),
                    reason: std::io::Error::other("is a directory"),
                });
            }
            (Box::new(file), Some(meta.len()))
        };
        let counted = CountingReader {
            inner: raw,
            counter: consumed.clone(),
        };
        let mut buffered = BufReader::with_capacity(256 * 1024, counted);
        let head = buffered.fill_buf().map_err(io_err)?;
        if head.is_empty() {
            return Err(CaptureError::Empty {
                path: path.to_string(),
            });
        }
        let compression = if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        };
        let reader: Box<dyn Read + Send> = match compression {
            Compression::None => Box::new(buffered),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(io_err)?)
            }
        };
        Ok(CaptureFile {
            name: path.to_string(),
            reader,
            compression,
            consumed,
            size,
        })
    }

    /// The name the user gave.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The detected compression.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The size on disk, when known (not for standard input).
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// A shared counter of the raw bytes read so far, for a progress bar on another thread.
    pub fn progress_counter(&self) -> Arc<AtomicU64> {
        self.consumed.clone()
    }

    /// Reads every packet and hands it to `on_packet`, which may stop the run early by returning
    /// `ControlFlow::Break`. Corrupt or truncated tails end the file and are reported in the
    /// returned statistics rather than as errors, so one bad capture never loses what came before.
    pub fn for_each_packet<F>(self, mut on_packet: F) -> Result<SourceStats, CaptureError>
    where
        F: FnMut(&RawPacket<'_>) -> ControlFlow<()>,
    {
        let name = self.name;
        let mut stats = SourceStats::default();
        let mut reader = match create_reader(INITIAL_BUFFER, self.reader) {
            Ok(r) => r,
            Err(PcapError::Eof) => return Err(CaptureError::Empty { path: name }),
            Err(PcapError::ReadError) => {
                return Err(CaptureError::Io {
                    path: name,
                    reason: std::io::Error::other("read failed (corrupt compressed data?)"),
                });
            }
            Err(_) => return Err(CaptureError::NotACapture { path: name }),
        };
        let mut capacity = INITIAL_BUFFER;
        // pcapng interfaces of the current section: link type, units per second, offset.
        let mut interfaces: Vec<(LinkType, u64, i64)> = Vec::new();
        let mut legacy_link = LinkType::ETHERNET;
        let mut legacy_nanos = false;
        loop {
            let next = reader.next();
            let buffer_too_small = matches!(next, Err(PcapError::BufferTooSmall));
            match next {
                Ok((offset, block)) => {
                    let mut stop = false;
                    match block {
                        PcapBlockOwned::LegacyHeader(header) => {
                            legacy_link = LinkType(header.network.0 as u32);
                            legacy_nanos = header.is_nanosecond_precision();
                        }
                        PcapBlockOwned::Legacy(b) => {
                            let frac = if legacy_nanos {
                                i64::from(b.ts_usec) / 1000
                            } else {
                                i64::from(b.ts_usec)
                            };
                            let caplen = (b.caplen as usize).min(b.data.len());
                            let pkt = RawPacket {
                                ts_us: i64::from(b.ts_sec) * 1_000_000 + frac,
                                linktype: legacy_link,
                                data: &b.data[..caplen],
                                orig_len: b.origlen,
                            };
                            stop = deliver(&pkt, &mut stats, &mut on_packet);
                        }
                        PcapBlockOwned::NG(Block::SectionHeader(_)) => interfaces.clear(),
                        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                            // if_tsresol: 10^-n, or 2^-n when the top bit is set (pcap-parser
                            // 0.17 returns nothing for the latter); absurd values fall back to
                            // microseconds.
                            let r = idb.if_tsresol;
                            let resolution = if r & 0x80 != 0 {
                                1u64.checked_shl(u32::from(r & 0x7f)).unwrap_or(1_000_000)
                            } else {
                                idb.ts_resolution().unwrap_or(1_000_000)
                            }
                            .max(1);
                            interfaces.push((
                                LinkType(idb.linktype.0 as u32),
                                resolution,
                                idb.ts_offset(),
                            ));
                        }
                        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                            let (link, resolution, offset_s) = interfaces
                                .get(epb.if_id as usize)
                                .copied()
                                .unwrap_or((LinkType::ETHERNET, 1_000_000, 0));
                            let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                            let ts_us = ticks_to_micros(ticks, resolution)
                                .saturating_add(offset_s.saturating_mul(1_000_000));
                            let caplen = (epb.caplen as usize).min(epb.data.len());
                            let pkt = RawPacket {
                                ts_us,
                                linktype: link,
                                data: &epb.data[..caplen],
                                orig_len: epb.origlen,
                            };
                            stop = deliver(&pkt, &mut stats, &mut on_packet);
                        }
                        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                            let link = interfaces
                                .first()
                                .map(|i| i.0)
                                .unwrap_or(LinkType::ETHERNET);
                            let caplen = (spb.origlen as usize).min(spb.data.len());
                            let pkt = RawPacket {
                                ts_us: 0,
                                linktype: link,
                                data: &spb.data[..caplen],
                                orig_len: spb.origlen,
                            };
                            stop = deliver(&pkt, &mut stats, &mut on_packet);
                        }
                        PcapBlockOwned::NG(_) => {}
                    }
                    // Without the shift `consume` does whenever half the buffer is read (a
                    // memmove of the other half, some 512 KiB, every few thousand packets):
                    // `refill` shifts anyway, and then only the partial record at the end.
                    reader.consume_noshift(offset);
                    if stop {
                        break;
                    }
                }
                Err(PcapError::Eof) => break,
                // The file ends inside a record (a capture cut while it was written): what came
                // before it counts, and the input is marked truncated, not corrupt.
                Err(PcapError::UnexpectedEof) => {
                    stats.truncated = true;
                    break;
                }
                Err(PcapError::Incomplete(_) | PcapError::BufferTooSmall) => {
                    if reader.reader_exhausted() {
                        if !reader.data().is_empty() {
                            stats.truncated = true;
                        }
                        break;
                    }
                    let before = reader.data().len();
                    // The parser says the buffer is too small when the record would not fit
                    // even after a refill's shift: refilling again would read nothing.
                    if before >= capacity || buffer_too_small {
                        // One record is larger than the buffer: grow, within reason.
                        if capacity >= MAX_BUFFER || !reader.grow(capacity * 2) {
                            stats.corrupt_blocks += 1;
                            break;
                        }
                        capacity *= 2;
                    }
                    if reader.refill().is_err() {
                        stats.truncated = true;
                        break;
                    }
                }
                Err(_) => {
                    stats.corrupt_blocks += 1;
                    break;
                }
            }
        }
        Ok(stats)
    }
}

impl PacketSource for CaptureFile {
    /// A file is never split: one reader shards it.
    type Part = CaptureFile;

    fn name(&self) -> &str {
        &self.name
    }

    fn progress_counter(&self) -> Option<Arc<AtomicU64>> {
        Some(self.consumed.clone())
    }

    fn for_each_event<F>(self, mut on_event: F) -> Result<SourceStats, CaptureError>
    where
        F: FnMut(SourceEvent<'_>) -> ControlFlow<()>,
    {
        self.for_each_packet(|pkt| on_event(SourceEvent::Packet(pkt)))
    }
}

/// Counts a packet and hands it on; true when the consumer asked to stop.
fn deliver<F>(pkt: &RawPacket<'_>, stats: &mut SourceStats, on_packet: &mut F) -> bool
where
    F: FnMut(&RawPacket<'_>) -> ControlFlow<()>,
{
    stats.packets += 1;
    stats.bytes += pkt.data.len() as u64;
    if (pkt.orig_len as usize) > pkt.data.len() {
        stats.snapped += 1;
    }
    on_packet(pkt).is_break()
}

/// Converts pcapng timestamp ticks to microseconds without overflow for any resolution.
fn ticks_to_micros(ticks: u64, units_per_second: u64) -> i64 {
    let micros = (u128::from(ticks) * 1_000_000) / u128::from(units_per_second);
    i64::try_from(micros).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_for_common_resolutions() {
        assert_eq!(ticks_to_micros(1_500_000, 1_000_000), 1_500_000);
        assert_eq!(ticks_to_micros(1_500_000_000, 1_000_000_000), 1_500_000);
        assert_eq!(ticks_to_micros(u64::MAX, 1), i64::MAX);
    }
}
