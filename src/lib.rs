//! stripwatch: a passive monitor for the security of mail transport. It follows SMTP
//! conversations, the TLS handshakes STARTTLS starts and the DNS answers that sent the client
//! there, and reports where mail was downgraded to plaintext, where the certificate could not
//! have authenticated the server, and where the MX answer itself was forged.
//!
//! # Layers
//!
//! A packet travels up this map, and so do the uses between modules: a module uses only modules
//! of lower layers, never one of its own layer or above. `tests/layers.rs` reads this table and
//! fails when the code disagrees with it, so the map stays true. `docs/DESIGN.md` tells the
//! flow in words.
//!
//! | layer | modules | job |
//! |---|---|---|
//! | 12 | `report`, `schema` | reports from records (embedded or ClickHouse), the run summary; the ClickHouse schema |
//! | 11 | `pipeline` | reader thread, workers (flow table + per-flow dispatcher), capture-order merge, output stage |
//! | 10 | `sink` | where judged records go: NDJSON files, ClickHouse with its spool |
//! | 9 | `enrich` | country and AS of each address |
//! | 8 | `detect` | judges: per-session rules, certificates, DNS across clients, the correlator |
//! | 7 | `state` | the lasting baseline of earlier runs |
//! | 6 | `smtp`, `dns` | protocol parsers: the SMTP state machine, DNS messages and transactions |
//! | 5 | `tls` | TLS records and handshakes, certificates, DANE matching |
//! | 4 | `flow` | TCP connections and reassembly, knowing no protocol above TCP |
//! | 3 | `decode` | link, IP (with defragmentation), TCP and UDP headers |
//! | 2 | `capture` | packet sources behind one trait: pcap and pcapng files, compressed or not, standard input, live interfaces (libpcap) |
//! | 1 | `record` | the records written and the words they are made of |
//! | 0 | `util`, `memory` | time formatting, Community ID, the capture clock; the memory budget, its shares and gauges |
//!
//! The flow table (`flow`) hands reassembled bytes to whatever implements
//! [`flow::StreamApp`]; the pipeline's worker implements it for SMTP and DNS, so the table
//! never names a protocol, and the parsers never name the table.

pub mod capture;
pub mod decode;
pub mod detect;
pub mod dns;
pub mod enrich;
pub mod flow;
pub mod memory;
pub mod pipeline;
pub mod record;
pub mod report;
pub mod schema;
pub mod sink;
pub mod smtp;
pub mod state;
pub mod tls;
pub mod util;
