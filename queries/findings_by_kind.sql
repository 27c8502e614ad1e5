-- Sessions per finding kind, and the distinct servers among them. Certificate problems are the
-- certificate-* kinds (except certificate-not-observable) and tlsa-invalid.
--
-- Report query of stripwatch (`stripwatch report --clickhouse URL` runs this file as it is, after
-- putting --since/--until into the two window literals below; as it stands it covers
-- everything). Run by hand: clickhouse-client --database stripwatch --multiquery < queries/findings_by_kind.sql
-- Definitions (the same as src/report/model.rs and the README's "Reports" section):
--   EHLO session  = greeting_verb = 'EHLO' and the reply was seen (ehlo_reply_code not NULL)
--   stripped      = EHLO session with starttls-stripped or starttls-missing among its findings
--   downgraded    = EHLO session with a downgrade kind among its findings
--   tls_used      = EHLO session offered STARTTLS that completed the TLS handshake
--   problem       = verdict not tls-ok, plaintext, incomplete or certificate-not-observable
-- Rates are quotients over EHLO sessions (0 when there are none).

SELECT
    kind,
    uniqExact(session_id) AS sessions,
    uniqExact(server_ip) AS servers
FROM
(
    WITH
        toDateTime('1970-01-01 00:00:00', 'UTC') AS window_since,
        toDateTime('2105-12-31 23:59:59', 'UTC') AS window_until
    SELECT
        session_id,
        server_ip,
        findings
    FROM sessions FINAL
    WHERE ts >= window_since AND ts < window_until
)
ARRAY JOIN findings AS kind
GROUP BY kind
ORDER BY sessions DESC, kind
