//! The compact JSON of one record, written into a byte buffer: the same bytes as
//! `serde_json::to_writer`, at a fraction of the cost.
//!
//! Why not serde_json itself: every record line is about 60 keys and as many short strings, and
//! serde_json writes each key and each string in three writes (quote, text, quote) through the
//! writer, with a table lookup per byte. On the dense benchmark capture that was 40% of the output
//! thread, the thread two cores wait for. This writer appends to a `Vec`: each string (with its
//! comma, quotes and colon, for a key) is one `reserve`, then tested for the three things JSON
//! must escape and copied in the same pass, eight bytes at a time, straight into the spare
//! capacity ([`append_clean`]), with no `memcpy` call.
//!
//! Identity with serde_json is the contract: the unit tests and the `json_writer` fuzz target
//! compare the two on every shape serde can hand a serializer, and `scripts/compare-outputs.sh`
//! on every capture. Floats are written by serde_json itself. Anything this writer does not
//! handle exactly as serde_json does (a map key that is not a string, an integer, a bool or a
//! char) is declined: [`write`] returns `Err` and the caller writes that record with serde_json.

use serde::Serialize;
use serde::ser::{self, Impossible};
use std::fmt::Display;
use std::mem::MaybeUninit;

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

/// The high bit of each byte of a word.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `w` is a control character, `"` or `\` (exact, no false
/// positives: the classic `haszero`/`hasless` word tests).
#[inline]
fn needs_escape(w: u64) -> bool {
    escape_bits(w) & HIGH != 0
}

/// Whether any of the sixteen bytes of two words needs an escape: three byte-wise SSE2
/// compares (equal to `"`, equal to `\`, at most 0x1f), where the word tests cost about
/// twice as many instructions.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn dirty16(lo: u64, hi: u64) -> bool {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8,
    };
    // SAFETY: these intrinsics only compute on registers (no memory access), and SSE2, the
    // one target feature they need, is enabled for this build (the `cfg` above; every x86_64
    // CPU has it).
    unsafe {
        let v = _mm_set_epi64x(hi.cast_signed(), lo.cast_signed());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"'.cast_signed()));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\'.cast_signed()));
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) != 0
    }
}

/// [`dirty16`] without SSE2: the word tests.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn dirty16(lo: u64, hi: u64) -> bool {
    (escape_bits(lo) | escape_bits(hi)) & HIGH != 0
}

/// The word tests of [`needs_escape`] before their final mask: its high bits say which bytes
/// need an escape (exactly when the lowest byte does; above a set one they may be set too,
/// which is fine for a yes or no). Several words can be OR-ed and masked once.
#[inline(always)]
fn escape_bits(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    control | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\')))
}

/// Appends `s` as a JSON value string (`"s"`).
#[inline]
fn write_str(out: &mut Vec<u8>, s: &str) {
    if !append_clean(out, *b"\"", s.as_bytes(), *b"\"") {
        write_escaped(out, s.as_bytes(), false, false);
    }
}

/// Appends `s` as an object key: `"s":`, or `,"s":` when `comma` (not the first entry). The
/// separators go in with the key, in the same reserve and the same pass: records have about 60
/// keys a line.
#[inline]
fn write_key(out: &mut Vec<u8>, comma: bool, s: &str) {
    let written = if comma {
        append_clean(out, *b",\"", s.as_bytes(), *b"\":")
    } else {
        append_clean(out, *b"\"", s.as_bytes(), *b"\":")
    };
    if !written {
        write_escaped(out, s.as_bytes(), comma, true);
    }
}

