#!/usr/bin/env bash
# Make real SMTP captures: Postfix -> (on-path proxy) -> Postfix in network namespaces,
# captured with tcpdump, plus NAME.expected.json for each capture.
#
#   sudo scripts/real-captures/make.sh [--out DIR] [--keep-logs DIR] [--live BIN DIR]
#
# --live BIN DIR also runs `BIN live` on the veth tcpdump listens on, with tcpdump's filter,
# from before the first capture to after the last (SIGTERM, exit 0 insisted on): its records go
# to DIR, its log to DIR.log, its summary (--json) to DIR.json. The two-sided captures of the
# one-sided cases are kept as NAME.both.pcap in the --out directory, so that the capture files
# hold exactly the packets live saw (tests/real_software.rs compares the two).
# Debian bookworm, run as root. Installs what it needs. Uses only addresses inside the
# namespaces it creates (10.77.0.0/24 and 10.77.1.0/24 on veth pairs between them).
# See README.md beside this file.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/netns.sh
. "$HERE/../lib/netns.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/relay.sh
. "$HERE/../lib/relay.sh"
LOG_TAG="make.sh"
LIVE_BIN=""
LIVE_OUT=""
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --live)
            [ $# -ge 3 ] || { echo "--live needs BIN and DIR" >&2; exit 2; }
            LIVE_BIN=$(realpath "$2"); LIVE_OUT=$(realpath -m "$3"); shift 3 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
capture_script_args "${ARGS[@]}"

NS_C=swcap-client
NS_M=swcap-mid
NS_S=swcap-server
C_IP=10.77.0.1      # Postfix sender (swcap-client)
S_IP=10.77.0.2      # the server address S the client connects to (proxy on swcap-mid)
M_IP=10.77.1.1      # swcap-mid, server-facing side
R_IP=10.77.1.2      # the real receiving Postfix (swcap-server)
VETH=swc
CAPTURE_SOURCE=scripts/real-captures/make.sh
FAILURE_LOGS="client/maillog server/maillog proxy.log proxy.out tcpdump.err live.err"

ensure_packages() {
    need_base
    install_needed
}

# ---------------------------------------------------------------- cleanup (called by on_exit)

teardown() {
    # stop Postfix instances politely first (master then ends its children)
    postfix_abort client server
    netns_delete $NS_C $NS_M $NS_S
}

keep_logs() {
    cp "$W"/client/maillog "$1/client.maillog" 2>/dev/null
    cp "$W"/server/maillog "$1/server.maillog" 2>/dev/null
    cp "$W"/proxy.log "$1/proxy.log" 2>/dev/null
    cp "$W"/proxy.out "$1/proxy.out" 2>/dev/null
}

remove_partial() { rm -f "$OUT"/.real-*.tmp 2>/dev/null; }

# ---------------------------------------------------------------- stripwatch live (--live)

LIVE_PID=""
STAMP_PID=""
# start_live: `BIN live` on the veth tcpdump listens on, with tcpdump's filter (so both see the
# same packets), holding sessions for a later offer as long as `analyze` does for a whole run.
# Two packet sockets give a packet the same time only if the kernel stamped it once for every
# tap, which it does while some socket on the host asks for receive timestamps (the
# netstamp_needed key); otherwise each socket stamps its own copy, microseconds apart, and
# live's session ids (made from the first packet's time) differ from those of the tcpdump
# files. So a UDP socket with SO_TIMESTAMP is held open while live runs.
start_live() {
    [ -n "$LIVE_BIN" ] || return 0
    rm -rf "$LIVE_OUT" "$LIVE_OUT.log" "$LIVE_OUT.json"
    nsx "$NS_C" /usr/bin/python3 -c 'import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 29, 1)  # SO_TIMESTAMP (Python does not name it)
time.sleep(3600)' &
    STAMP_PID=$!
    sleep 0.3
    kill -0 "$STAMP_PID" 2>/dev/null || die "could not hold a socket with SO_TIMESTAMP"
    log "starting $LIVE_BIN live on $VETH-c"
    ip netns exec "$NS_C" "$LIVE_BIN" live -i "$VETH-c" --allow-root --out "$LIVE_OUT" \
        --bpf "tcp port $RIG_PORT" --hold 3600 --no-report --json --log-format json \
        >"$LIVE_OUT.json" 2>"$LIVE_OUT.log" &
    LIVE_PID=$!
    wait_for 20 "stripwatch live capturing" grep -q "capturing on $VETH-c" "$LIVE_OUT.log"
}

# stop_live: SIGTERM; live must exit 0 within 30 s.
stop_live() {
    [ -n "$LIVE_PID" ] || return 0
    local rc=0 i
    kill -TERM "$LIVE_PID"
    for ((i = 0; i < 300; i++)); do
        kill -0 "$LIVE_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$LIVE_PID" 2>/dev/null && die "stripwatch live did not stop within 30 s of SIGTERM"
    wait "$LIVE_PID" || rc=$?
    LIVE_PID=""
    [ "$rc" = 0 ] || { tail -n 20 "$LIVE_OUT.log" >&2; die "stripwatch live exited with $rc"; }
    stop_pid "$STAMP_PID" TERM 5
    STAMP_PID=""
    log "stripwatch live stopped cleanly; records in $LIVE_OUT"
}

# ---------------------------------------------------------------- the sending Postfix

setup_postfix() {
    local c=$W/client
    mkdir -p "$c/etc" "$c/queue" "$c/data"
    chown postfix "$c/data"
    write_master_cf "$c/etc/master.cf"
    { common_main_cf "$c"; cat <<EOF
myhostname = client.swcap.test
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1, $C_IP
smtp_bind_address = $C_IP
relayhost = [$S_IP]:25
smtp_tls_security_level = may
smtp_tls_loglevel = 1
# Postfix falls back to plaintext after a failed TLS handshake only for a message that
# has waited at least minimal_backoff_time (default 300s) in the queue: shorten it so
# that the break-tls capture shows the fallback within seconds.
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
EOF
    } > "$c/etc/main.cf"
    start_receiver
    log "starting the sending Postfix"
    nsx $NS_C postfix -c "$c/etc" start >>"$W/postfix-start.log" 2>&1 \
        || { cat "$W/postfix-start.log" >&2; die "sending Postfix did not start"; }
    wait_for 10 "sending Postfix pickup" test -S "$c/queue/public/pickup"
}

# ---------------------------------------------------------------- proxy, capture, delivery

final_status_count() { count_in "$W/client/maillog" ' status=(sent|bounced|deferred)'; }
sent_or_flush() { # sent_or_flush SENT0 FINAL0: true once a sent/bounced line is new
    local final
    [ "$(count_in "$W/client/maillog" ' status=(sent|bounced)')" -gt "$1" ] && return 0
    final=$(final_status_count)
    if [ "$final" -gt "$2" ] && [ "$final" -gt "${LAST_FLUSH_AT:-0}" ]; then
        LAST_FLUSH_AT=$final
        sleep 1.1  # minimal_backoff_time
        nsx $NS_C postqueue -c "$W/client/etc" -f >/dev/null 2>&1 || true
    fi
    return 1
}
sent_count() { count_in "$W/client/maillog" ' status=sent'; }

N_MSG=0
deliver() { # deliver MODE: one message through the proxy in MODE; waits for the outcome
    local mode=$1 before_final before_sent
    N_MSG=$((N_MSG + 1))
    start_proxy "$mode"
    before_final=$(final_status_count)
    before_sent=$(sent_count)
    log "delivery $N_MSG through the proxy in mode '$mode'"
    nsx $NS_C sendmail -C "$W/client/etc" -f alice@client.swcap.test bob@swcap.test <<EOF
From: Alice Example <alice@client.swcap.test>
To: Bob Example <bob@swcap.test>
Subject: stripwatch capture test $N_MSG ($mode)
Message-ID: <swcap-$N_MSG-$$@client.swcap.test>

Hello Bob,

this is test message number $N_MSG for the stripwatch captures.
It contains nothing of interest.

Alice
EOF
    # a deferral (break-tls) is retried by the queue manager after 1-2 s; flush to be sure
    wait_for 30 "delivery $N_MSG to finish" sent_or_flush "$before_sent" "$before_final"
    wait_for 15 "the proxy's connections to close" proxy_idle
    stop_proxy
    if [ "$(sent_count)" -le "$before_sent" ]; then
        grep -E ' status=' "$W/client/maillog" | tail -n 3 >&2
        die "delivery $N_MSG ($mode) was not sent"
    fi
    grep -E ' status=sent' "$W/client/maillog" | tail -n 1 | sed 's/^/    postfix: /' >&2
}

sender_done() { [ -z "$(find "$W/client/queue/deferred" "$W/client/queue/active" "$W/client/queue/incoming" -type f 2>/dev/null)" ]; }

# capture_one_sided NAME SIDE DESCRIPTION: a delivery through the proxy while two tcpdumps run on
# the client's link: one sees both directions, the other only SIDE's packets (client or server),
# as a one-way tap or asymmetric routing would. SIDE client: Postfix's smtp-source sends two
# messages of two recipients each over one session (it never uses STARTTLS), proxy in pass mode.
# SIDE server: Postfix sends one message through the proxy in overwrite mode. The expected result
# of the one-sided capture is expect.py's view of the two-sided one, less what only the missing
# side can show (one_sided.py).
capture_one_sided() {
    local name=$1 side=$2 desc=$3
    local full="$W/$name.both.pcap" tmp="$OUT/.$name.pcap.tmp" one_pid kept
    case "$side" in
        client) kept=$C_IP ;;
        server) kept=$S_IP ;;
        *) die "capture_one_sided: side is client or server, not '$side'" ;;
    esac
    log "=== $name"
    start_capture "$full"
    rm -f "$W/tcpdump-one.err"
    ip netns exec "$NS_C" tcpdump -i "$VETH-c" -s 262144 --immediate-mode -U -n -w "$tmp" \
        "tcp port 25 and src host $kept" 2>"$W/tcpdump-one.err" &
    one_pid=$!
    wait_for 10 "one-sided tcpdump listening" grep -q "listening on" "$W/tcpdump-one.err"
    if [ "$side" = client ]; then
        start_proxy pass
        nsx "$NS_C" timeout 30 smtp-source -d -m 2 -r 2 -M client.swcap.test \
            -f alice@client.swcap.test -t bob@swcap.test "$S_IP:25" \
            || die "smtp-source failed"
        wait_for 15 "the proxy's connections to close" proxy_idle
        stop_proxy
    else
        deliver overwrite
    fi
    stop_capture
    sleep 0.3
    stop_pid "$one_pid" TERM 10
    /usr/bin/python3 "$HERE/expect.py" "$full" --description "$desc" --out "$W/$name.both.json"
    /usr/bin/python3 "$HERE/one_sided.py" "$W/$name.both.json" "$side" \
        > "$OUT/.$name.json.tmp" || die "$name: the two-sided capture is not what it should be"
    publish "$OUT/.$name.json.tmp" "$OUT/$name.expected.json" "$tmp" "$OUT/$name.pcap"
    if [ -n "$LIVE_BIN" ]; then
        cp "$full" "$OUT/.$name.both.pcap.tmp"
        publish "$OUT/.$name.both.pcap.tmp" "$OUT/$name.both.pcap"
    fi
    log "    -> $OUT/$name.pcap ($(stat -c %s "$OUT/$name.pcap") bytes)"
}

