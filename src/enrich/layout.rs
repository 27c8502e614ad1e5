//! The shapes a database record can have. Free and commercial `.mmdb` files agree on the container
//! but not on the record: MaxMind (GeoLite2/GeoIP2 Country, City, ASN) and DB-IP Lite nest the
//! country under `country.iso_code` (with `registered_country.iso_code` where the address is
//! not located) and name the AS `autonomous_system_number`/`autonomous_system_organization`;
//! ip-location-db puts a flat `country_code` at the top; IPinfo Lite has `country_code` plus
//! `country` (the name), IPinfo's older country+ASN file has `country` as the code, and both
//! write the AS as a string `"AS15169"` in `asn` with `as_name`. One record type reads them all,
//! borrowing strings from the database so that decoding allocates nothing.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// Longest AS organisation kept, in bytes: a record field must stay bounded whatever the
/// database holds.
pub const MAX_ORG_BYTES: usize = 256;

/// One database record, whatever its layout; fields it does not have stay `None`.
#[derive(Debug, Default, Deserialize)]
pub struct GeoRecord<'a> {
    /// MaxMind nested map (`{iso_code, names, ...}`) or a flat string (code or name).
    #[serde(borrow, default)]
    country: Option<CountryField<'a>>,
    /// MaxMind: where the block is registered, used when `country` is absent.
    #[serde(borrow, default)]
    registered_country: Option<CountryField<'a>>,
    /// ip-location-db and IPinfo Lite.
    #[serde(borrow, default)]
    country_code: Option<CountryField<'a>>,
    /// MaxMind, DB-IP and ip-location-db ASN files.
    #[serde(default)]
    autonomous_system_number: Option<AsNumber>,
    /// MaxMind, DB-IP and ip-location-db ASN files.
    #[serde(borrow, default)]
    autonomous_system_organization: Option<Text<'a>>,
    /// IPinfo: `"AS15169"` (a number is accepted too).
    #[serde(default)]
    asn: Option<AsNumber>,
    /// IPinfo.
    #[serde(borrow, default)]
    as_name: Option<Text<'a>>,
    /// Some flat ASN files name the organisation just `name`.
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
}

/// Which family of layout answered, reported in the run summary so an operator can see that
/// the file was understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Nested MaxMind fields (also DB-IP Lite, ip-location-db ASN files).
    MaxMind,
    /// Flat top-level fields (ip-location-db country files, IPinfo).
    Flat,
}

impl Layout {
    /// The name written to the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::MaxMind => "maxmind",
            Layout::Flat => "flat",
        }
    }
}

impl<'a> GeoRecord<'a> {
    /// The ISO 3166-1 alpha-2 code, upper case, and the layout it came from.
    pub fn country(&self) -> Option<(&'a str, Layout)> {
        let code = |f: &Option<CountryField<'a>>| f.as_ref().and_then(|f| f.code);
        if let Some(c) = code(&self.country) {
            let layout = match self.country {
                Some(CountryField { nested: true, .. }) => Layout::MaxMind,
                _ => Layout::Flat,
            };
            return Some((c, layout));
        }
        if let Some(c) = code(&self.country_code) {
            return Some((c, Layout::Flat));
        }
        code(&self.registered_country).map(|c| (c, Layout::MaxMind))
    }

    /// The AS number (never 0: 0 means unknown), its organisation (may be empty), and the
    /// layout they came from.
    pub fn asn(&self) -> Option<(u32, &'a str, Layout)> {
        let org = |t: &Option<Text<'a>>| t.as_ref().map(|t| t.0);
        if let Some(AsNumber(n)) = self.autonomous_system_number
            && n != 0
        {
            let o = org(&self.autonomous_system_organization)
                .or(org(&self.as_name))
                .or(org(&self.name));
            return Some((n, o.unwrap_or(""), Layout::MaxMind));
        }
        if let Some(AsNumber(n)) = self.asn
            && n != 0
        {
            let o = org(&self.as_name)
                .or(org(&self.name))
                .or(org(&self.autonomous_system_organization));
            return Some((n, o.unwrap_or(""), Layout::Flat));
        }
        None
    }
}

