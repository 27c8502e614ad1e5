//! The compact JSON of one record, written into a byte buffer: the same bytes as
//! `serde_json::to_writer`, at a fraction of the cost.
//!
//! Why not serde_json itself: every record line is about 60 keys and as many short strings, and
//! serde_json writes each key and each string in three writes (quote, text, quote) through the
//! writer, with a table lookup per byte. On the dense benchmark capture that was 40% of the output
//! thread, the thread two cores wait for. This writer appends to a `Vec` that is reserved once
//! per string and scans strings eight bytes at a time for the three things JSON must escape.
//!
//! Identity with serde_json is the contract: the unit tests and the `json_writer` fuzz target
//! compare the two on every shape serde can hand a serializer, and `scripts/compare-outputs.sh`
//! on every capture. Floats are written by serde_json itself. Anything this writer does not
//! handle exactly as serde_json does (a map key that is not a string, an integer, a bool or a
//! char) is declined: [`write`] returns `Err` and the caller writes that record with serde_json.

use serde::Serialize;
use serde::ser::{self, Impossible};
use std::fmt::Display;

/// Why the fast writer did not write a value (the caller then uses serde_json, which writes
/// it or reports the error in its own words).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Declined(String);

impl ser::Error for Declined {
    fn custom<T: Display>(msg: T) -> Self {
        Declined(msg.to_string())
    }
}

/// Appends the compact JSON of `value` to `out`. On `Err`, `out` holds a partial value: the
/// caller truncates it.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Declined> {
    value.serialize(&mut Writer { out })
}

/// What each byte turns into inside a JSON string, as serde_json writes it: 0 for itself, a
/// letter for its two-byte escape (`\n`), `u` for `\u00XX` (lowercase hex).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Whether any of the eight bytes of `w` is a control character, `"` or `\` (exact, no false
/// positives: the classic `haszero`/`hasless` word tests).
#[inline]
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (control | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\'))))
        != 0
}

/// Appends `s` as a JSON string. Record strings are short (a dozen bytes on average) and
/// almost never need an escape, so the common path is one word test per eight bytes and one
/// copy.
#[inline]
fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if is_clean(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    } else {
        write_escaped(out, bytes);
    }
}

/// Whether no byte of `bytes` needs an escape.
#[inline]
fn is_clean(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        if needs_escape(u64::from_le_bytes(w)) {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| ESCAPE[usize::from(b)] == 0)
}

/// The slow path of [`write_str`]: a string with something to escape.
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 8);
    out.push(b'"');
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let e = ESCAPE[usize::from(b)];
        if e != 0 {
            out.extend_from_slice(&bytes[clean_from..i]);
            write_escape(out, b, e);
            clean_from = i + 1;
        }
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

#[inline]
fn write_escape(out: &mut Vec<u8>, byte: u8, escape: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if escape == b'u' {
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', escape]);
    }
}

fn write_integer<I: itoa::Integer>(out: &mut Vec<u8>, n: I) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The serializer: one value appended to `out`.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

/// An array or object being written: whether a comma comes before the next element.
struct Compound<'w, 'a> {
    writer: &'w mut Writer<'a>,
    first: bool,
}

impl Compound<'_, '_> {
    fn comma(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.writer.out.push(b',');
        }
    }
}

impl<'w, 'a> Writer<'a> {
    fn open(&'w mut self, bracket: u8) -> Compound<'w, 'a> {
        self.out.push(bracket);
        Compound {
            writer: self,
            first: true,
        }
    }

    /// `{"variant":` before the value of an externally tagged enum variant.
    fn variant_key(&mut self, variant: &str) {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
    }

    fn float<F: Serialize>(&mut self, v: F) -> Result<(), Declined> {
        // serde_json's own formatting (and `null` for NaN and the infinities).
        serde_json::to_writer(&mut *self.out, &v).map_err(|e| Declined(e.to_string()))
    }
}

