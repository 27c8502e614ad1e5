//! IP header lineage of one direction of a flow: the IP TTL (hop limit) and, for IPv4, the IP ID
//! sequence that the real sender's packets share. An on-path injector forges the TCP and
//! application bytes well, but its packets start with its own initial TTL at its own hop
//! distance and with its own IP ID counter; a segment out of line on either is the classic
//! trace of injection (the method of Weaver et al., "Detecting forged TCP reset packets").
//!
//! The tracker is a fixed-size value per direction and does not allocate.

use serde::Serialize;

/// Packets with the same TTL needed before a differing one counts as out of line.
const TTL_BASELINE_PACKETS: u32 = 2;
/// A TTL this far from the baseline is out of line (route changes move it by one at most).
const TTL_TOLERANCE: u8 = 2;
/// Consecutive small IP ID steps needed before the sender counts as incrementing.
const ID_BASELINE_STEPS: u32 = 3;
/// The largest step that still counts as the same incrementing sender.
const ID_SMALL_STEP: u16 = 64;
/// A jump this large (forwards or backwards) from an incrementing sequence is out of line.
const ID_FAR: u16 = 4096;

/// What made a packet out of line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anomaly {
    /// The TTL differs from the flow's settled TTL.
    Ttl,
    /// The IP ID jumps away from the flow's incrementing sequence.
    IpId,
    /// Both.
    TtlAndIpId,
}

/// The first out-of-line packet of a direction, kept as evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OutOfLine {
    /// What was out of line.
    pub anomaly: Anomaly,
    /// Capture time of the packet.
    pub ts_us: i64,
    /// The packet's TTL.
    pub ttl: u8,
    /// The TTL the flow's other packets had.
    pub expected_ttl: u8,
    /// The packet's IP ID (IPv4).
    pub ip_id: u16,
    /// The last IP ID of the flow's incrementing sequence before it.
    pub previous_ip_id: u16,
    /// Payload bytes the packet carried.
    pub payload_len: u32,
    /// The packet was a TCP reset.
    pub reset: bool,
}

/// The lineage of one direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lineage {
    ttl: u8,
    ttl_count: u32,
    last_id: u16,
    id_steps: u32,
    id_seen: bool,
    /// An IP ID jump waiting for the next packet: if the old sequence resumes, the jumping
    /// packet came from someone else; if the sequence continues from the jump, the sender's
    /// own counter jumped (a busy host with one global counter) and nothing is reported.
    suspect: Option<OutOfLine>,
    /// The first out-of-line packet.
    pub first: Option<OutOfLine>,
    /// Out-of-line packets seen.
    pub count: u32,
}

impl Lineage {
    /// Takes one packet's IP facts. `ip_id` is 0 for IPv6 (and for senders that do not count);
    /// `carries` says whether the packet carries bytes or a reset, the only packets an injector
    /// needs to forge.
    pub fn observe(
        &mut self,
        ts_us: i64,
        ttl: u8,
        ip_id: u16,
        payload_len: usize,
        reset: bool,
    ) -> bool {
        let ttl_out =
            self.ttl_count >= TTL_BASELINE_PACKETS && ttl.abs_diff(self.ttl) >= TTL_TOLERANCE;
        let step = ip_id.wrapping_sub(self.last_id);
        let id_out = self.id_seen
            && self.id_steps >= ID_BASELINE_STEPS
            && ip_id != 0
            && (ID_FAR..=u16::MAX - ID_FAR).contains(&step);
        let carries = payload_len > 0 || reset;
        let evidence = |anomaly| OutOfLine {
            anomaly,
            ts_us,
            ttl,
            expected_ttl: self.ttl,
            ip_id,
            previous_ip_id: self.last_id,
            payload_len: payload_len.min(u32::MAX as usize) as u32,
            reset,
        };
        if ttl_out && carries {
            self.report(evidence(if id_out {
                Anomaly::TtlAndIpId
            } else {
                Anomaly::Ttl
            }));
            // The injector's packet does not become the baseline.
            return true;
        }
        if id_out && carries {
            match self.suspect {
                None => self.suspect = Some(evidence(Anomaly::IpId)),
                Some(s) if (1..=ID_SMALL_STEP).contains(&ip_id.wrapping_sub(s.ip_id)) => {
                    // The sequence goes on from the jump: the sender's own counter jumped.
                    self.suspect = None;
                    self.last_id = ip_id;
                    self.id_steps = 1;
                }
                Some(_) => {}
            }
            return false;
        }
        if ttl_out {
            // A settled TTL moved on a packet with nothing to forge: keep the baseline.
        } else if self.ttl_count == 0 || ttl == self.ttl {
            self.ttl = ttl;
            self.ttl_count = self.ttl_count.saturating_add(1);
        } else if self.ttl_count < TTL_BASELINE_PACKETS {
            self.ttl = ttl;
            self.ttl_count = 1;
        }
        if ip_id != 0 && !id_out {
            if let Some(s) = self.suspect.take() {
                // The old sequence resumed after the jump: the jumping packet was foreign.
                self.report(s);
                self.last_id = ip_id;
                return true;
            }
            if self.id_seen && (1..=ID_SMALL_STEP).contains(&step) {
                self.id_steps = self.id_steps.saturating_add(1);
            } else if self.id_seen && step != 0 {
                self.id_steps = 0;
            }
            self.last_id = ip_id;
            self.id_seen = true;
        }
        false
    }