/// A country given as a MaxMind map or as a plain string. Only a two-letter code is kept: IPinfo
/// Lite's `country` is the country's name, which is not what the field contract asks for.
#[derive(Debug, Default)]
struct CountryField<'a> {
    code: Option<&'a str>,
    nested: bool,
}

/// A two-letter ASCII code, else nothing (names, empty strings and junk are not codes).
fn iso_code(s: &str) -> Option<&str> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())).then_some(s)
}

impl<'de: 'a, 'a> Deserialize<'de> for CountryField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CountryField<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a country map or code")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(CountryField {
                    code: iso_code(s),
                    nested: false,
                })
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                // A string that cannot be borrowed is not something any known database writes;
                // treat it as absent rather than allocate.
                Ok(CountryField::default())
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut code = None;
                while let Some(key) = m.next_key::<&'de str>()? {
                    if key == "iso_code" {
                        code = m
                            .next_value::<Option<Text<'de>>>()?
                            .and_then(|t| iso_code(t.0));
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(CountryField { code, nested: true })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(CountryField::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(CountryField::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(CountryField::default())
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
                Ok(CountryField::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(CountryField::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(CountryField::default())
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
                Ok(CountryField::default())
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut s: S) -> Result<Self::Value, S::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(CountryField::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An AS number written as an integer of any width or as `"AS123"` / `"123"`; anything else,
/// or a value that does not fit 32 bits, reads as 0 (unknown).
#[derive(Clone, Copy, Debug, Default)]
struct AsNumber(u32);

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AsNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an AS number")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<AsNumber, E> {
                Ok(AsNumber(u32::try_from(n).unwrap_or(0)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<AsNumber, E> {
                Ok(AsNumber(u32::try_from(n).unwrap_or(0)))
            }
            fn visit_u128<E: de::Error>(self, n: u128) -> Result<AsNumber, E> {
                Ok(AsNumber(u32::try_from(n).unwrap_or(0)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AsNumber, E> {
                let digits = s
                    .strip_prefix("AS")
                    .or_else(|| s.strip_prefix("as"))
                    .unwrap_or(s);
                Ok(AsNumber(digits.parse().unwrap_or(0)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<AsNumber, E> {
                Ok(AsNumber(0))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<AsNumber, M::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AsNumber(0))
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut s: S) -> Result<AsNumber, S::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AsNumber(0))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<AsNumber, E> {
                Ok(AsNumber(0))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<AsNumber, E> {
                Ok(AsNumber(0))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<AsNumber, E> {
                Ok(AsNumber(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// A borrowed string field; any other type reads as empty so that one odd field does not make
/// the whole record unreadable.
#[derive(Clone, Copy, Debug, Default)]
struct Text<'a>(&'a str);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(s))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Text<'a>, E> {
                Ok(Text(""))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'a>, E> {
                Ok(Text(""))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'a>, E> {
                Ok(Text(""))
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<Text<'a>, E> {
                Ok(Text(""))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'a>, E> {
                Ok(Text(""))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'a>, E> {
                Ok(Text(""))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text<'a>, E> {
                Ok(Text(""))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Text<'a>, E> {
                Ok(Text(""))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Text<'a>, M::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(""))
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut s: S) -> Result<Text<'a>, S::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(""))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An organisation name cut to `MAX_ORG_BYTES` on a character boundary, control characters
/// replaced: it goes into every record and terminal.
pub fn clean_org(s: &str) -> String {
    let mut end = s.len().min(MAX_ORG_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_codes_are_two_upper_case_letters() {
        assert_eq!(iso_code("DE"), Some("DE"));
        assert_eq!(iso_code("Germany"), None);
        assert_eq!(iso_code("de"), None);
        assert_eq!(iso_code(""), None);
        assert_eq!(iso_code("D1"), None);
    }

    #[test]
    fn organisations_are_bounded_and_printable() {
        assert_eq!(clean_org("Example\nNet\t"), "Example Net");
        let long = "ä".repeat(400);
        let c = clean_org(&long);
        assert!(c.len() <= MAX_ORG_BYTES);
        assert!(c.chars().all(|ch| ch == 'ä'));
    }
}
