//! The decode floor of `bench/run.sh`: reads a pcap or pcapng file with pcap-parser and slices
//! each Ethernet frame with etherparse, nothing else. What no analyzer reading the same file
//! with the same libraries can beat; stripwatch's throughput is reported as a share of it.
//!
//!     cargo build --release -p stripwatch-synth --example floor
//!     target/release/examples/floor FILE

use etherparse::{SlicedPacket, TransportSlice};
use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};
use std::fs::File;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: floor FILE.pcap");
        std::process::exit(2);
    };
    let file = File::open(&path).unwrap_or_else(|e| {
        eprintln!("floor: {path}: {e}");
        std::process::exit(1)
    });
    let mut reader = create_reader(1 << 20, file).unwrap_or_else(|e| {
        eprintln!("floor: {path}: {e:?}");
        std::process::exit(1)
    });
    let (mut packets, mut tcp, mut udp, mut payload) = (0u64, 0u64, 0u64, 0u64);
    let mut slice = |data: &[u8]| {
        packets += 1;
        if let Ok(p) = SlicedPacket::from_ethernet(data) {
            match p.transport {
                Some(TransportSlice::Tcp(t)) => {
                    tcp += 1;
                    payload += t.payload().len() as u64;
                }
                Some(TransportSlice::Udp(u)) => {
                    udp += 1;
                    payload += u.payload().len() as u64;
                }
                _ => {}
            }
        }
    };
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::Legacy(b) => slice(b.data),
                    PcapBlockOwned::NG(Block::EnhancedPacket(b)) => slice(b.data),
                    PcapBlockOwned::NG(Block::SimplePacket(b)) => slice(b.data),
                    _ => {}
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if let Err(e) = reader.refill() {
                    eprintln!("floor: {path}: {e:?}");
                    std::process::exit(1);
                }
            }
            Err(e) => {
                eprintln!("floor: {path}: {e:?}");
                std::process::exit(1);
            }
        }
    }
    println!("packets {packets} tcp {tcp} udp {udp} payload_bytes {payload}");
}
