//! The NDJSON writer (`stripwatch::sink::json`) against serde_json, on hostile text: every byte
//! of a string that came off the wire (banners, EHLO names, DNS names, certificate subjects) is
//! written through it.
//!
//! The input is used three ways: as a (lossily decoded) string on its own and inside a record-
//! shaped struct, and, when it parses, as a JSON document (any nesting of objects, arrays,
//! numbers, strings). Checks: the writer gives exactly serde_json's bytes, or declines.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;

#[derive(Serialize)]
struct Shaped<'a> {
    text: &'a str,
    list: Vec<&'a str>,
    number: u64,
    signed: i32,
    maybe: Option<&'a str>,
    flag: bool,
}

fn same<T: Serialize>(value: &T) {
    let theirs = serde_json::to_vec(value);
    let mut ours = Vec::new();
    if stripwatch::sink::json::write(&mut ours, value).is_ok() {
        assert_eq!(Some(ours), theirs.ok());
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    same(&text.as_ref());
    let number = data.iter().fold(0u64, |n, &b| n.rotate_left(7) ^ u64::from(b));
    same(&Shaped {
        text: &text,
        list: text.split(',').collect(),
        number,
        signed: number as i32,
        maybe: (number % 2 == 0).then_some(&text),
        flag: number % 3 == 0,
    });
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        same(&value);
    }
});
