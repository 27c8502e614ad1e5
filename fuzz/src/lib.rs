//! Small helpers shared by the fuzz targets: a reader that turns the fuzzer's bytes into
//! decisions (never failing: an exhausted input reads as zeros), and a chunker that cuts a byte
//! string into pieces whose sizes are themselves taken from the input.

/// Reads decisions from the front of the fuzz input. Once the input is exhausted every read
/// returns zero, so a target never has to handle "not enough bytes".
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Wraps the input.
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data }
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes left.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// The unread rest, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }

    /// One byte (0 when exhausted).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// Little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer when the input ends).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// True when `STRIPWATCH_FUZZ_ALLOW_KNOWN=1`: the targets then tolerate the findings already
/// reported (each check says which), so that a long campaign keeps exploring past them instead of
/// stopping at the first known one. Unset (the default), every check is strict.
pub fn allow_known() -> bool {
    static ALLOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOW.get_or_init(|| std::env::var("STRIPWATCH_FUZZ_ALLOW_KNOWN").is_ok_and(|v| v == "1"))
}

/// True when `STRIPWATCH_FUZZ_VERBOSE=1`: targets print what they do (for writing seeds).
pub fn verbose() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var("STRIPWATCH_FUZZ_VERBOSE").is_ok_and(|v| v == "1"))
}

/// Cuts `data` into consecutive pieces. The piece sizes come from `sizes` (one byte each,
/// cycling; a size byte of 0 means "one byte"), so the same payload can be replayed with many
/// different segmentations. Every byte of `data` ends up in exactly one piece, in order.
pub fn chunks<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0usize;
    while !rest.is_empty() {
        let n = if sizes.is_empty() {
            rest.len()
        } else {
            let s = sizes[i % sizes.len()];
            i += 1;
            // Small sizes are the interesting ones (splits inside headers and line ends); a
            // high bit scales up to exercise long pieces too.
            let n = usize::from(s & 0x7f).max(1);
            if s & 0x80 != 0 { n * 64 } else { n }
        };
        let n = n.min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_everything_in_order() {
        let data: Vec<u8> = (0..=255).collect();
        for sizes in [&[][..], &[0], &[1, 2, 3], &[0x81, 5]] {
            let joined: Vec<u8> = chunks(&data, sizes).concat();
            assert_eq!(joined, data);
        }
    }
}
