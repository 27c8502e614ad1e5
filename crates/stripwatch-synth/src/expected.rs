//! The `NAME.expected.json` files: what a correct analyzer reports for a scenario capture.
//!
//! The session fields come from the dialog description ([`Facts`]); the findings are stated
//! by each scenario from the analyzer's rules; the verdict is derived from the findings with
//! the project's severity order, so that it is written down once.

use std::collections::BTreeMap;

use serde::Serialize;

use super::smtp_dialog::Facts;

/// Verdict severity, most severe first: the analyzer's own order, written down once.
fn severity() -> impl Iterator<Item = &'static str> {
    stripwatch::record::FindingKind::ALL
        .iter()
        .map(|k| k.as_str())
}

/// One SMTP session as the analyzer should report it. A field left `None` is one the
/// generator cannot vouch for (it is then omitted from the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedSession {
    /// The server's TCP port.
    pub server_port: u16,
    /// The session's verdict.
    pub verdict: &'static str,
    /// Distinct finding kinds, sorted.
    pub findings: Vec<&'static str>,
    /// The EHLO reply offered STARTTLS exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starttls_offered: Option<bool>,
    /// The client sent STARTTLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starttls_sent: Option<bool>,
    /// The reply code to STARTTLS (`Some(None)` is written as `null`: no STARTTLS was sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starttls_reply_code: Option<Option<u16>>,
    /// The client's first bytes after the 220 (or on port 465) were a TLS record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_started: Option<bool>,
    /// Mail transactions seen in cleartext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_transactions: Option<u64>,
    /// The recipient domain the session must be linked to through DNS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient_domain: Option<&'static str>,
    /// The MX host the session must be linked to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mx_host: Option<&'static str>,
    /// Every finding, repeated as often as the analyzer should emit it (for `finding_counts`).
    #[serde(skip)]
    pub finding_events: Vec<&'static str>,
}

impl ExpectedSession {
    /// A session whose dialog was fully captured: facts from the dialog, `findings` from the
    /// scenario (repeat a kind to expect it more than once).
    pub fn complete(server_port: u16, facts: &Facts, findings: &[&'static str]) -> ExpectedSession {
        let mut findings = findings.to_vec();
        if facts.tls_completed {
            // The generated TLS is a resumed session: no Certificate message is ever sent, so
            // the certificate cannot be judged, which is never a pass.
            findings.push("certificate-not-observable");
        }
        let mut distinct = findings.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let verdict = severity()
            .find(|k| distinct.contains(k))
            .unwrap_or(if facts.tls_completed {
                "tls-ok"
            } else {
                "plaintext"
            });
        ExpectedSession {
            server_port,
            verdict,
            findings: distinct,
            starttls_offered: facts.starttls_offered,
            starttls_sent: Some(facts.starttls_sent),
            starttls_reply_code: Some(facts.starttls_reply_code),
            tls_started: Some(facts.tls_started),
            mail_transactions: Some(facts.mail_transactions),
            recipient_domain: None,
            mx_host: None,
            finding_events: findings,
        }
    }

    /// What a capture of the client's direction alone shows (one-sided captures in DESIGN.md):
    /// an upgrade that completed, whose certificate went by unseen, or mail in the clear; never a
    /// finding about the offer, which only the server's side shows.
    pub fn client_only(server_port: u16, facts: &Facts) -> ExpectedSession {
        let (verdict, findings) = if facts.tls_completed {
            (
                "certificate-not-observable",
                vec!["certificate-not-observable"],
            )
        } else if facts.mail_transactions > 0 {
            ("plaintext", Vec::new())
        } else {
            ("incomplete", Vec::new())
        };
        ExpectedSession {
            verdict,
            finding_events: findings.clone(),
            findings,
            starttls_sent: Some(facts.starttls_sent),
            tls_started: Some(facts.tls_started),
            mail_transactions: Some(facts.mail_transactions),
            ..ExpectedSession::incomplete(server_port)
        }
    }

    /// A session the capture shows too little of to judge.
    pub fn incomplete(server_port: u16) -> ExpectedSession {
        ExpectedSession {
            server_port,
            verdict: "incomplete",
            findings: Vec::new(),
            starttls_offered: None,
            starttls_sent: None,
            starttls_reply_code: None,
            tls_started: None,
            mail_transactions: None,
            recipient_domain: None,
            mx_host: None,
            finding_events: Vec::new(),
        }
    }
}

/// The whole expected-results file.
#[derive(Debug, Clone, Serialize)]
pub struct Expected {
    /// What the scenario shows, for a human.
    pub description: String,
    /// Always `stripwatch synth` (the generator's name when the committed captures were first
    /// written; kept so that they stay byte for byte the same): generated, not recorded.
    pub source: &'static str,
    /// Every SMTP session, in order of its first packet.
    pub sessions: Vec<ExpectedSession>,
    /// Findings by kind over the whole capture (absent kinds are zero).
    pub finding_counts: BTreeMap<&'static str, u64>,
}

impl Expected {
    /// Collects the sessions and counts their findings.
    pub fn new(description: &str, sessions: Vec<ExpectedSession>) -> Expected {
        let mut finding_counts = BTreeMap::new();
        for kind in sessions.iter().flat_map(|s| &s.finding_events) {
            *finding_counts.entry(*kind).or_insert(0) += 1;
        }
        Expected {
            description: description.to_string(),
            source: "stripwatch synth",
            sessions,
            finding_counts,
        }
    }

    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synth_verdict_follows_severity_and_json_has_the_agreed_shape() {
        let facts = Facts {
            starttls_offered: Some(true),
            starttls_sent: false,
            starttls_reply_code: None,
            tls_started: false,
            tls_completed: false,
            mail_transactions: 1,
        };
        let s =
            ExpectedSession::complete(25, &facts, &["plaintext-fallback", "plaintext-by-client"]);
        assert_eq!(s.verdict, "plaintext-fallback");
        assert_eq!(
            s.findings,
            vec!["plaintext-by-client", "plaintext-fallback"]
        );
        let e = Expected::new("d", vec![s, ExpectedSession::incomplete(25)]);
        let v: serde_json::Value = serde_json::from_str(&e.to_json().unwrap()).unwrap();
        assert_eq!(v["source"], "stripwatch synth");
        assert_eq!(
            v["sessions"][0]["starttls_reply_code"],
            serde_json::Value::Null
        );
        assert!(
            v["sessions"][0]
                .as_object()
                .unwrap()
                .contains_key("starttls_reply_code")
        );
        assert_eq!(v["sessions"][1].as_object().unwrap().len(), 3);
        assert_eq!(v["finding_counts"]["plaintext-fallback"], 1);
        assert_eq!(v["finding_counts"].as_object().unwrap().len(), 2);
    }
}
