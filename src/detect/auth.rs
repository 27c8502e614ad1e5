//! `auth-in-cleartext`: the client sent AUTH in cleartext in a session whose upgrade was
//! stripped, missing, refused or failed, or in a new connection after an earlier session's
//! upgrade failed. Judged last, when every other finding of the session is known (the
//! correlator calls it on release), so that the downgrade it followed can be named.
//!
//! The evidence names the mechanism (a validated SASL name, `smtp/sasl.rs`) and the downgrade,
//! never the credential: the session parser keeps nothing else of AUTH.

use crate::record::{FindingKind, SessionRecord};
use serde_json::json;

/// Downgrades of the session itself that make its cleartext AUTH a finding, most severe first,
/// and whether the AUTH must come after the client's STARTTLS (a refused or failed upgrade);
/// after a stripped or missing offer every AUTH of the session counts.
const SAME_SESSION: [(FindingKind, bool); 4] = [
    (FindingKind::StarttlsStripped, false),
    (FindingKind::StarttlsMissing, false),
    (FindingKind::TlsHandshakeFailed, true),
    (FindingKind::StarttlsCommandRejected, true),
];

/// Adds `auth-in-cleartext` when the session sent AUTH in cleartext after a downgrade: one of
/// its own (`SAME_SESSION`), else `earlier` (the kind and finding id of the newest failed
/// upgrade between the same two addresses within the fallback window, as the correlator
/// remembers it), provided this session did not try STARTTLS itself. A server that never
/// offered STARTTLS (`starttls-not-supported`) and a client that ignored the offer
/// (`plaintext-by-client`) are no downgrade: no finding.
pub fn judge(rec: &mut SessionRecord, earlier: Option<(FindingKind, &str)>) {
    let Some(auth) = rec.correlation.cleartext_auth.clone() else {
        return;
    };
    let after_upgrade = rec
        .correlation
        .failed_upgrade_at
        .is_some_and(|at| auth.last_ts_us >= at);
    let own = SAME_SESSION
        .iter()
        .filter(|(_, needs_upgrade_first)| after_upgrade || !needs_upgrade_first)
        .find_map(|(kind, _)| rec.finding_details.iter().find(|f| f.kind == *kind))
        .map(|f| (f.kind, f.finding_id.clone()));
    let (downgrade, finding_id, same_session) = match (own, earlier) {
        (Some((kind, id)), _) => (kind, id, true),
        (None, Some((kind, id))) if !rec.starttls_sent => (kind, id.to_string(), false),
        _ => return,
    };
    rec.add_finding(
        FindingKind::AuthInCleartext,
        auth.last_ts_us,
        json!({
            "mechanism": auth.mechanism,
            "auth_commands": rec.auth_commands,
            "credential_sent": auth.credential_lines > 0,
            "credential_lines": auth.credential_lines,
            "auth_reply_code": auth.reply_code,
            "downgrade": downgrade,
            "downgrade_finding_id": finding_id,
            "same_session": same_session,
        }),
    );
}

#[cfg(test)]
mod tests {
    use crate::detect::certs::CertJudge;
    use crate::detect::dns_judge::{DnsJudge, DnsJudgeConfig, KnownMx};
    use crate::detect::rules::build_record;
    use crate::detect::{Correlator, CorrelatorConfig};
    use crate::flow::FlowSummary;
    use crate::flow::reassembly::StreamEvent;
    use crate::record::{EndReason, SessionRecord, Side};
    use crate::smtp::{SmtpConfig, SmtpSession};
    use crate::tls::dane::TlsaStore;
    use crate::tls::verify::Validator;
    use base64::Engine;
    use serde_json::Value;

    const USER: &str = "alice";
    const PASSWORD: &str = "Sw-Secret-Pa55";
    const CLIENT_HELLO: &[u8] = &[22, 3, 1, 0, 5, 1, 0, 0, 1, 0];

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// Every form in which the credential could leak into the output.
    fn secrets() -> Vec<String> {
        vec![
            PASSWORD.to_string(),
            b64(PASSWORD),
            b64(&format!("\0{USER}\0{PASSWORD}")),
            b64(USER),
        ]
    }

    /// One session between 192.0.2.1 and 198.51.100.7:`port`, starting at `start_s` seconds,
    /// one step per millisecond. `C:`/`S:` prefix each line's side; lines get CRLF.
    fn session(start_s: i64, client_port: u16, port: u16, script: &[&str]) -> SessionRecord {
        session_ending(start_s, client_port, port, script, EndReason::Fin)
    }

