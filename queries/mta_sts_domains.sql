-- MTA-STS (RFC 8461) per recipient domain: the sessions to each domain that had MTA-STS evidence.
--
-- Report query of stripwatch (`stripwatch report --clickhouse URL` runs this file as it is, after
-- putting --since/--until into the two window literals below; as it stands it covers
-- everything). Run by hand: clickhouse-client --database stripwatch --multiquery < queries/mta_sts_domains.sql
-- Definitions (the same as src/report/model.rs and the README's "Reports" section):
--   EHLO session  = greeting_verb = 'EHLO' and the reply was seen (ehlo_reply_code not NULL)
--   stripped      = EHLO session with starttls-stripped or starttls-missing among its findings
--   downgraded    = EHLO session with a downgrade kind among its findings
--   tls_used      = EHLO session offered STARTTLS that completed the TLS handshake
--   problem       = verdict not tls-ok, plaintext, incomplete or certificate-not-observable
-- Rates are quotients over EHLO sessions (0 when there are none).
-- Sessions with a recipient domain (as for TLS-RPT), per domain; a domain is a row when any of
-- its sessions has MTA-STS evidence: sts_txt not empty (the client saw v=STSv1), sts_fetch other
-- than 'not-seen', or an mta-sts-fetch-blocked or mta-sts-plaintext finding. sessions counts all
-- sessions to the domain; the other columns count sessions with that evidence.

SELECT
    domain AS recipient_domain,
    count() AS sessions,
    countIf(seen = 1) AS sts_seen,
    countIf(outcome = 'ok') AS fetch_ok,
    countIf(blocked = 1) AS fetch_blocked,
    countIf(plain = 1) AS plaintext
FROM
(
    WITH
        toDateTime('1970-01-01 00:00:00', 'UTC') AS window_since,
        toDateTime('2105-12-31 23:59:59', 'UTC') AS window_until
    SELECT
        ifNull(recipient_domain, '') AS domain,
        ifNull(sts_txt, '') != '' AS seen,
        ifNull(sts_fetch, '') AS outcome,
        has(findings, 'mta-sts-fetch-blocked') AS blocked,
        has(findings, 'mta-sts-plaintext') AS plain,
        (seen = 1 OR (outcome != '' AND outcome != 'not-seen') OR blocked = 1 OR plain = 1) AS evidence
    FROM sessions FINAL
    WHERE ts >= window_since AND ts < window_until AND ifNull(recipient_domain, '') != ''
)
GROUP BY domain
HAVING max(evidence) = 1
ORDER BY recipient_domain