    /// The TTL the direction has settled on (0 before any packet).
    pub fn settled_ttl(&self) -> u8 {
        self.ttl
    }

    fn report(&mut self, o: OutOfLine) {
        self.count = self.count.saturating_add(1);
        if self.first.is_none() {
            self.first = Some(o);
        }
    }
}

/// The most likely initial TTL of a sender (operating systems start at 32, 64, 128 or 255).
pub fn initial_ttl(observed: u8) -> u8 {
    match observed {
        0..=32 => 32,
        33..=64 => 64,
        65..=128 => 128,
        _ => 255,
    }
}

/// Hops between the sender and the sensor, estimated from the observed TTL.
pub fn hop_distance(observed: u8) -> u8 {
    initial_ttl(observed) - observed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(l: &mut Lineage, pkts: &[(u8, u16, usize)]) -> Vec<bool> {
        pkts.iter()
            .enumerate()
            .map(|(i, &(ttl, id, len))| l.observe(i as i64, ttl, id, len, false))
            .collect()
    }

    #[test]
    fn steady_flow_is_in_line() {
        let mut l = Lineage::default();
        let r = feed(
            &mut l,
            &[
                (52, 100, 0),
                (52, 101, 30),
                (52, 102, 200),
                (52, 104, 10),
                (53, 105, 10),
            ],
        );
        assert!(r.iter().all(|o| !o));
        assert_eq!(l.count, 0);
    }

    #[test]
    fn a_reply_from_another_hop_distance_is_out_of_line() {
        let mut l = Lineage::default();
        let r = feed(&mut l, &[(52, 0, 0), (52, 0, 40), (61, 0, 40), (52, 0, 40)]);
        assert_eq!(r, vec![false, false, true, false]);
        let f = l.first.unwrap();
        assert_eq!((f.anomaly, f.ttl, f.expected_ttl), (Anomaly::Ttl, 61, 52));
        assert_eq!(hop_distance(61), 3);
        assert_eq!(hop_distance(52), 12);
    }

    #[test]
    fn a_foreign_ip_id_is_out_of_line_only_after_a_counting_sender() {
        let mut l = Lineage::default();
        let r = feed(
            &mut l,
            &[
                (64, 1000, 0),
                (64, 1001, 5),
                (64, 1003, 5),
                (64, 1004, 5),
                (64, 40000, 5),
                (64, 1005, 5),
            ],
        );
        assert_eq!(r, vec![false, false, false, false, false, true]);
        let f = l.first.unwrap();
        assert_eq!(
            (f.anomaly, f.ip_id, f.previous_ip_id),
            (Anomaly::IpId, 40000, 1004)
        );
        // A sender whose own counter jumps and goes on from there is not an injector.
        let mut l = Lineage::default();
        let r = feed(
            &mut l,
            &[
                (64, 1000, 5),
                (64, 1001, 5),
                (64, 1002, 5),
                (64, 1003, 5),
                (64, 30000, 5),
                (64, 30001, 5),
            ],
        );
        assert!(r.iter().all(|o| !o));
        assert_eq!(l.count, 0);
        // Random IDs never settle into a sequence, so nothing is out of line.
        let mut l = Lineage::default();
        let r = feed(
            &mut l,
            &[(64, 1000, 5), (64, 9000, 5), (64, 30000, 5), (64, 200, 5)],
        );
        assert!(r.iter().all(|o| !o));
    }

    #[test]
    fn pure_acks_never_count_and_early_ttl_changes_rebase() {
        let mut l = Lineage::default();
        let r = feed(
            &mut l,
            &[(60, 0, 0), (50, 0, 0), (50, 0, 0), (40, 0, 0), (50, 0, 9)],
        );
        assert!(r.iter().all(|o| !o));
        assert!(l.observe(9, 40, 0, 0, true), "an injected reset counts");
    }
}