    fn session_ending(
        start_s: i64,
        client_port: u16,
        port: u16,
        script: &[&str],
        end: EndReason,
    ) -> SessionRecord {
        let first_us = start_s * 1_000_000;
        let mut s = SmtpSession::new(SmtpConfig::default(), false);
        let mut offsets = [0u64; 2];
        let mut ts = first_us;
        for step in script {
            let (side, text) = step.split_at(2);
            let side = if side == "C:" {
                Side::Client
            } else {
                Side::Server
            };
            let bytes: Vec<u8> = if text == "<client-hello>" {
                CLIENT_HELLO.to_vec()
            } else {
                format!("{text}\r\n").into_bytes()
            };
            let k = usize::from(side == Side::Server);
            ts += 1000;
            s.on_stream(
                side,
                StreamEvent::Data {
                    offset: offsets[k],
                    bytes: &bytes,
                },
                ts,
            );
            offsets[k] += bytes.len() as u64;
        }
        s.finish(end);
        let flow = FlowSummary::for_test(
            ("192.0.2.1".parse().unwrap(), client_port),
            ("198.51.100.7".parse().unwrap(), port),
            first_us,
            ts,
        );
        build_record(&flow, s.facts, end, "test")
    }

    /// Judges the sessions as one run and returns them in the order they were released.
    fn run(sessions: Vec<SessionRecord>) -> Vec<SessionRecord> {
        let mut c = Correlator::new(
            CorrelatorConfig::default(),
            CertJudge::new(Validator::new(&[]).unwrap(), TlsaStore::default()),
            DnsJudge::new(DnsJudgeConfig::default(), KnownMx::default()),
            Box::new(crate::state::NoBaseline),
        );
        let mut out = Vec::new();
        for rec in sessions {
            c.push(Box::new(rec), &mut |r| out.push(*r));
        }
        c.flush(&mut |r| out.push(*r));
        out.sort_by_key(|r| r.ts.0);
        out
    }

