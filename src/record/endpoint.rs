//! One end of a connection, as every record names it: the address and port, and where the
//! address sits on the map (country and autonomous system, filled by enrichment).

use serde::Serialize;
use std::net::IpAddr;

/// One end of a connection. Records hold a `client` and a `server` endpoint and write them
/// flattened with a prefix (`client_ip`, `client_port`, `client_country`, `client_asn`,
/// `client_as_org`), so the JSON keeps the flat columns that ClickHouse and `jq` users query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The address.
    pub ip: IpAddr,
    /// The port.
    pub port: u16,
    /// Country of the address (ISO 3166-1 alpha-2; "" when unknown or not enriched).
    pub country: String,
    /// Autonomous system of the address (0 when unknown).
    pub asn: u32,
    /// Organisation of that autonomous system ("" when unknown).
    pub as_org: String,
}

impl Endpoint {
    /// An endpoint not enriched (yet): the enrichment fields are empty.
    pub fn new(ip: IpAddr, port: u16) -> Endpoint {
        Endpoint {
            ip,
            port,
            country: String::new(),
            asn: 0,
            as_org: String::new(),
        }
    }
}

/// Writes an endpoint as five fields named with `$prefix`, for `#[serde(flatten, with = ...)]`.
/// The keys are `'static` strings made at compile time: `serde_with::with_prefix!` built each
/// key as a new `String` per record (ten allocations per session, DNS and finding record).
macro_rules! endpoint_prefix {
    ($module:ident, $prefix:literal) => {
        #[doc = concat!("An endpoint's fields as `", $prefix, "ip`, `", $prefix, "port`, ...")]
        pub(crate) mod $module {
            use serde::ser::{SerializeStruct, Serializer};

            /// Serializes `e` as a struct whose fields carry the prefix. A human-readable
            /// format gets the address as the same text serde's impl writes, made without
            /// the formatting machinery (`util::IpText`).
            pub fn serialize<S: Serializer>(
                e: &super::Endpoint,
                serializer: S,
            ) -> Result<S::Ok, S::Error> {
                let text = serializer
                    .is_human_readable()
                    .then(|| crate::util::IpText::of(e.ip));
                let mut s = serializer.serialize_struct("Endpoint", 5)?;
                match &text {
                    Some(t) => s.serialize_field(concat!($prefix, "ip"), t.as_str())?,
                    None => s.serialize_field(concat!($prefix, "ip"), &e.ip)?,
                }
                s.serialize_field(concat!($prefix, "port"), &e.port)?;
                s.serialize_field(concat!($prefix, "country"), &e.country)?;
                s.serialize_field(concat!($prefix, "asn"), &e.asn)?;
                s.serialize_field(concat!($prefix, "as_org"), &e.as_org)?;
                s.end()
            }
        }
    };
}

endpoint_prefix!(client_prefix, "client_");
endpoint_prefix!(server_prefix, "server_");

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Both {
        #[serde(flatten, with = "client_prefix")]
        client: Endpoint,
        #[serde(flatten, with = "server_prefix")]
        server: Endpoint,
    }

    #[test]
    fn flattens_with_the_column_names() {
        let mut client = Endpoint::new("192.0.2.1".parse().unwrap(), 40000);
        client.country = "DE".into();
        client.asn = 3320;
        client.as_org = "Telekom".into();
        let both = Both {
            client,
            server: Endpoint::new("2001:db8::25".parse().unwrap(), 25),
        };
        assert_eq!(
            serde_json::to_string(&both).unwrap(),
            r#"{"client_ip":"192.0.2.1","client_port":40000,"client_country":"DE","client_asn":3320,"client_as_org":"Telekom","server_ip":"2001:db8::25","server_port":25,"server_country":"","server_asn":0,"server_as_org":""}"#
        );
    }
}