# ---------------------------------------------------------------- main

run_start /run/swcap-make.lock /tmp/swcap-make
: > "$W/proxy.log"

rig_network
make_cert
setup_postfix
start_live

capture real-postfix-starttls-ok \
    "Postfix 3.7 sending to Postfix 3.7 with opportunistic TLS through a TCP proxy that passes every byte unchanged; the session upgrades with STARTTLS." \
    "certificate-not-observable" pass
capture real-postfix-overwrite \
    "Postfix 3.7 sending to Postfix 3.7 through an on-path proxy that overwrites the STARTTLS capability in the EHLO reply with XXXXXXXA (like Cisco ASA); the client sends the mail in plaintext." \
    "starttls-stripped" overwrite
capture real-postfix-delete \
    "Postfix 3.7 sending to Postfix 3.7 through an on-path proxy that deletes the STARTTLS line from the EHLO reply; the client sends the mail in plaintext." \
    "starttls-not-supported" delete
capture real-postfix-missing \
    "Postfix 3.7 sending two messages to the same Postfix 3.7 server address: first through a proxy that passes bytes (TLS used), then through one that deletes the STARTTLS line (plaintext)." \
    "certificate-not-observable starttls-missing" pass delete
capture real-postfix-break-tls \
    "Postfix 3.7 sending to Postfix 3.7 through an on-path proxy that passes STARTTLS and its 220 but answers every TLS ClientHello with a TCP reset; Postfix defers, retries (TLS reset again) and then falls back to plaintext on a new connection." \
    "(tls-handshake-failed )+plaintext-fallback" break-tls
