//! SMTP line-level parsers: `smtp::reply::{parse_reply_line, parse_command, parse_bdat}`,
//! `smtp::capability::{keyword, classify, is_masked_banner}` and `smtp::line::LineSplitter`.
//!
//! Input layout: byte 0 picks the splitter's line limit, byte 1 is the number of chunk-size bytes
//! that follow (mod 32), then those sizes, then the text. Every parser runs on the whole text and
//! on each of its lines; the splitter runs on the text cut at the chunk sizes and must give the
//! same lines as when it gets the text in one piece, each line at most the limit long and
//! without a line feed.

#![no_main]

use fuzz_util::{Bytes, allow_known, chunks};
use libfuzzer_sys::fuzz_target;
use stripwatch::smtp::capability::{self, TokenClass};
use stripwatch::smtp::line::LineSplitter;
use stripwatch::smtp::reply::{self, Verb};

fn parsers(line: &[u8]) {
    if let Some(r) = reply::parse_reply_line(line) {
        assert!((100..600).contains(&r.code));
        assert!(r.text.len() + 3 <= line.len());
    }
    if let Some(c) = reply::parse_command(line) {
        assert!(c.args.len() < line.len() || line.is_empty());
        if c.verb == Verb::Bdat {
            let _ = reply::parse_bdat(c.args);
        }
        let _ = reply::verb_text(line);
    }
    let _ = reply::parse_bdat(line);
    let text = String::from_utf8_lossy(line);
    let kw = capability::keyword(&text);
    assert!(text.starts_with(kw));
    let class = capability::classify(kw);
    if class == TokenClass::Starttls {
        assert!(kw.eq_ignore_ascii_case("STARTTLS"));
    }
    let _ = class.is_overwrite();
    let _ = capability::classify(&text);
    let _ = capability::is_masked_banner(&text);
}

/// Runs the splitter over `pieces`, returning (line, overlong) in order and whether a partial
/// line is left.
fn split(max_line: usize, pieces: &[&[u8]]) -> (Vec<(Vec<u8>, bool)>, bool) {
    let mut sp = LineSplitter::new(max_line);
    let mut out = Vec::new();
    for piece in pieces {
        let mut rest: &[u8] = piece;
        while let Some(line) = sp.next_line(rest) {
            assert!(line.consumed >= 1 && line.consumed <= rest.len());
            assert_eq!(rest[line.consumed - 1], b'\n');
            assert!(line.bytes.len() <= max_line, "line longer than the limit");
            assert!(!line.bytes.contains(&b'\n'));
            out.push((line.bytes.to_vec(), line.overlong));
            let c = line.consumed;
            rest = &rest[c..];
        }
    }
    (out, sp.has_partial())
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes::new(data);
    let max_line = match b.u8() {
        0 => 0,
        n @ 1..=250 => usize::from(n),
        _ => 2048,
    };
    let n_sizes = usize::from(b.u8() % 32);
    let sizes = b.take(n_sizes).to_vec();
    let text = b.take_rest();

    parsers(text);
    for line in text.split(|c| *c == b'\n') {
        parsers(line.strip_suffix(b"\r").unwrap_or(line));
    }

    let (whole, whole_partial) = split(max_line, &[text]);
    let pieces = chunks(text, &sizes);
    let (chunked, chunked_partial) = split(max_line, &pieces);
    assert_eq!(
        whole.len(),
        chunked.len(),
        "a different number of lines depending on segmentation"
    );
    let raw_lines: Vec<&[u8]> = text.split(|c| *c == b'\n').collect();
    for (i, (w, c)) in whole.iter().zip(&chunked).enumerate() {
        if w != c && allow_known() && known_cr_at_limit(raw_lines[i], max_line) {
            // KNOWN (reported): a line that straddles segments is cut at the limit *before* its
            // CR is trimmed, a line inside one segment after; a CR at the limit therefore makes
            // the result depend on segmentation (src/smtp/line.rs, next_line).
            continue;
        }
        assert_eq!(
            w, c,
            "line {i} differs depending on segmentation (max_line {max_line}): \
             whole {:?}, chunked {:?}",
            String::from_utf8_lossy(&w.0),
            String::from_utf8_lossy(&c.0)
        );
    }
    assert_eq!(whole_partial, chunked_partial);
});

/// The known segmentation dependence: a CR at index `max_line - 1` or `max_line` of the raw line.
fn known_cr_at_limit(raw: &[u8], max_line: usize) -> bool {
    [max_line.wrapping_sub(1), max_line]
        .iter()
        .any(|i| raw.get(*i) == Some(&b'\r'))
}