macro_rules! integers {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<(), Declined> {
            write_integer(self.out, v);
            Ok(())
        })*
    };
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = Declined;
    type SerializeSeq = Compound<'w, 'a>;
    type SerializeTuple = Compound<'w, 'a>;
    type SerializeTupleStruct = Compound<'w, 'a>;
    type SerializeTupleVariant = Compound<'w, 'a>;
    type SerializeMap = Compound<'w, 'a>;
    type SerializeStruct = Compound<'w, 'a>;
    type SerializeStructVariant = Compound<'w, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Declined> {
        self.out
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
        Ok(())
    }

    integers!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128);

    fn serialize_f32(self, v: f32) -> Result<(), Declined> {
        self.float(v)
    }

    fn serialize_f64(self, v: f64) -> Result<(), Declined> {
        self.float(v)
    }

    fn serialize_char(self, v: char) -> Result<(), Declined> {
        write_str(self.out, v.encode_utf8(&mut [0u8; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Declined> {
        write_str(self.out, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Declined> {
        // As serde_json: an array of numbers.
        let mut seq = self.open(b'[');
        for b in v {
            seq.comma();
            write_integer(seq.writer.out, *b);
        }
        seq.writer.out.push(b']');
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Declined> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Declined> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Declined> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Declined> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Declined> {
        write_str(self.out, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Declined> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Declined> {
        self.variant_key(variant);
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'w, 'a>, Declined> {
        Ok(self.open(b'['))
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'w, 'a>, Declined> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'w, 'a>, Declined> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'w, 'a>, Declined> {
        self.variant_key(variant);
        Ok(self.open(b'['))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'w, 'a>, Declined> {
        Ok(self.open(b'{'))
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'w, 'a>, Declined> {
        Ok(self.open(b'{'))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'w, 'a>, Declined> {
        self.variant_key(variant);
        Ok(self.open(b'{'))
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Declined;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Declined> {
        self.comma();
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result<(), Declined> {
        self.writer.out.push(b']');
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = Declined;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Declined> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<(), Declined> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Declined;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Declined> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<(), Declined> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Declined;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Declined> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<(), Declined> {
        self.writer.out.extend_from_slice(b"]}");
        Ok(())
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Declined;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Declined> {
        self.comma();
        key.serialize(KeyWriter {
            out: &mut *self.writer.out,
        })?;
        self.writer.out.push(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Declined> {
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result<(), Declined> {
        self.writer.out.push(b'}');
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Declined;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Declined> {
        self.comma();
        write_str(self.writer.out, key);
        self.writer.out.push(b':');
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result<(), Declined> {
        ser::SerializeMap::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Declined;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Declined> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }

    fn end(self) -> Result<(), Declined> {
        self.writer.out.extend_from_slice(b"}}");
        Ok(())
    }
}

/// A map key. serde_json writes strings, chars and unit variants as strings, and integers and
/// bools quoted; everything else (floats among them, which its versions write differently) is
/// declined and left to serde_json.
struct KeyWriter<'a> {
    out: &'a mut Vec<u8>,
}

macro_rules! quoted_integers {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<(), Declined> {
            self.out.push(b'"');
            write_integer(self.out, v);
            self.out.push(b'"');
            Ok(())
        })*
    };
}

fn not_a_key<T>() -> Result<T, Declined> {
    Err(Declined(
        "a map key this writer leaves to serde_json".into(),
    ))
}

impl ser::Serializer for KeyWriter<'_> {
    type Ok = ();
    type Error = Declined;
    type SerializeSeq = Impossible<(), Declined>;
    type SerializeTuple = Impossible<(), Declined>;
    type SerializeTupleStruct = Impossible<(), Declined>;
    type SerializeTupleVariant = Impossible<(), Declined>;
    type SerializeMap = Impossible<(), Declined>;
    type SerializeStruct = Impossible<(), Declined>;
    type SerializeStructVariant = Impossible<(), Declined>;

    fn serialize_str(self, v: &str) -> Result<(), Declined> {
        write_str(self.out, v);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Declined> {
        write_str(self.out, v.encode_utf8(&mut [0u8; 4]));
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Declined> {
        write_str(self.out, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Declined> {
        value.serialize(self)
    }

    fn serialize_bool(self, v: bool) -> Result<(), Declined> {
        self.out.extend_from_slice(if v {
            b"\"true\"" as &[u8]
        } else {
            b"\"false\""
        });
        Ok(())
    }

    quoted_integers!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128);

    fn serialize_f32(self, _v: f32) -> Result<(), Declined> {
        not_a_key()
    }

    fn serialize_f64(self, _v: f64) -> Result<(), Declined> {
        not_a_key()
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<(), Declined> {
        not_a_key()
    }

    fn serialize_none(self) -> Result<(), Declined> {
        not_a_key()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Declined> {
        not_a_key()
    }

    fn serialize_unit(self) -> Result<(), Declined> {
        not_a_key()
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Declined> {
        not_a_key()
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Declined> {
        not_a_key()
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Declined> {
        not_a_key()
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Declined> {
        not_a_key()
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Declined> {
        not_a_key()
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Declined> {
        not_a_key()
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Declined> {
        not_a_key()
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Declined> {
        not_a_key()
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Declined> {
        not_a_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    /// The fast writer's bytes, or `None` where it declines.
    fn fast<T: Serialize + ?Sized>(v: &T) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        write(&mut out, v).ok().map(|()| out)
    }

    fn same<T: Serialize + ?Sized + std::fmt::Debug>(v: &T) {
        let theirs = serde_json::to_vec(v).unwrap();
        let ours = fast(v).unwrap_or_else(|| panic!("declined {v:?}"));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "{v:?}"
        );
    }

    #[derive(Serialize, Debug)]
    struct Inner {
        a: u8,
        #[serde(rename = "b\"q")]
        b: Option<String>,
    }

    #[derive(Serialize, Debug)]
    enum Shape {
        Unit,
        Newtype(i32),
        Tuple(u8, String),
        Struct { x: f64, y: Vec<u16> },
    }

    #[derive(Serialize, Debug)]
    struct Unit;

    #[derive(Serialize, Debug)]
    struct Wrapper(String);

    #[derive(Serialize, Debug)]
    struct Flattening {
        id: &'static str,
        #[serde(flatten)]
        inner: Inner,
        shapes: Vec<Shape>,
        unit: Unit,
        wrapped: Wrapper,
        pair: (i64, bool),
        #[serde(with = "serde_bytes_as_seq")]
        raw: Vec<u8>,
        evidence: serde_json::Value,
        ip: std::net::IpAddr,
        nothing: Option<u8>,
        ch: char,
    }

    mod serde_bytes_as_seq {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }

    #[test]
    fn writes_every_shape_as_serde_json_does() {
        same(&Flattening {
            id: "S1",
            inner: Inner {
                a: 7,
                b: Some("x\ny".into()),
            },
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(-3),
                Shape::Tuple(1, "t".into()),
                Shape::Struct {
                    x: 0.1,
                    y: vec![1, 2],
                },
            ],
            unit: Unit,
            wrapped: Wrapper("w".into()),
            pair: (i64::MIN, true),
            raw: vec![0, 255, 16],
            evidence: serde_json::json!({
                "n": null, "f": 1.5e300, "neg": -0.0, "big": u64::MAX, "s": "\u{1}é\u{7f}",
                "list": [1, "two", {"three": []}, {}], "nested": {"k": {"k": false}},
            }),
            ip: "2001:db8::1".parse().unwrap(),
            nothing: None,
            ch: '"',
        });
        same(&Vec::<u8>::new());
        same(&BTreeMap::<String, u8>::new());
        same(&f64::NAN);
        same(&f32::INFINITY);
        same(&u128::MAX);
        same(&i128::MIN);
        same(&());
    }

    #[test]
    fn writes_keys_as_serde_json_does_and_declines_the_rest() {
        let ints: BTreeMap<i32, &str> = [(-1, "a"), (2, "b")].into();
        same(&ints);
        let bools: BTreeMap<bool, u8> = [(false, 0), (true, 1)].into();
        same(&bools);
        let chars: BTreeMap<char, u8> = [('\\', 0), ('x', 1)].into();
        same(&chars);
        let tuples: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(fast(&tuples).is_none());
        assert!(serde_json::to_vec(&tuples).is_err());
    }

    #[test]
    fn escapes_every_byte_and_position_as_serde_json_does() {
        // Every ASCII byte alone, and at every offset of a word around clean text.
        for b in 0u8..=0x7f {
            let c = char::from(b);
            same(&c.to_string());
            for pad in 0..17 {
                same(&format!("{}{c}{}", "a".repeat(pad), "b".repeat(16 - pad)));
            }
        }
        // A fixed pseudo-random mix of control characters, quotes, backslashes, ASCII and
        // multi-byte characters.
        let alphabet = [
            "a", "Z", "0", " ", "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1f}", "\u{7f}", "é",
            "€", "😀", "/", "<",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut s = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for k in 0..(x % 40) {
                s.push_str(alphabet[((x >> (k % 48)) as usize + k as usize) % alphabet.len()]);
            }
            same(&s);
        }
    }

    #[test]
    fn the_word_test_is_exact() {
        for b in 0u8..=255 {
            let escaped = b < 0x20 || b == b'"' || b == b'\\';
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                assert_eq!(
                    needs_escape(u64::from_le_bytes(w)),
                    escaped,
                    "{b:#x} at {pos}"
                );
            }
        }
    }
}