capture real-postfix-reject \
    "Postfix 3.7 sending to Postfix 3.7 through an on-path proxy that answers the client's STARTTLS with 454 4.7.0 itself; the client continues the session and sends the mail in plaintext." \
    "plaintext-fallback" reject-starttls
capture real-postfix-garbage-after-220 \
    "Postfix 3.7 sending to Postfix 3.7 through an on-path proxy that passes STARTTLS and appends its own cleartext line '250 injected by the path' to the 220, in the same segment, then drops the server's TLS bytes; the handshake fails, Postfix defers, retries (same again) and then falls back to plaintext on a new connection." \
    "(cleartext-after-starttls )+plaintext-fallback" garbage-after-220
capture real-postfix-answer-clienthello-421 \
    "Postfix 3.7 sending to Postfix 3.7 through an on-path proxy that passes STARTTLS and its 220, then answers the ClientHello with a cleartext '421 4.7.0 TLS not available' and closes; a failed handshake (not cleartext in the upgrade window). Postfix defers, retries and then falls back to plaintext on a new connection." \
    "(tls-handshake-failed )+plaintext-fallback" answer-clienthello-421

capture_one_sided real-smtp-source-client-only client \
    "Postfix smtp-source sending two messages of two recipients each over one plaintext HELO session to Postfix 3.7, captured with tcpdump on the client's link keeping only the client's packets, as a one-way tap or asymmetric routing shows it."

capture_one_sided real-postfix-overwrite-server-only server \
    "Postfix 3.7 sending to Postfix 3.7 through an on-path proxy that overwrites the STARTTLS capability with XXXXXXXA, captured with tcpdump on the client's link keeping only the packets from the server's address, as a one-way tap or asymmetric routing shows it."

stop_live
log "all captures written to $OUT"
