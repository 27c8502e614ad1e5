-- The 25 servers with most problem sessions (country, AS and AS name: the greatest seen for the address).
--
-- Report query of stripwatch (`stripwatch report --clickhouse URL` runs this file as it is, after
-- putting --since/--until into the two window literals below; as it stands it covers
-- everything). Run by hand: clickhouse-client --database stripwatch --multiquery < queries/top_servers.sql
-- Definitions (the same as src/report/model.rs and the README's "Reports" section):
--   EHLO session  = greeting_verb = 'EHLO' and the reply was seen (ehlo_reply_code not NULL)
--   stripped      = EHLO session with starttls-stripped or starttls-missing among its findings
--   downgraded    = EHLO session with a downgrade kind among its findings
--   tls_used      = EHLO session offered STARTTLS that completed the TLS handshake
--   problem       = verdict not tls-ok, plaintext, incomplete or certificate-not-observable
-- Rates are quotients over EHLO sessions (0 when there are none).

SELECT
    server_ip,
    max(country) AS server_country,
    max(asn) AS server_asn,
    max(org) AS server_as_org,
    count() AS sessions,
    countIf(is_problem) AS problem_sessions
FROM
(
    WITH
        toDateTime('1970-01-01 00:00:00', 'UTC') AS window_since,
        toDateTime('2105-12-31 23:59:59', 'UTC') AS window_until
    SELECT
        server_ip,
        server_country AS country,
        server_asn AS asn,
        server_as_org AS org,
        NOT has(['tls-ok', 'plaintext', 'incomplete', 'certificate-not-observable'], verdict) AS is_problem
    FROM sessions FINAL
    WHERE ts >= window_since AND ts < window_until
)
GROUP BY server_ip
HAVING problem_sessions > 0
ORDER BY problem_sessions DESC, sessions DESC, server_ip
LIMIT 25