/// Appends `head`, `text` and `tail` if no byte of `text` needs an escape, and says whether
/// it did; on `false` nothing was appended.
///
/// Nearly every string of a record takes this path, and they are short (a dozen bytes on
/// average): a scan, three capacity checks and a libc `memcpy` call per string were most of
/// the writer's cost. Here there is one `reserve`, and [`copy_clean`] tests and copies the
/// text in the same pass, a word at a time, straight into the spare capacity; the length is
/// set only when the whole text was clean.
#[inline(always)]
fn append_clean<const H: usize, const T: usize>(
    out: &mut Vec<u8>,
    head: [u8; H],
    text: &[u8],
    tail: [u8; T],
) -> bool {
    let total = H + text.len() + T;
    out.reserve(total);
    let Some(spare) = out.spare_capacity_mut().get_mut(..total) else {
        // Not reached: `reserve` left at least `total` bytes of spare capacity.
        return false;
    };
    let (spare_head, rest) = spare.split_at_mut(H);
    let (spare_text, spare_tail) = rest.split_at_mut(text.len());
    spare_head.write_copy_of_slice(&head);
    if !copy_clean(spare_text, text) {
        return false;
    }
    spare_tail.write_copy_of_slice(&tail);
    let len = out.len() + total;
    // SAFETY: `len` is within the capacity (`spare` had `total` bytes), and the `total` bytes
    // after the old length are initialized: the head and the tail just above, and every byte of
    // the text by `copy_clean`, which returned true.
    unsafe { out.set_len(len) };
    true
}

/// Copies `text` into `dst` (of the same length) and returns true, unless a byte of it needs
/// an escape: then it returns false, with `dst` partly written. Sixteen bytes at a time (two
/// words, tested together by [`dirty16`]), the last block overlapping the one before it; 8 to
/// 15 bytes as two overlapping words; 4 to 7 as two overlapping four-byte words; 1 to 3 as the
/// first, middle and last byte.
#[inline(always)]
fn copy_clean(dst: &mut [MaybeUninit<u8>], text: &[u8]) -> bool {
    let n = text.len();
    if n >= 16 {
        // Copied first and judged once at the end: a dirty string (rare) only costs the copy.
        let mut dirty = false;
        let mut i = 0;
        while i + 16 < n {
            let (a, b) = (load::<8>(text, i), load::<8>(text, i + 8));
            dirty |= dirty16(u64::from_ne_bytes(a), u64::from_ne_bytes(b));
            store(dst, i, a);
            store(dst, i + 8, b);
            i += 16;
        }
        let (a, b) = (load::<8>(text, n - 16), load::<8>(text, n - 8));
        dirty |= dirty16(u64::from_ne_bytes(a), u64::from_ne_bytes(b));
        store(dst, n - 16, a);
        store(dst, n - 8, b);
        if dirty {
            return false;
        }
    } else if n >= 8 {
        let (a, b) = (load::<8>(text, 0), load::<8>(text, n - 8));
        if dirty16(u64::from_ne_bytes(a), u64::from_ne_bytes(b)) {
            return false;
        }
        store(dst, 0, a);
        store(dst, n - 8, b);
    } else if n >= 4 {
        let (a, b) = (load::<4>(text, 0), load::<4>(text, n - 4));
        let w = u64::from(u32::from_ne_bytes(a)) | (u64::from(u32::from_ne_bytes(b)) << 32);
        if needs_escape(w) {
            return false;
        }
        store(dst, 0, a);
        store(dst, n - 4, b);
    } else if n > 0 {
        let (a, m, z) = (text[0], text[n / 2], text[n - 1]);
        if ESCAPE[usize::from(a)] | ESCAPE[usize::from(m)] | ESCAPE[usize::from(z)] != 0 {
            return false;
        }
        store(dst, 0, [a]);
        store(dst, n / 2, [m]);
        store(dst, n - 1, [z]);
    }
    true
}

/// `K` bytes of `s` from `at` (within bounds at every call site).
#[inline(always)]
fn load<const K: usize>(s: &[u8], at: usize) -> [u8; K] {
    let mut w = [0; K];
    w.copy_from_slice(&s[at..at + K]);
    w
}

/// Writes `bytes` into `dst` at `at` (within bounds at every call site).
#[inline(always)]
fn store<const K: usize>(dst: &mut [MaybeUninit<u8>], at: usize, bytes: [u8; K]) {
    dst[at..at + K].write_copy_of_slice(&bytes);
}

