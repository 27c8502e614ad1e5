//! Streaming capture-file writers: classic pcap (microsecond) and pcapng (SHB + IDB + EPB),
//! optionally compressed with gzip or zstd.
//!
//! Everything streams through a `Write`, so a capture of any size is written in constant
//! memory. Files are written little-endian whatever the host, so the same scenario gives the
//! same bytes on every machine.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Classic pcap magic for microsecond timestamps.
const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
/// Snap length announced in file headers; no synthetic frame comes close.
pub const SNAPLEN: u32 = 262_144;

/// One packet writer, whatever the container: the generators only need to hand it frames.
pub trait PacketWrite {
    /// Writes one captured frame with its timestamp (microseconds since the Unix epoch).
    fn write_packet(&mut self, ts_us: u64, frame: &[u8]) -> io::Result<()>;
}

/// Writes a classic libpcap file: 24-byte file header, 16-byte record headers.
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header for `linktype` and returns the writer.
    pub fn new(mut out: W, linktype: u32) -> io::Result<Self> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&PCAP_MAGIC_US.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&linktype.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    /// Gives back the underlying writer (to finish compression, say).
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> PacketWrite for PcapWriter<W> {
    fn write_packet(&mut self, ts_us: u64, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len()).map_err(|_| io::Error::other("frame too large"))?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(frame)
    }
}

/// Writes a pcapng file with one section and one interface (microsecond resolution, the
/// pcapng default), one Enhanced Packet Block per frame.
pub struct PcapNgWriter<W: Write> {
    out: W,
}

/// Appends one pcapng option (code, length, value padded to 32 bits).
fn push_option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + pad4(value.len()), 0);
}

/// Padding that brings `len` to a multiple of four.
fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Writes a whole block: type, total length, body, total length.
fn write_block<W: Write>(out: &mut W, block_type: u32, body: &[u8]) -> io::Result<()> {
    let total = (12 + body.len()) as u32;
    out.write_all(&block_type.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())
}

impl<W: Write> PcapNgWriter<W> {
    /// Writes the Section Header Block and the Interface Description Block for `linktype`.
    pub fn new(mut out: W, linktype: u16) -> io::Result<Self> {
        let mut shb = Vec::with_capacity(64);
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&u64::MAX.to_le_bytes()); // section length unknown
        // shb_userappl: the generator's old name, kept so that committed captures do not change.
        push_option(&mut shb, 4, b"stripwatch synth");
        push_option(&mut shb, 0, &[]);
        write_block(&mut out, 0x0a0d_0d0a, &shb)?;

        let mut idb = Vec::with_capacity(32);
        idb.extend_from_slice(&linktype.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&SNAPLEN.to_le_bytes());
        push_option(&mut idb, 2, b"synth0"); // if_name
        push_option(&mut idb, 9, &[6]); // if_tsresol: 10^-6
        push_option(&mut idb, 0, &[]);
        write_block(&mut out, 1, &idb)?;
        Ok(PcapNgWriter { out })
    }

    /// Gives back the underlying writer (to finish compression, say).
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> PacketWrite for PcapNgWriter<W> {
    fn write_packet(&mut self, ts_us: u64, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len()).map_err(|_| io::Error::other("frame too large"))?;
        let pad = pad4(frame.len());
        let total = (32 + frame.len() + pad) as u32;
        let mut h = [0u8; 28];
        h[0..4].copy_from_slice(&6u32.to_le_bytes());
        h[4..8].copy_from_slice(&total.to_le_bytes());
        // interface id 0
        h[12..16].copy_from_slice(&((ts_us >> 32) as u32).to_le_bytes());
        h[16..20].copy_from_slice(&(ts_us as u32).to_le_bytes());
        h[20..24].copy_from_slice(&len.to_le_bytes());
        h[24..28].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(frame)?;
        self.out.write_all(&[0u8; 3][..pad])?;
        self.out.write_all(&total.to_le_bytes())
    }
}

/// Which container a capture is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// Classic libpcap, microsecond timestamps.
    Pcap,
    /// pcapng with one interface.
    PcapNg,
}

/// Which compression wraps the capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain file.
    None,
    /// gzip (`.gz`), as `tcpdump -w - | gzip` would make.
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
}

/// Container plus compression: everything needed to name and write a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFormat {
    /// pcap or pcapng.
    pub container: Container,
    /// none, gzip or zstd.
    pub compression: Compression,
}

impl FileFormat {
    /// Plain classic pcap, the default for scenarios.
    pub const PCAP: FileFormat = FileFormat {
        container: Container::Pcap,
        compression: Compression::None,
    };

    /// The file name extension (without the leading dot), e.g. `pcap.gz`.
    pub fn extension(self) -> &'static str {
        match (self.container, self.compression) {
            (Container::Pcap, Compression::None) => "pcap",
            (Container::Pcap, Compression::Gzip) => "pcap.gz",
            (Container::Pcap, Compression::Zstd) => "pcap.zst",
            (Container::PcapNg, Compression::None) => "pcapng",
            (Container::PcapNg, Compression::Gzip) => "pcapng.gz",
            (Container::PcapNg, Compression::Zstd) => "pcapng.zst",
        }
    }

    /// Guesses the format from a file name: `.gz`/`.zst` choose the compression, `.pcapng`
    /// (before it) chooses pcapng; anything else is classic pcap.
    pub fn from_path(path: &Path) -> FileFormat {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let (stem, compression) = if let Some(s) = name.strip_suffix(".gz") {
            (s, Compression::Gzip)
        } else if let Some(s) = name.strip_suffix(".zst") {
            (s, Compression::Zstd)
        } else {
            (name.as_str(), Compression::None)
        };
        let container = if stem.ends_with(".pcapng") {
            Container::PcapNg
        } else {
            Container::Pcap
        };
        FileFormat {
            container,
            compression,
        }
    }
}

