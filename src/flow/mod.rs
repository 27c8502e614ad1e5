//! Flows: connection tracking keyed by address pair and TCP reassembly per direction. Nothing
//! here knows a protocol above TCP: the layer above plugs in through [`StreamApp`].

pub mod lineage;
pub mod reassembly;
pub mod table;

pub use table::{FlowTable, StreamApp, TableConfig};

use std::net::IpAddr;

/// What the rules need to know about a finished TCP flow beside its SMTP facts.
#[derive(Clone, Copy, Debug)]
pub struct FlowSummary {
    /// Client address and port.
    pub client: (IpAddr, u16),
    /// Server address and port.
    pub server: (IpAddr, u16),
    /// First packet time.
    pub first_us: i64,
    /// Last packet time.
    pub last_us: i64,
    /// The capture began after the handshake.
    pub mid_stream: bool,
    /// Packets [client→server, server→client].
    pub packets: [u64; 2],
    /// Payload bytes [client→server, server→client].
    pub bytes: [u64; 2],
    /// Holes in both directions.
    pub gaps: u32,
    /// Bytes lost in holes.
    pub gap_bytes: u64,
    /// Retransmitted segments in both directions.
    pub retransmissions: u32,
    /// Acknowledgments that acknowledged new data, both directions (capture-loss estimate).
    pub acks: u32,
    /// Holes a peer acknowledged: data lost before the sensor (capture-loss estimate).
    pub acked_gaps: u32,
    /// IP TTL / IP ID lineage [client→server, server→client], for `injected-segment`.
    pub lineage: [lineage::Lineage; 2],
}

#[cfg(test)]
impl FlowSummary {
    /// A complete flow of one packet each way, without holes, for the tests of the judges.
    pub fn for_test(
        client: (IpAddr, u16),
        server: (IpAddr, u16),
        first_us: i64,
        last_us: i64,
    ) -> FlowSummary {
        FlowSummary {
            client,
            server,
            first_us,
            last_us,
            mid_stream: false,
            packets: [1, 1],
            bytes: [1, 1],
            gaps: 0,
            gap_bytes: 0,
            retransmissions: 0,
            acks: 0,
            acked_gaps: 0,
            lineage: Default::default(),
        }
    }
}
