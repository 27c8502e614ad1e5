//! Splits a byte stream into lines without unbounded memory: complete lines are borrowed from the
//! segment; only a line that straddles segments is copied, and only up to the limit. A line
//! longer than the limit is cut there and flagged, the rest is discarded up to its end.

/// Bytes reserved for the first partial line of a stream (SMTP lines are mostly shorter).
const TYPICAL_LINE: usize = 256;

/// Accumulates at most `max_line` bytes of one partial line.
pub struct LineSplitter {
    buf: Vec<u8>,
    max_line: usize,
    overlong: bool,
    /// The buffer holds a line already handed out; clear it before the next use.
    stale: bool,
}

/// One line, without its line ending.
pub struct Line<'a> {
    /// The bytes of the line (cut at the limit if `overlong`).
    pub bytes: &'a [u8],
    /// The line was longer than the limit.
    pub overlong: bool,
    /// How many input bytes this call consumed (to advance the caller's cursor).
    pub consumed: usize,
}

impl LineSplitter {
    /// A splitter that keeps at most `max_line` bytes of a line.
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            buf: Vec::new(),
            max_line,
            overlong: false,
            stale: false,
        }
    }

    /// True when part of a line is waiting for its end.
    pub fn has_partial(&self) -> bool {
        (!self.stale && !self.buf.is_empty()) || self.overlong
    }

    /// Forgets a partial line (after a gap, its continuation is lost).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.overlong = false;
        self.stale = false;
    }

    /// Takes the next line from `input`. Returns `None` when `input` ended without a line end;
    /// its bytes are then kept (bounded) for the next call.
    pub fn next_line<'a>(&'a mut self, input: &'a [u8]) -> Option<Line<'a>> {
        if self.stale {
            self.buf.clear();
            self.stale = false;
        }
        match memchr::memchr(b'\n', input) {
            Some(nl) => {
                let consumed = nl + 1;
                let head = &input[..nl];
                if !self.has_partial() {
                    let (bytes, overlong) = cut(trim_cr(head), self.max_line);
                    return Some(Line {
                        bytes,
                        overlong,
                        consumed,
                    });
                }
                self.append(head);
                let dropped = std::mem::take(&mut self.overlong);
                let (bytes, cut_here) = cut(trim_cr(&self.buf), self.max_line);
                self.stale = true;
                Some(Line {
                    bytes,
                    overlong: dropped || cut_here,
                    consumed,
                })
            }
            None => {
                self.append(input);
                None
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        // One byte more than a line may hold: room for the CR of a line that is exactly at the
        // limit, so that where the segments were cut does not change the result.
        let room = (self.max_line + 1).saturating_sub(self.buf.len());
        if self.buf.capacity() == 0 {
            // Most partial lines are short: one allocation of a typical line's size instead of
            // a series of doublings from eight bytes.
            self.buf.reserve((self.max_line + 1).min(TYPICAL_LINE));
        }
        if bytes.len() > room {
            self.overlong = true;
        }
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn cut(line: &[u8], max: usize) -> (&[u8], bool) {
    if line.len() > max {
        (&line[..max], true)
    } else {
        (line, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(sp: &mut LineSplitter, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for chunk in chunks {
            let mut rest: &[u8] = chunk;
            while let Some(l) = sp.next_line(rest) {
                out.push((String::from_utf8_lossy(l.bytes).into_owned(), l.overlong));
                let c = l.consumed;
                rest = &rest[c..];
            }
        }
        out
    }

    #[test]
    fn joins_split_lines_and_cuts_long_ones() {
        let mut sp = LineSplitter::new(8);
        let got = lines(
            &mut sp,
            &[
                b"250-PIPE",
                b"LINING\r\n250 OK\r",
                b"\n",
                b"abcdefghijkl\r\nx\n",
            ],
        );
        assert_eq!(
            got,
            vec![
                ("250-PIPE".to_string(), true),
                ("250 OK".to_string(), false),
                ("abcdefgh".to_string(), true),
                ("x".to_string(), false)
            ]
        );
        assert!(!sp.has_partial());
    }

    #[test]
    fn a_cr_at_the_limit_is_not_overlong_however_it_is_cut() {
        for split in 0..=9 {
            let text = b"abcdefgh\r\n";
            let mut sp = LineSplitter::new(8);
            let got = lines(&mut sp, &[&text[..split], &text[split..]]);
            assert_eq!(
                got,
                vec![("abcdefgh".to_string(), false)],
                "split at {split}"
            );
        }
    }

    #[test]
    fn partial_memory_is_bounded() {
        let mut sp = LineSplitter::new(16);
        for _ in 0..1000 {
            assert!(sp.next_line(&[b'a'; 1000]).is_none());
        }
        assert!(sp.buf.len() <= 17);
    }
}
