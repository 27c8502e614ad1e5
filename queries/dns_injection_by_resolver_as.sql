-- DNS injection by resolver AS: DNS transactions of interest (dns table) per AS of the resolver
-- asked, and those with a dns-injection finding.
--
-- Report query of stripwatch (`stripwatch report --clickhouse URL` runs this file as it is, after
-- putting --since/--until into the two window literals below; as it stands it covers
-- everything). Run by hand: clickhouse-client --database stripwatch --multiquery < queries/dns_injection_by_resolver_as.sql
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
    count() AS transactions,
    countIf(is_injected) AS injected,
    round(if(transactions = 0, 0, injected / transactions), 6) AS injection_rate
FROM
(
    WITH
        toDateTime('1970-01-01 00:00:00', 'UTC') AS window_since,
        toDateTime('2105-12-31 23:59:59', 'UTC') AS window_until
    SELECT
        server_asn AS asn,
        server_as_org AS org,
        has(findings, 'dns-injection') AS is_injected
    FROM dns FINAL
    WHERE ts >= window_since AND ts < window_until
)
GROUP BY server_asn
ORDER BY injected DESC, transactions DESC, server_asn
