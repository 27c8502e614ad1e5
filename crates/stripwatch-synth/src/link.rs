//! Link-layer framing for synthetic IP packets.
//!
//! Captures in the wild come with many link types (Ethernet with VLAN tags, Linux "any"
//! interface captures, BSD loopback, raw IP from tunnels); the analyzer must find the same
//! SMTP session under every one of them, so the generator can wrap each IP packet in any of
//! these headers.

/// Link-layer source address of the SMTP client side (locally administered MAC).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0c, 0x01];
/// Link-layer address of the server side (the router or the server itself).
pub const SERVER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x05, 0x01];

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;

/// How each IP packet is framed, and therefore which pcap link type the file declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Ethernet II (linktype 1).
    Ethernet,
    /// Ethernet with one 802.1Q tag (linktype 1).
    Vlan {
        /// VLAN id (12 bits).
        vid: u16,
    },
    /// Ethernet with an 802.1ad S-tag (0x88a8) outside an 802.1Q C-tag (linktype 1).
    QinQ {
        /// Service (outer) VLAN id.
        outer: u16,
        /// Customer (inner) VLAN id.
        inner: u16,
    },
    /// Linux cooked capture v1, as `tcpdump -i any` writes (linktype 113, 16-byte header).
    Sll,
    /// Linux cooked capture v2 (linktype 276, 20-byte header).
    Sll2,
    /// BSD loopback/null: a 4-byte address family in the file's byte order (linktype 0).
    Null,
    /// Raw IP, no link header (linktype 101).
    RawIp,
}

impl Link {
    /// The pcap/pcapng LINKTYPE_ value for this framing.
    pub fn linktype(self) -> u16 {
        match self {
            Link::Ethernet | Link::Vlan { .. } | Link::QinQ { .. } => 1,
            Link::Sll => 113,
            Link::Sll2 => 276,
            Link::Null => 0,
            Link::RawIp => 101,
        }
    }

    /// Bytes this framing puts in front of the IP header.
    pub fn header_len(self) -> usize {
        match self {
            Link::Ethernet => 14,
            Link::Vlan { .. } => 18,
            Link::QinQ { .. } => 22,
            Link::Sll => 16,
            Link::Sll2 => 20,
            Link::Null => 4,
            Link::RawIp => 0,
        }
    }

    /// Appends the link header for an IP packet (`ipv6` says which version) sent by the
    /// client (`from_client`) or by the server, with the given MAC addresses.
    pub fn push_header(
        self,
        buf: &mut Vec<u8>,
        ipv6: bool,
        from_client: bool,
        client_mac: [u8; 6],
        server_mac: [u8; 6],
    ) {
        let ethertype = if ipv6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
        let (src, dst) = if from_client {
            (client_mac, server_mac)
        } else {
            (server_mac, client_mac)
        };
        match self {
            Link::Ethernet => {
                buf.extend_from_slice(&dst);
                buf.extend_from_slice(&src);
                buf.extend_from_slice(&ethertype.to_be_bytes());
            }
            Link::Vlan { vid } => {
                buf.extend_from_slice(&dst);
                buf.extend_from_slice(&src);
                push_tag(buf, TPID_8021Q, vid);
                buf.extend_from_slice(&ethertype.to_be_bytes());
            }
            Link::QinQ { outer, inner } => {
                buf.extend_from_slice(&dst);
                buf.extend_from_slice(&src);
                push_tag(buf, TPID_8021AD, outer);
                push_tag(buf, TPID_8021Q, inner);
                buf.extend_from_slice(&ethertype.to_be_bytes());
            }
            Link::Sll => {
                // Captured on the server host: client packets arrive (0, PACKET_HOST), server
                // packets leave (4, PACKET_OUTGOING). The address is the sender's.
                let pkttype: u16 = if from_client { 0 } else { 4 };
                buf.extend_from_slice(&pkttype.to_be_bytes());
                buf.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
                buf.extend_from_slice(&6u16.to_be_bytes());
                buf.extend_from_slice(&src);
                buf.extend_from_slice(&[0, 0]);
                buf.extend_from_slice(&ethertype.to_be_bytes());
            }
            Link::Sll2 => {
                buf.extend_from_slice(&ethertype.to_be_bytes());
                buf.extend_from_slice(&[0, 0]); // reserved
                buf.extend_from_slice(&2u32.to_be_bytes()); // interface index
                buf.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
                buf.push(if from_client { 0 } else { 4 });
                buf.push(6);
                buf.extend_from_slice(&src);
                buf.extend_from_slice(&[0, 0]);
            }
            Link::Null => {
                // The family is in the byte order of the host that wrote the file; our files
                // are little-endian. AF_INET6 differs per BSD (24, 28, 30): 30 is Darwin's.
                let family: u32 = if ipv6 { 30 } else { 2 };
                buf.extend_from_slice(&family.to_le_bytes());
            }
            Link::RawIp => {}
        }
    }
}

/// Appends an 802.1Q/802.1ad tag: TPID, then PCP 0, DEI 0 and the 12-bit VLAN id.
fn push_tag(buf: &mut Vec<u8>, tpid: u16, vid: u16) {
    buf.extend_from_slice(&tpid.to_be_bytes());
    buf.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Link; 7] = [
        Link::Ethernet,
        Link::Vlan { vid: 100 },
        Link::QinQ {
            outer: 300,
            inner: 100,
        },
        Link::Sll,
        Link::Sll2,
        Link::Null,
        Link::RawIp,
    ];

    #[test]
    fn synth_link_headers_have_declared_length() {
        for link in ALL {
            for ipv6 in [false, true] {
                let mut buf = Vec::new();
                link.push_header(&mut buf, ipv6, true, CLIENT_MAC, SERVER_MAC);
                assert_eq!(buf.len(), link.header_len(), "{link:?}");
            }
        }
    }

    #[test]
    fn synth_link_headers_carry_the_right_protocol_fields() {
        let mut b = Vec::new();
        Link::QinQ {
            outer: 300,
            inner: 100,
        }
        .push_header(&mut b, true, false, CLIENT_MAC, SERVER_MAC);
        assert_eq!(&b[0..6], &CLIENT_MAC);
        assert_eq!(&b[12..14], &[0x88, 0xa8]);
        assert_eq!(u16::from_be_bytes([b[14], b[15]]), 300);
        assert_eq!(&b[16..18], &[0x81, 0x00]);
        assert_eq!(u16::from_be_bytes([b[18], b[19]]), 100);
        assert_eq!(&b[20..22], &[0x86, 0xdd]);

        let mut b = Vec::new();
        Link::Sll.push_header(&mut b, false, false, CLIENT_MAC, SERVER_MAC);
        assert_eq!(&b[0..2], &[0, 4]);
        assert_eq!(&b[6..12], &SERVER_MAC);
        assert_eq!(&b[14..16], &[0x08, 0x00]);

        let mut b = Vec::new();
        Link::Sll2.push_header(&mut b, true, true, CLIENT_MAC, SERVER_MAC);
        assert_eq!(&b[0..2], &[0x86, 0xdd]);
        assert_eq!(b[10], 0);
        assert_eq!(&b[12..18], &CLIENT_MAC);

        let mut b = Vec::new();
        Link::Null.push_header(&mut b, true, true, CLIENT_MAC, SERVER_MAC);
        assert_eq!(b, 30u32.to_le_bytes());
    }
}