/// The slow path of [`write_str`] and [`write_key`]: a string with something to escape (with
/// its comma and colon, for a key).
#[cold]
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8], comma: bool, colon: bool) {
    out.reserve(bytes.len() + 10);
    if comma {
        out.push(b',');
    }
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
    if colon {
        out.push(b':');
    }
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

/// Appends the decimal digits of `n` (copied as a string is, without a `memcpy` call).
#[inline]
fn write_integer<I: itoa::Integer>(out: &mut Vec<u8>, n: I) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    // Digits and a minus sign never need an escape, so this always appends.
    let appended = append_clean(out, [], digits, []);
    debug_assert!(appended);
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
        write_key(self.out, false, variant);
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
        // Two fixed-length copies (a copy of either length would be a `memcpy` call).
        if v {
            self.out.extend_from_slice(b"true");
        } else {
            self.out.extend_from_slice(b"false");
        }
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
        let comma = !self.first;
        self.first = false;
        key.serialize(KeyWriter {
            out: &mut *self.writer.out,
            comma,
        })
    }

    /// What the derived `Serialize` of a struct with a flattened field calls for every field
    /// (the records' `client` and `server` endpoints are flattened), so the map path is as hot
    /// as the struct path.
    #[inline]
    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), Declined> {
        ser::SerializeMap::serialize_key(self, key)?;
        value.serialize(&mut *self.writer)
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
        write_key(self.writer.out, !self.first, key);
        self.first = false;
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

/// A map key, with the comma before it (unless it is the first) and the colon after it.
/// serde_json writes strings, chars and unit variants as strings, and integers and bools
/// quoted; everything else (floats among them, which its versions write differently) is
/// declined and left to serde_json.
struct KeyWriter<'a> {
    out: &'a mut Vec<u8>,
    comma: bool,
}

impl KeyWriter<'_> {
    /// A key that is not a string: `,"` + `write(out)` + `":`.
    fn quoted(self, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), Declined> {
        if self.comma {
            self.out.push(b',');
        }
        self.out.push(b'"');
        write(self.out);
        self.out.extend_from_slice(b"\":");
        Ok(())
    }
}

macro_rules! quoted_integers {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<(), Declined> {
            self.quoted(|out| write_integer(out, v))
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
        write_key(self.out, self.comma, v);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Declined> {
        write_key(self.out, self.comma, v.encode_utf8(&mut [0u8; 4]));
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Declined> {
        write_key(self.out, self.comma, variant);
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
        self.quoted(|out| out.extend_from_slice(if v { b"true" as &[u8] } else { b"false" }))
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
    fn every_length_and_position_as_value_and_key() {
        // The short-string paths (1-3, 4-7, 8 and more bytes, the overlapping last word) and
        // the key path with and without its comma, with one byte to escape at each position
        // or none, and with a multi-byte character across each word boundary.
        for len in 0..=40 {
            let clean = "k".repeat(len);
            let mut cases = vec![clean.clone()];
            for pos in 0..len {
                for bad in ['"', '\\', '\n', '\u{1f}', '\u{0}'] {
                    let mut s: Vec<char> = clean.chars().collect();
                    s[pos] = bad;
                    cases.push(s.into_iter().collect());
                }
                let mut s = clean.clone();
                s.replace_range(pos..=pos, "\u{e9}");
                cases.push(s);
            }
            for s in cases {
                same(&s);
                same(&[s.as_str(), "tail"]);
                let map: BTreeMap<&str, &str> = [(s.as_str(), "v"), ("\u{7f}", &s)].into();
                same(&map);
                let one: BTreeMap<&str, u8> = [(s.as_str(), 1)].into();
                same(&one);
            }
        }
        same(&i64::MIN);
        same(&u64::MAX);
        same(&(0u8, -1i16, 12_345_678u32, false, true));
    }

    #[test]
    fn the_two_word_test_is_exact() {
        for b in 0u8..=255 {
            let escaped = b < 0x20 || b == b'"' || b == b'\\';
            for pos in 0..16 {
                let mut w = [b'a'; 16];
                w[pos] = b;
                let [lo, hi] = [&w[..8], &w[8..]].map(|h| {
                    let mut word = [0; 8];
                    word.copy_from_slice(h);
                    u64::from_ne_bytes(word)
                });
                assert_eq!(dirty16(lo, hi), escaped, "{b:#x} at {pos}");
            }
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