/// A buffered file, possibly behind a compressor; `finish` flushes everything to disk.
pub enum Output {
    /// Plain buffered file.
    Plain(BufWriter<File>),
    /// gzip stream (deterministic header: mtime 0, no name).
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    /// Zstandard stream.
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
}

impl Output {
    /// Creates (truncates) `path` and wraps it in the requested compressor.
    pub fn create(path: &Path, compression: Compression) -> io::Result<Output> {
        let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
        Ok(match compression {
            Compression::None => Output::Plain(file),
            Compression::Gzip => Output::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(file, flate2::Compression::new(6)),
            ),
            Compression::Zstd => Output::Zstd(zstd::Encoder::new(file, 3)?),
        })
    }

    /// Ends the compressed stream (if any) and flushes the file.
    pub fn finish(self) -> io::Result<()> {
        let mut file = match self {
            Output::Plain(f) => f,
            Output::Gzip(g) => g.finish()?,
            Output::Zstd(z) => z.finish()?,
        };
        file.flush()
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Plain(f) => f.write(buf),
            Output::Gzip(g) => g.write(buf),
            Output::Zstd(z) => z.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::Plain(f) => f.write_all(buf),
            Output::Gzip(g) => g.write_all(buf),
            Output::Zstd(z) => z.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Plain(f) => f.flush(),
            Output::Gzip(g) => g.flush(),
            Output::Zstd(z) => z.flush(),
        }
    }
}

/// A capture file being written: the container writer over the (compressed) output. (The
/// analyzer's `stripwatch::capture::CaptureFile` is the reading side.)
pub enum CaptureWriter {
    /// Classic pcap.
    Pcap(PcapWriter<Output>),
    /// pcapng.
    PcapNg(PcapNgWriter<Output>),
}

impl CaptureWriter {
    /// Creates `path` in `format` with the given link type and writes the file header(s).
    pub fn create(path: &Path, format: FileFormat, linktype: u16) -> io::Result<CaptureWriter> {
        let out = Output::create(path, format.compression)?;
        Ok(match format.container {
            Container::Pcap => CaptureWriter::Pcap(PcapWriter::new(out, u32::from(linktype))?),
            Container::PcapNg => CaptureWriter::PcapNg(PcapNgWriter::new(out, linktype)?),
        })
    }

    /// Flushes and closes the file (ending any compressed stream).
    pub fn finish(self) -> io::Result<()> {
        match self {
            CaptureWriter::Pcap(w) => w.into_inner().finish(),
            CaptureWriter::PcapNg(w) => w.into_inner().finish(),
        }
    }
}

impl PacketWrite for CaptureWriter {
    fn write_packet(&mut self, ts_us: u64, frame: &[u8]) -> io::Result<()> {
        match self {
            CaptureWriter::Pcap(w) => w.write_packet(ts_us, frame),
            CaptureWriter::PcapNg(w) => w.write_packet(ts_us, frame),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::read_back;

    #[test]
    fn synth_pcap_round_trips_through_pcap_parser() {
        let mut w = PcapWriter::new(Vec::new(), 113).unwrap();
        w.write_packet(1_772_445_600_000_123, &[1, 2, 3]).unwrap();
        w.write_packet(1_772_445_600_500_000, &[4; 61]).unwrap();
        let bytes = w.into_inner();
        assert_eq!(bytes.len(), 24 + 16 + 3 + 16 + 61);
        let (lt, pkts) = read_back(&bytes);
        assert_eq!(lt, 113);
        assert_eq!(
            pkts,
            vec![
                (1_772_445_600_000_123, vec![1, 2, 3]),
                (1_772_445_600_500_000, vec![4; 61])
            ]
        );
    }

    #[test]
    fn synth_pcapng_round_trips_through_pcap_parser() {
        let mut w = PcapNgWriter::new(Vec::new(), 276).unwrap();
        w.write_packet(1_772_445_600_000_001, &[9; 5]).unwrap();
        w.write_packet(1_772_445_601_000_002, &[7; 8]).unwrap();
        let bytes = w.into_inner();
        assert_eq!(bytes.len() % 4, 0);
        let (lt, pkts) = read_back(&bytes);
        assert_eq!(lt, 276);
        assert_eq!(
            pkts,
            vec![
                (1_772_445_600_000_001, vec![9; 5]),
                (1_772_445_601_000_002, vec![7; 8])
            ]
        );
    }

    #[test]
    fn synth_file_format_follows_extension() {
        let f = FileFormat::from_path(Path::new("/x/big.pcapng.zst"));
        assert_eq!(
            f,
            FileFormat {
                container: Container::PcapNg,
                compression: Compression::Zstd
            }
        );
        assert_eq!(f.extension(), "pcapng.zst");
        assert_eq!(
            FileFormat::from_path(Path::new("a.pcap.gz")).compression,
            Compression::Gzip
        );
        assert_eq!(FileFormat::from_path(Path::new("a.cap")), FileFormat::PCAP);
    }
}
