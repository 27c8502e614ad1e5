//! TLS as seen from the outside: record boundaries and alerts (`record`), the handshake messages
//! (`handshake`), the server's certificates (`cert`), name matching (`names`), path validation
//! at capture time (`verify`) and DANE (`dane`).

pub mod cert;
pub mod dane;
pub mod handshake;
pub mod names;
pub mod record;
pub mod verify;
