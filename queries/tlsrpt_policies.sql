-- TLS-RPT policy rows per recipient domain and MX host (see below).
--
-- Report query of stripwatch (`stripwatch report --clickhouse URL` runs this file as it is, after
-- putting --since/--until into the two window literals below; as it stands it covers
-- everything). Run by hand: clickhouse-client --database stripwatch --multiquery < queries/tlsrpt_policies.sql
-- Definitions (the same as src/report/model.rs and the README's "Reports" section):
--   EHLO session  = greeting_verb = 'EHLO' and the reply was seen (ehlo_reply_code not NULL)
--   stripped      = EHLO session with starttls-stripped or starttls-missing among its findings
--   downgraded    = EHLO session with a downgrade kind among its findings
--   tls_used      = EHLO session offered STARTTLS that completed the TLS handshake
--   problem       = verdict not tls-ok, plaintext, incomplete or certificate-not-observable
-- Rates are quotients over EHLO sessions (0 when there are none).
-- TLS-RPT (RFC 8460) policies: sessions with a recipient domain (linked to the client's MX
-- lookup), per domain and MX host. A session fails when one of its findings maps to an RFC 8460
-- result type (the most severe such finding decides: findings are stored most severe first); it
-- succeeds when it has none and completed the TLS handshake; other sessions are in neither count.
-- The policy type is 'tlsa' when any session saw a TLSA record for the MX host, else 'sts' when
-- any saw its MTA-STS policy fetch succeed (sts_fetch = 'ok'; the mode inside HTTPS stays
-- unknown), else 'no-policy-found'.

SELECT
    domain AS policy_domain,
    mx AS mx_host,
    if(max(has_tlsa) = 1, 'tlsa', if(max(has_sts) = 1, 'sts', 'no-policy-found')) AS policy_type,
    countIf(deciding = '' AND tls_handshake_completed = 1) AS successful,
    countIf(deciding != '') AS failed
FROM
(
    WITH
        toDateTime('1970-01-01 00:00:00', 'UTC') AS window_since,
        toDateTime('2105-12-31 23:59:59', 'UTC') AS window_until
    SELECT
        ifNull(recipient_domain, '') AS domain,
        ifNull(mx_host, '') AS mx,
        notEmpty(mx_tlsa.data) AS has_tlsa,
        ifNull(sts_fetch, '') = 'ok' AS has_sts,
        tls_handshake_completed,
        arrayFirst(k -> has(['starttls-stripped', 'cleartext-after-starttls', 'dane-required', 'mta-sts-fetch-blocked',
                            'tlsa-invalid', 'plaintext-fallback', 'starttls-missing',
                            'tls-handshake-failed', 'starttls-command-rejected', 'certificate-host-mismatch',
                            'certificate-not-trusted', 'certificate-expired', 'certificate-self-signed',
                            'certificate-weak', 'starttls-not-supported', 'certificate-absent'], k), findings) AS deciding
    FROM sessions FINAL
    WHERE ts >= window_since AND ts < window_until AND ifNull(recipient_domain, '') != ''
)
GROUP BY domain, mx
ORDER BY policy_domain, mx_host
