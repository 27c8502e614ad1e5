-- stripwatch ClickHouse schema.
--
-- Portable DDL: runs unchanged on ClickHouse 18.16 (Debian's clickhouse-server) and on current
-- releases. Every statement is idempotent (IF NOT EXISTS), so applying it again is harmless.
-- Table names are unqualified: the objects land in the database the statements run in.
--
--   stripwatch schema apply --clickhouse http://127.0.0.1:8123 [--clickhouse-database stripwatch]
-- or by hand:
--   clickhouse-client --query 'CREATE DATABASE IF NOT EXISTS stripwatch'
--   clickhouse-client --database stripwatch --multiquery < queries/schema.sql
--
-- Column names are the JSON field names of the ndjson files (sessions.ndjson, findings.ndjson,
-- dns.ndjson, certificates.ndjson). Conventions (see queries/README.md):
--   * times: `X DateTime('UTC')` (seconds) plus `X_usec UInt32` (the microseconds, 0..999999);
--   * addresses: String in the ndjson text form ("192.0.2.1", "2001:db8::1");
--   * verdicts, kinds and other enumerations: String (no Enum8: a new kind must never make an
--     insert fail; no LowCardinality: experimental on 18.16);
--   * booleans: UInt8; absent optional fields: Nullable(...) = JSON null;
--   * lists of objects: Nested (answers.name, answers.rtype, ... for `answers`);
--   * free-form JSON (finding evidence): String holding the JSON text.
--
-- Exactly once: the event tables are ReplacingMergeTree keyed by the event id, so a batch that
-- was replayed after an outage collapses to one row per id (read with FINAL, or count
-- uniqExact(id)). The rollups hold uniqExact states of the event ids, so a replayed row does
-- not count twice there either: read them with uniqExactMerge(...).
--
-- Retention: every table is partitioned by month (toYYYYMM); drop old months with
--   ALTER TABLE sessions DROP PARTITION 202601   (see queries/README.md).

-- One row per SMTP session (sessions.ndjson).
CREATE TABLE IF NOT EXISTS sessions
(
    session_id String,
    ts DateTime('UTC'),
    ts_usec UInt32,
    ts_end DateTime('UTC'),
    ts_end_usec UInt32,
    sensor String,
    client_ip String,
    client_port UInt16,
    server_ip String,
    server_port UInt16,
    community_id String,
    verdict String,
    findings Array(String),
    banner_code Nullable(UInt16),
    banner Nullable(String),
    middlebox_traits Array(String),
    greeting_verb Nullable(String),
    ehlo_name Nullable(String),
    ehlo_reply_code Nullable(UInt16),
    ehlo_reply_name Nullable(String),
    ehlo_capabilities Array(String),
    starttls_offered UInt8,
    starttls_sent UInt8,
    starttls_reply_code Nullable(UInt16),
    starttls_reply_text Nullable(String),
    implicit_tls UInt8,
    tls_started UInt8,
    tls_client_hello UInt8,
    tls_server_hello UInt8,
    tls_alert Nullable(String),
    tls_version Nullable(String),
    tls_cipher Nullable(String),
    tls_sni Nullable(String),
    tls_client_versions Array(String),
    tls_alpn Array(String),
    tls_history String,
    tls_handshake_completed UInt8,
    cert_fingerprint Nullable(String),
    cert_chain_fingerprints Array(String),
    handshake_failure Nullable(String),
    mail_transactions UInt32,
    rcpt_commands UInt32,
    data_commands UInt32,
    auth_commands UInt32,
    mail_from Array(String),
    rcpt_to Array(String),
    gaps UInt32,
    gap_bytes UInt64,
    dialog_gaps UInt32,
    mid_stream UInt8,
    end_reason String,
    client_packets UInt64,
    server_packets UInt64,
    client_bytes UInt64,
    server_bytes UInt64,
    retransmissions UInt32,
    recipient_domain Nullable(String),
    mx_host Nullable(String),
    mx_addresses Array(String),
    dns_transaction_ids Array(String),
    dns_finding_ids Array(String),
    mx_tlsa Nested(usage UInt8, selector UInt8, matching_type UInt8, data String),
    sts_txt Nullable(String),
    sts_fetch Nullable(String),
    sts_fetch_ids Array(String),
    pkix Array(String),
    dane Nullable(String),
    missing_side Nullable(String),
    truncated Array(String),
    client_country String DEFAULT '',
    client_asn UInt32 DEFAULT 0,
    client_as_org String DEFAULT '',
    server_country String DEFAULT '',
    server_asn UInt32 DEFAULT 0,
    server_as_org String DEFAULT ''
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, session_id);

-- One row per finding, of sessions and of DNS transactions (findings.ndjson).
CREATE TABLE IF NOT EXISTS findings
(
    finding_id String,
    kind String,
    session_id Nullable(String),
    ts DateTime('UTC'),
    ts_usec UInt32,
    sensor String,
    client_ip String,
    client_port UInt16,
    server_ip String,
    server_port UInt16,
    community_id String,
    evidence String,
    client_country String DEFAULT '',
    client_asn UInt32 DEFAULT 0,
    client_as_org String DEFAULT '',
    server_country String DEFAULT '',
    server_asn UInt32 DEFAULT 0,
    server_as_org String DEFAULT ''
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, finding_id);

-- One row per DNS transaction of interest (dns.ndjson). The client is the querier, the server
-- the resolver asked.
CREATE TABLE IF NOT EXISTS dns
(
    transaction_id String,
    ts DateTime('UTC'),
    ts_usec UInt32,
    sensor String,
    client_ip String,
    client_port UInt16,
    server_ip String,
    server_port UInt16,
    transport String,
    community_id String,
    id UInt16,
    qname String,
    qtype String,
    query_seen UInt8,
    query_do UInt8,
    rcode Nullable(String),
    aa UInt8,
    tc UInt8,
    ra UInt8,
    ad UInt8,
    rrsig UInt8,
    nsec UInt8,
    answers Nested(name String, rtype String, ttl UInt32, data String),
    rtt_ms Nullable(Float64),
    responses UInt32,
    response_ip_ttl Nullable(UInt8),
    findings Array(String),
    client_country String DEFAULT '',
    client_asn UInt32 DEFAULT 0,
    client_as_org String DEFAULT '',
    server_country String DEFAULT '',
    server_asn UInt32 DEFAULT 0,
    server_as_org String DEFAULT ''
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, transaction_id);

-- One row per distinct certificate and run (certificates.ndjson). `sensor` is not in the ndjson
-- file (it has one sensor per run); validity dates outside 1970..2105 are clamped to that range
-- (DateTime's), the exact text stays in the ndjson file.
CREATE TABLE IF NOT EXISTS certificates
(
    fingerprint String,
    spki_sha256 String,
    subject String,
    issuer String,
    subject_cn Nullable(String),
    san_dns Array(String),
    not_before DateTime('UTC'),
    not_after DateTime('UTC'),
    serial String,
    key_type String,
    key_bits Nullable(UInt32),
    signature_algorithm String,
    self_signed UInt8,
    is_ca UInt8,
    first_seen DateTime('UTC'),
    first_seen_usec UInt32,
    last_seen DateTime('UTC'),
    last_seen_usec UInt32,
    sessions UInt64,
    servers Array(String),
    leaf UInt8,
    sensor String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(first_seen)
ORDER BY (fingerprint, sensor, first_seen, first_seen_usec);

-- Sessions per day, country and AS of both ends, verdict and the three STARTTLS facts. The
-- states count distinct ids, so replays never count twice: read with uniqExactMerge(sessions).
CREATE TABLE IF NOT EXISTS sessions_daily
(
    day Date,
    client_country String,
    client_asn UInt32,
    server_country String,
    server_asn UInt32,
    verdict String,
    starttls_offered UInt8,
    starttls_sent UInt8,
    tls_handshake_completed UInt8,
    sessions AggregateFunction(uniqExact, String),
    clients AggregateFunction(uniqExact, String),
    servers AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (day, client_country, client_asn, server_country, server_asn, verdict,
          starttls_offered, starttls_sent, tls_handshake_completed);

CREATE MATERIALIZED VIEW IF NOT EXISTS sessions_daily_mv TO sessions_daily AS
SELECT
    toDate(ts) AS day,
    client_country,
    client_asn,
    server_country,
    server_asn,
    verdict,
    starttls_offered,
    starttls_sent,
    tls_handshake_completed,
    uniqExactState(session_id) AS sessions,
    uniqExactState(client_ip) AS clients,
    uniqExactState(server_ip) AS servers
FROM sessions
GROUP BY day, client_country, client_asn, server_country, server_asn, verdict,
         starttls_offered, starttls_sent, tls_handshake_completed;

-- Findings per day, country and AS of both ends, and kind: uniqExactMerge(findings).
CREATE TABLE IF NOT EXISTS findings_daily
(
    day Date,
    client_country String,
    client_asn UInt32,
    server_country String,
    server_asn UInt32,
    kind String,
    findings AggregateFunction(uniqExact, String),
    servers AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (day, client_country, client_asn, server_country, server_asn, kind);

CREATE MATERIALIZED VIEW IF NOT EXISTS findings_daily_mv TO findings_daily AS
SELECT
    toDate(ts) AS day,
    client_country,
    client_asn,
    server_country,
    server_asn,
    kind,
    uniqExactState(finding_id) AS findings,
    uniqExactState(server_ip) AS servers
FROM findings
GROUP BY day, client_country, client_asn, server_country, server_asn, kind;

-- DNS transactions per day, country and AS of querier and resolver, question type and DNSSEC
-- facts: uniqExactMerge(transactions).
CREATE TABLE IF NOT EXISTS dns_daily
(
    day Date,
    client_country String,
    client_asn UInt32,
    server_country String,
    server_asn UInt32,
    qtype String,
    ad UInt8,
    rrsig UInt8,
    transactions AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (day, client_country, client_asn, server_country, server_asn, qtype, ad, rrsig);

CREATE MATERIALIZED VIEW IF NOT EXISTS dns_daily_mv TO dns_daily AS
SELECT
    toDate(ts) AS day,
    client_country,
    client_asn,
    server_country,
    server_asn,
    qtype,
    ad,
    rrsig,
    uniqExactState(transaction_id) AS transactions
FROM dns
GROUP BY day, client_country, client_asn, server_country, server_asn, qtype, ad, rrsig;
