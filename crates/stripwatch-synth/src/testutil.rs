//! Helpers shared by the generator's unit tests: reading captures back with pcap-parser.

use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};

/// Reads a whole (uncompressed) capture back: its link type and every `(ts_us, frame)`.
pub fn read_back(bytes: &[u8]) -> (i32, Vec<(u64, Vec<u8>)>) {
    let mut reader = create_reader(1 << 16, bytes).expect("recognised capture");
    let mut linktype = -1;
    let mut packets = Vec::new();
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => linktype = h.network.0,
                    PcapBlockOwned::Legacy(b) => {
                        assert_eq!(b.caplen, b.origlen);
                        packets.push((
                            u64::from(b.ts_sec) * 1_000_000 + u64::from(b.ts_usec),
                            b.data.to_vec(),
                        ));
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        linktype = idb.linktype.0;
                        assert_eq!(idb.if_tsresol, 6);
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        packets.push((ts, epb.data[..epb.caplen as usize].to_vec()));
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => reader.refill().expect("refill"),
            Err(e) => panic!("pcap-parser error: {e:?}"),
        }
    }
    (linktype, packets)
}
