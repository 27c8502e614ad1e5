//! `tlsrpt/<domain>.json`: one RFC 8460 aggregate report per recipient domain, in the JSON
//! shape of RFC 8460 section 4.4, so the domain's operator can read what a passive observer saw
//! with the tools they already use for TLS-RPT.

use super::model::{FailureRow, PolicyRow, Report};
use super::window::{day_start, rfc3339_secs};
use super::{ReportError, TlsrptIdentity};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The report (RFC 8460 section 4.4).
#[derive(Serialize)]
pub struct TlsReport {
    /// Who made it.
    #[serde(rename = "organization-name")]
    pub organization_name: String,
    /// The period covered.
    #[serde(rename = "date-range")]
    pub date_range: DateRange,
    /// Whom to contact.
    #[serde(rename = "contact-info")]
    pub contact_info: String,
    /// Unique per report (domain and period).
    #[serde(rename = "report-id")]
    pub report_id: String,
    /// One entry per MX host of the domain.
    pub policies: Vec<PolicyEntry>,
}

/// `date-range`.
#[derive(Serialize)]
pub struct DateRange {
    /// Start, RFC 3339.
    #[serde(rename = "start-datetime")]
    pub start_datetime: String,
    /// End, RFC 3339.
    #[serde(rename = "end-datetime")]
    pub end_datetime: String,
}

/// One `policies[]` entry.
#[derive(Serialize)]
pub struct PolicyEntry {
    /// The policy applied.
    pub policy: Policy,
    /// Session counts.
    pub summary: PolicySummary,
    /// Failures, grouped.
    #[serde(rename = "failure-details", skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetail>,
}

/// `policy`.
#[derive(Serialize)]
pub struct Policy {
    /// `tlsa`, `sts` or `no-policy-found`.
    #[serde(rename = "policy-type")]
    pub policy_type: String,
    /// The recipient domain.
    #[serde(rename = "policy-domain")]
    pub policy_domain: String,
    /// The MX host (when known).
    #[serde(rename = "mx-host", skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

/// `summary`.
#[derive(Serialize)]
pub struct PolicySummary {
    /// Sessions whose TLS negotiation succeeded.
    #[serde(rename = "total-successful-session-count")]
    pub total_successful_session_count: u64,
    /// Sessions that failed.
    #[serde(rename = "total-failure-session-count")]
    pub total_failure_session_count: u64,
}

/// One `failure-details[]` entry.
#[derive(Serialize)]
pub struct FailureDetail {
    /// RFC 8460 result type.
    #[serde(rename = "result-type")]
    pub result_type: String,
    /// The SMTP client.
    #[serde(rename = "sending-mta-ip")]
    pub sending_mta_ip: String,
    /// The MX host the client meant.
    #[serde(
        rename = "receiving-mx-hostname",
        skip_serializing_if = "String::is_empty"
    )]
    pub receiving_mx_hostname: String,
    /// The address it connected to.
    #[serde(rename = "receiving-ip")]
    pub receiving_ip: String,
    /// Sessions.
    #[serde(rename = "failed-session-count")]
    pub failed_session_count: u64,
    /// Our finding kind.
    #[serde(rename = "failure-reason-code")]
    pub failure_reason_code: String,
}

/// The period of the reports: the window asked for, else the UTC days that have sessions.
fn date_range(r: &Report) -> (String, String) {
    let (first, last) = r
        .day_span()
        .map(|(a, b)| (day_start(a), day_start(b)))
        .unwrap_or((None, None));
    let start = r.window.since.or(first).unwrap_or(0);
    let end = r
        .window
        .until
        .map(|u| u - 1)
        .or(last.map(|l| l + 86_399))
        .unwrap_or(start);
    (rfc3339_secs(start), rfc3339_secs(end))
}

/// The reports, one per policy domain, in domain order.
pub fn build(r: &Report, id: &TlsrptIdentity) -> Vec<(String, TlsReport)> {
    let mut domains: BTreeMap<&str, (Vec<&PolicyRow>, Vec<&FailureRow>)> = BTreeMap::new();
    for p in &r.tlsrpt_policies {
        domains.entry(&p.policy_domain).or_default().0.push(p);
    }
    for f in &r.tlsrpt_failures {
        domains.entry(&f.policy_domain).or_default().1.push(f);
    }
    let (start, end) = date_range(r);
    domains
        .into_iter()
        .map(|(domain, (policies, failures))| {
            let report = TlsReport {
                organization_name: id.organization.clone(),
                date_range: DateRange {
                    start_datetime: start.clone(),
                    end_datetime: end.clone(),
                },
                contact_info: id.contact.clone(),
                report_id: format!("{start}_{end}_{domain}@{}", id.organization),
                policies: policies
                    .iter()
                    .map(|p| PolicyEntry {
                        policy: Policy {
                            policy_type: p.policy_type.clone(),
                            policy_domain: p.policy_domain.clone(),
                            mx_host: if p.mx_host.is_empty() {
                                vec![]
                            } else {
                                vec![p.mx_host.clone()]
                            },
                        },
                        summary: PolicySummary {
                            total_successful_session_count: p.successful,
                            total_failure_session_count: p.failed,
                        },
                        failure_details: failures
                            .iter()
                            .filter(|f| f.mx_host == p.mx_host)
                            .map(|f| FailureDetail {
                                result_type: f.result_type.clone(),
                                sending_mta_ip: f.sending_mta_ip.clone(),
                                receiving_mx_hostname: f.mx_host.clone(),
                                receiving_ip: f.receiving_ip.clone(),
                                failed_session_count: f.failed_session_count,
                                failure_reason_code: f.failure_reason_code.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
            };
            (domain.to_string(), report)
        })
        .collect()
}

/// A file name for a domain: lower case, and anything but letters, digits, `.` and `-` becomes
/// `_` (a domain from the wire must not climb out of the directory).
pub fn file_name(domain: &str) -> String {
    let mut s: String = domain
        .trim_end_matches('.')
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    format!("{s}.json")
}

/// Writes every report into `dir`, and removes the other `.json` files there: the directory
/// holds exactly the reports of this window (a stale report of a domain that is no longer in
/// the window would be mistaken for a current one).
pub fn write(r: &Report, id: &TlsrptIdentity, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::io("cannot create", dir, e))?;
    let reports = build(r, id);
    let keep: std::collections::HashSet<String> =
        reports.iter().map(|(d, _)| file_name(d)).collect();
    let entries = std::fs::read_dir(dir).map_err(|e| ReportError::io("cannot read", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".json") && !keep.contains(&name) && entry.path().is_file() {
            std::fs::remove_file(entry.path())
                .map_err(|e| ReportError::io("cannot remove", &entry.path(), e))?;
        }
    }
    let mut written = Vec::new();
    for (domain, report) in reports {
        let path = dir.join(file_name(&domain));
        let mut text = serde_json::to_string_pretty(&report)
            .map_err(|e| ReportError::io("cannot write", &path, std::io::Error::other(e)))?;
        text.push('\n');
        std::fs::write(&path, text).map_err(|e| ReportError::io("cannot write", &path, e))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_in_the_directory() {
        assert_eq!(file_name("Example.COM."), "example.com.json");
        assert_eq!(file_name("../etc/passwd"), "_.._etc_passwd.json");
        assert_eq!(file_name(""), "_.json");
    }
}
