-- Per server AS (0 when unknown; the name is the greatest server_as_org seen): stripping rate and STARTTLS adoption.
--
-- Report query of stripwatch (`stripwatch report --clickhouse URL` runs this file as it is, after
-- putting --since/--until into the two window literals below; as it stands it covers
-- everything). Run by hand: clickhouse-client --database stripwatch --multiquery < queries/by_server_as.sql
-- Definitions (the same as src/report/model.rs and the README's "Reports" section):
--   EHLO session  = greeting_verb = 'EHLO' and the reply was seen (ehlo_reply_code not NULL)
--   stripped      = EHLO session with starttls-stripped or starttls-missing among its findings
--   downgraded    = EHLO session with a downgrade kind among its findings
--   tls_used      = EHLO session offered STARTTLS that completed the TLS handshake
--   problem       = verdict not tls-ok, plaintext, incomplete or certificate-not-observable
-- Rates are quotients over EHLO sessions (0 when there are none).

SELECT
    asn AS server_asn,
    max(org) AS server_as_org,
    count() AS sessions,
    countIf(is_ehlo) AS ehlo_sessions,
    countIf(is_ehlo AND is_stripped) AS stripped,
    countIf(is_ehlo AND is_downgraded) AS downgraded,
    countIf(is_ehlo AND is_offered) AS starttls_offered,
    countIf(is_ehlo AND is_offered AND is_tls) AS tls_used,
    countIf(is_problem) AS problem_sessions,
    round(if(ehlo_sessions = 0, 0, stripped / ehlo_sessions), 6) AS stripping_rate,
    round(if(ehlo_sessions = 0, 0, downgraded / ehlo_sessions), 6) AS downgrade_rate,
    round(if(ehlo_sessions = 0, 0, starttls_offered / ehlo_sessions), 6) AS offer_rate,
    round(if(ehlo_sessions = 0, 0, tls_used / ehlo_sessions), 6) AS adoption_rate
FROM
(
    WITH
        toDateTime('1970-01-01 00:00:00', 'UTC') AS window_since,
        toDateTime('2105-12-31 23:59:59', 'UTC') AS window_until
    SELECT
        server_asn AS asn,
        server_as_org AS org,
        ifNull(greeting_verb, '') = 'EHLO' AND NOT isNull(ehlo_reply_code) AS is_ehlo,
        arrayExists(k -> has(['starttls-stripped', 'starttls-missing'], k), findings) AS is_stripped,
        arrayExists(k -> has(['starttls-stripped', 'starttls-missing', 'starttls-command-rejected',
                              'tls-handshake-failed', 'plaintext-fallback',
                              'cleartext-after-starttls', 'dane-required', 'auth-in-cleartext'], k), findings) AS is_downgraded,
        starttls_offered = 1 AS is_offered,
        tls_handshake_completed = 1 AS is_tls,
        NOT has(['tls-ok', 'plaintext', 'incomplete', 'certificate-not-observable'], verdict) AS is_problem
    FROM sessions FINAL
    WHERE ts >= window_since AND ts < window_until
)
GROUP BY server_asn
ORDER BY ehlo_sessions DESC, sessions DESC, server_asn
