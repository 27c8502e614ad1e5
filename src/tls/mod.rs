//! TLS as seen from the outside: record boundaries and alerts (`record`), the handshake messages
//! (`handshake`), the server's certificates (`cert`), name matching (`names`), path validation
//! at capture time (`verify`), DANE (`dane`) and how an MTA-STS policy fetch over HTTPS ended
//! (`fetch`).

pub mod cert;
pub mod dane;
pub mod fetch;
pub mod handshake;
pub mod names;
pub mod record;
pub mod verify;