    fn kinds(rec: &SessionRecord) -> Vec<&'static str> {
        rec.findings.iter().map(|k| k.as_str()).collect()
    }

    fn auth_evidence(rec: &SessionRecord) -> &Value {
        &rec.finding_details
            .iter()
            .find(|f| f.kind.as_str() == "auth-in-cleartext")
            .unwrap_or_else(|| panic!("no auth-in-cleartext in {:?}", kinds(rec)))
            .evidence
    }

    /// Neither the session records nor the findings, as written, hold the credential.
    fn assert_no_credential(recs: &[SessionRecord]) {
        for rec in recs {
            let mut text = serde_json::to_string(rec).unwrap();
            for f in &rec.finding_details {
                text.push_str(&serde_json::to_string(f).unwrap());
            }
            text.push_str(&format!("{:?}", rec.correlation));
            for secret in secrets() {
                assert!(!text.contains(&secret), "{secret} in the output: {text}");
            }
        }
    }

    const GREETING: [&str; 2] = ["S:220 mx.example ESMTP", "C:EHLO client.example"];
    const OFFER: [&str; 3] = [
        "S:250-mx.example",
        "S:250-STARTTLS",
        "S:250 AUTH PLAIN LOGIN",
    ];
    const UPGRADE: [&str; 3] = ["C:STARTTLS", "S:220 ready", "C:<client-hello>"];
    const LOGIN: [&str; 5] = [
        "C:AUTH LOGIN",
        "S:334 VXNlcm5hbWU6",
        "C:YWxpY2U=",
        "S:334 UGFzc3dvcmQ6",
        "C:U3ctU2VjcmV0LVBhNTU=",
    ];
    const MAIL: [&str; 4] = [
        "S:235 2.7.0 Authentication successful",
        "C:MAIL FROM:<alice@client.example>",
        "S:250 2.1.0 Ok",
        "C:QUIT",
    ];

    fn script<'a>(parts: &[&[&'a str]]) -> Vec<&'a str> {
        parts.concat()
    }

    /// A session to `port` whose upgrade the path reset at the ClientHello.
    fn failed_handshake(port: u16) -> SessionRecord {
        session_ending(
            1_780_000_000,
            40001,
            port,
            &script(&[&GREETING, &OFFER, &UPGRADE]),
            EndReason::Reset,
        )
    }

    #[test]
    fn login_after_an_overwritten_offer_is_the_verdict() {
        let caps = [
            "S:250-mx.example",
            "S:250-XXXXXXXA",
            "S:250 AUTH PLAIN LOGIN",
        ];
        let out = run(vec![session(
            1_780_000_000,
            40001,
            587,
            &script(&[&GREETING, &caps, &LOGIN, &MAIL]),
        )]);
        let rec = &out[0];
        assert_eq!(rec.verdict, "auth-in-cleartext");
        assert_eq!(kinds(rec), ["auth-in-cleartext", "starttls-stripped"]);
        let e = auth_evidence(rec);
        assert_eq!(e["mechanism"], "LOGIN");
        assert_eq!(e["downgrade"], "starttls-stripped");
        assert_eq!(e["downgrade_finding_id"], format!("{}-0", rec.session_id));
        assert_eq!(e["same_session"], true);
        assert_eq!(e["credential_sent"], true);
        assert_eq!(e["credential_lines"], 2);
        assert_eq!(e["auth_reply_code"], 235);
        assert_eq!(e["auth_commands"], 1);
        assert_no_credential(&out);
    }

    #[test]
    fn plain_after_a_refused_starttls_counts_only_after_the_refusal() {
        let refused = ["C:STARTTLS", "S:454 4.7.0 TLS not available"];
        let plain_line = format!("C:AUTH PLAIN {}", b64(&format!("\0{USER}\0{PASSWORD}")));
        let plain = [plain_line.as_str()];
        let after = run(vec![session(
            1_780_000_000,
            40001,
            587,
            &script(&[&GREETING, &OFFER, &refused, &plain, &MAIL]),
        )]);
        let rec = &after[0];
        assert_eq!(rec.verdict, "auth-in-cleartext");
        let e = auth_evidence(rec);
        assert_eq!(e["mechanism"], "PLAIN");
        assert_eq!(e["downgrade"], "starttls-command-rejected");
        assert_eq!(e["credential_lines"], 1, "the initial response");
        assert_no_credential(&after);

        // AUTH before the client tried STARTTLS followed no downgrade.
        let before = run(vec![session(
            1_780_000_000,
            40001,
            587,
            &script(&[&GREETING, &OFFER, &plain, &["S:235 ok"], &refused]),
        )]);
        assert_eq!(kinds(&before[0]), ["starttls-command-rejected"]);
        assert_no_credential(&before);
    }

    #[test]
    fn a_deleted_offer_needs_the_offer_elsewhere() {
        let none = ["S:250-mx.example", "S:250 AUTH LOGIN"];
        let offered = session(
            1_780_000_000,
            40001,
            587,
            &script(&[&GREETING, &OFFER, &["C:QUIT"]]),
        );
        let deleted = || {
            session(
                1_780_000_010,
                40002,
                587,
                &script(&[&GREETING, &none, &LOGIN, &MAIL]),
            )
        };
        let out = run(vec![offered, deleted()]);
        assert_eq!(kinds(&out[1]), ["auth-in-cleartext", "starttls-missing"]);
        assert_eq!(auth_evidence(&out[1])["downgrade"], "starttls-missing");
        // A server that never offered STARTTLS: credentials in clear, but no downgrade.
        let never = run(vec![deleted()]);
        assert_eq!(kinds(&never[0]), ["starttls-not-supported"]);
        assert_no_credential(&out);
        assert_no_credential(&never);
    }

    #[test]
    fn the_clients_own_choice_is_no_downgrade() {
        let out = run(vec![session(
            1_780_000_000,
            40001,
            587,
            &script(&[&GREETING, &OFFER, &LOGIN, &MAIL]),
        )]);
        assert_eq!(kinds(&out[0]), ["plaintext-by-client"]);
    }

    #[test]
    fn a_new_connection_after_a_failed_handshake() {
        // The retry authenticates (refused) and gives up: no mail, so no plaintext-fallback,
        // but the password went out all the same. An hour and more later it is no fallback.
        let refused = ["S:535 5.7.8 Authentication failed", "C:QUIT"];
        let retry_at = |start_s: i64, client_port: u16| {
            session(
                start_s,
                client_port,
                587,
                &script(&[&GREETING, &OFFER, &LOGIN, &refused]),
            )
        };
        let out = run(vec![
            failed_handshake(587),
            retry_at(1_780_000_005, 40002),
            retry_at(1_780_000_000 + 7200, 40003),
        ]);
        assert_eq!(kinds(&out[0]), ["tls-handshake-failed"]);
        assert_eq!(kinds(&out[1]), ["auth-in-cleartext"]);
        let e = auth_evidence(&out[1]);
        assert_eq!(e["downgrade"], "tls-handshake-failed");
        assert_eq!(e["same_session"], false);
        assert_eq!(
            e["downgrade_finding_id"],
            format!("{}-0", out[0].session_id)
        );
        assert_eq!(e["auth_reply_code"], 535);
        assert!(kinds(&out[2]).is_empty(), "outside --fallback-window");

        // With mail, the retry is also a plaintext-fallback; AUTH outranks it.
        let retry = session(
            1_780_000_005,
            40002,
            25,
            &script(&[&GREETING, &OFFER, &LOGIN, &MAIL]),
        );
        let out = run(vec![failed_handshake(25), retry]);
        assert_eq!(
            kinds(&out[1]),
            [
                "auth-in-cleartext",
                "plaintext-fallback",
                "plaintext-by-client"
            ]
        );
        assert_eq!(out[1].verdict, "auth-in-cleartext");
        assert_no_credential(&out);
    }

    #[test]
    fn auth_inside_tls_is_not_seen() {
        let out = run(vec![session(
            1_780_000_000,
            40001,
            587,
            &script(&[&GREETING, &OFFER, &UPGRADE]),
        )]);
        assert!(out[0].correlation.cleartext_auth.is_none());
        assert!(!kinds(&out[0]).contains(&"auth-in-cleartext"));
    }
}
