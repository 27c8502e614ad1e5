-- Sessions per UTC day and verdict (the verdict is the most severe finding, else tls-ok, plaintext or incomplete).
--
-- Report query of stripwatch (`stripwatch report --clickhouse URL` runs this file as it is, after
-- putting --since/--until into the two window literals below; as it stands it covers
-- everything). Run by hand: clickhouse-client --database stripwatch --multiquery < queries/verdicts_by_day.sql
-- Definitions (the same as src/report/model.rs and the README's "Reports" section):
--   EHLO session  = greeting_verb = 'EHLO' and the reply was seen (ehlo_reply_code not NULL)
--   stripped      = EHLO session with starttls-stripped or starttls-missing among its findings
--   downgraded    = EHLO session with a downgrade kind among its findings
--   tls_used      = EHLO session offered STARTTLS that completed the TLS handshake
--   problem       = verdict not tls-ok, plaintext, incomplete or certificate-not-observable
-- Rates are quotients over EHLO sessions (0 when there are none).

SELECT
    day,
    verdict,
    count() AS sessions
FROM
(
    WITH
        toDateTime('1970-01-01 00:00:00', 'UTC') AS window_since,
        toDateTime('2105-12-31 23:59:59', 'UTC') AS window_until
    SELECT
        toString(toDate(ts)) AS day,
        verdict
    FROM sessions FINAL
    WHERE ts >= window_since AND ts < window_until
)
GROUP BY day, verdict
ORDER BY day, verdict
