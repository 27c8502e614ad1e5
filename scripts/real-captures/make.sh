#!/usr/bin/env bash
# Make real SMTP captures: Postfix -> (on-path proxy) -> Postfix in network namespaces,
# captured with tcpdump, plus NAME.expected.json for each capture.
#
#   sudo scripts/real-captures/make.sh [--out DIR] [--keep-logs DIR]
#
# Debian bookworm, run as root. Installs what it needs. Uses only addresses inside the
# namespaces it creates (10.77.0.0/24 and 10.77.1.0/24 on veth pairs between them).
# See README.md beside this file.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT="$REPO/pcaps"
KEEP_LOGS=""
INSTALL_ONLY=""

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#--out=}"; shift ;;
        --keep-logs) KEEP_LOGS="$2"; shift 2 ;;
        --install-only) INSTALL_ONLY=1; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" = 0 ] || { echo "make.sh: must run as root" >&2; exit 1; }

NS_C=swcap-client
NS_M=swcap-mid
NS_S=swcap-server
C_IP=10.77.0.1      # Postfix sender (swcap-client)
S_IP=10.77.0.2      # the server address S the client connects to (proxy on swcap-mid)
M_IP=10.77.1.1      # swcap-mid, server-facing side
R_IP=10.77.1.2      # the real receiving Postfix (swcap-server)
LOCK=/run/swcap-make.lock
T0=$(date +%s)

log() { printf '[make.sh %3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- install

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

ensure_packages() {
    local need=()
    command -v tcpdump >/dev/null || need+=(tcpdump)
    command -v openssl >/dev/null || need+=(openssl)
    [ -x /usr/bin/python3 ] || need+=(python3)
    command -v ip >/dev/null || need+=(iproute2)
    command -v ethtool >/dev/null || need+=(ethtool)
    [ -x /usr/sbin/postfix ] || need+=(postfix)
    [ ${#need[@]} -eq 0 ] && return 0
    log "installing: ${need[*]}"
    # no questions: Postfix gets "No configuration" (we write our own instances)
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    if ! { apt-get update -q && apt_install "${need[@]}"; }; then
        log "apt failed once, retrying"
        sleep 3
        apt-get update -q && apt_install "${need[@]}" || die "apt-get install ${need[*]} failed"
    fi
}

# ---------------------------------------------------------------- cleanup

kill_ns_pids() {
    local ns=$1 pids
    ip netns list 2>/dev/null | grep -qw "^$ns" || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    kill $pids 2>/dev/null || true
    for _ in $(seq 1 30); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -z "$pids" ] && return 0
        sleep 0.1
    done
    kill -9 $pids 2>/dev/null || true
}

teardown() {
    # stop Postfix instances politely first (master then ends its children)
    if [ -n "${W:-}" ]; then
        for inst in client server; do
            if [ -f "$W/$inst/etc/main.cf" ] && [ -f "$W/$inst/queue/pid/master.pid" ]; then
                timeout 10 postfix -c "$W/$inst/etc" abort >/dev/null 2>&1 || true
            fi
        done
    fi
    for ns in $NS_C $NS_M $NS_S; do kill_ns_pids "$ns"; done
    for ns in $NS_C $NS_M $NS_S; do
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    rmdir /etc/netns 2>/dev/null || true
}

on_exit() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ $rc -ne 0 ] && [ -n "${W:-}" ] && [ -d "$W" ]; then
        log "failed (rc=$rc); last log lines:"
        for f in "$W"/client/maillog "$W"/server/maillog "$W"/proxy.log "$W"/proxy.out "$W"/tcpdump.err; do
            [ -f "$f" ] && { echo "== $f" >&2; tail -n 15 "$f" >&2; }
        done
    fi
    if [ -n "$KEEP_LOGS" ] && [ -n "${W:-}" ] && [ -d "$W" ]; then
        mkdir -p "$KEEP_LOGS"
        cp "$W"/client/maillog "$KEEP_LOGS/client.maillog" 2>/dev/null
        cp "$W"/server/maillog "$KEEP_LOGS/server.maillog" 2>/dev/null
        cp "$W"/proxy.log "$KEEP_LOGS/proxy.log" 2>/dev/null
        cp "$W"/proxy.out "$KEEP_LOGS/proxy.out" 2>/dev/null
    fi
    teardown
    [ -n "${W:-}" ] && rm -rf "$W"
    rm -f "$OUT"/.real-*.tmp 2>/dev/null
    log "done (rc=$rc) in $(( $(date +%s) - T0 ))s"
    exit $rc
}

# ---------------------------------------------------------------- helpers

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s
wait_for() {
    local secs=$1 what=$2; shift 2
    local end=$(( $(date +%s%N) / 1000000 + secs * 1000 ))
    while ! "$@" >/dev/null 2>&1; do
        [ $(( $(date +%s%N) / 1000000 )) -lt $end ] || die "timeout after ${secs}s waiting for $what"
        sleep 0.1
    done
}

# stop_pid PID SIGNAL SECS: signal a child of this shell, wait (bounded) for it to end, reap it
stop_pid() {
    local pid=$1 sig=$2 secs=$3 state i
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || state=""
        [ -z "$state" ] || [ "$state" = Z ] && break
        sleep 0.1
    done
    [ -z "$state" ] || [ "$state" = Z ] || { log "pid $pid did not stop on $sig, killing"; kill -9 "$pid" 2>/dev/null || true; }
    wait "$pid" 2>/dev/null || true
}

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

count_in() { # count_in FILE REGEX: number of matching lines (0 if no file)
    local n
    n=$(grep -cE "$2" "$1" 2>/dev/null) || true
    echo "${n:-0}"
}

# ---------------------------------------------------------------- network

setup_network() {
    log "creating namespaces $NS_C, $NS_M, $NS_S"
    for ns in $NS_C $NS_M $NS_S; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # a private resolver config: any lookup stays on the namespace's own loopback
        mkdir -p "/etc/netns/$ns"
        echo "nameserver 127.0.0.1" > "/etc/netns/$ns/resolv.conf"
        printf '127.0.0.1 localhost\n%s client.swcap.test\n%s mx.swcap.test\n' "$C_IP" "$R_IP" \
            > "/etc/netns/$ns/hosts"
    done
    ip link add swc-c netns $NS_C type veth peer name swc-mc netns $NS_M
    ip link add swc-ms netns $NS_M type veth peer name swc-s netns $NS_S
    ip -n $NS_C addr add $C_IP/24 dev swc-c
    ip -n $NS_M addr add $S_IP/24 dev swc-mc
    ip -n $NS_M addr add $M_IP/24 dev swc-ms
    ip -n $NS_S addr add $R_IP/24 dev swc-s
    for pair in "$NS_C swc-c" "$NS_M swc-mc" "$NS_M swc-ms" "$NS_S swc-s"; do
        set -- $pair
        # real checksums in the capture (no offload placeholders)
        nsx "$1" ethtool -K "$2" tx off rx off >/dev/null 2>&1 || true
        ip -n "$1" link set "$2" up
    done
    wait_for 5 "veth up" link_up
}

smtpd_listening() { nsx $NS_S ss -Hltn "sport = :25" | grep -q "$R_IP:25"; }
link_up() { ip -n $NS_C link show swc-c | grep -q 'state UP'; }

# ---------------------------------------------------------------- TLS + Postfix

make_cert() {
    mkdir -p "$W/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 \
        -subj "/CN=mx.swcap.test" -addext "subjectAltName=DNS:mx.swcap.test" \
        -keyout "$W/tls/server.key" -out "$W/tls/server.crt" >/dev/null 2>&1
    chmod 644 "$W/tls/server.crt"; chmod 600 "$W/tls/server.key"
}

write_master_cf() { # every service unchrooted (the instances live in a temp dir)
    cat > "$1" <<'EOF'
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

common_main_cf() { # common_main_cf INSTANCE_DIR
    cat <<EOF
compatibility_level = 3.6
queue_directory = $1/queue
data_directory = $1/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $1/maillog
maillog_file_prefixes = $W
mydomain = swcap.test
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_connection_cache_on_demand = no
smtputf8_enable = no
EOF
}

setup_postfix() {
    local c=$W/client s=$W/server
    mkdir -p "$c/etc" "$c/queue" "$c/data" "$s/etc" "$s/queue" "$s/data"
    chown postfix "$c/data" "$s/data"
    write_master_cf "$c/etc/master.cf"
    write_master_cf "$s/etc/master.cf"
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
    { common_main_cf "$s"; cat <<EOF
myhostname = mx.swcap.test
myorigin = \$myhostname
mydestination = swcap.test, mx.swcap.test
inet_interfaces = $R_IP
local_recipient_maps =
local_transport = discard:
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_banner = \$myhostname ESMTP
smtpd_tls_security_level = may
smtpd_tls_cert_file = $W/tls/server.crt
smtpd_tls_key_file = $W/tls/server.key
smtpd_tls_loglevel = 1
EOF
    } > "$s/etc/main.cf"
    log "starting Postfix instances"
    nsx $NS_S postfix -c "$s/etc" start >"$W/postfix-start.log" 2>&1 \
        || { cat "$W/postfix-start.log" >&2; die "receiving Postfix did not start"; }
    nsx $NS_C postfix -c "$c/etc" start >>"$W/postfix-start.log" 2>&1 \
        || { cat "$W/postfix-start.log" >&2; die "sending Postfix did not start"; }
    wait_for 10 "receiving smtpd listening" smtpd_listening
    wait_for 10 "sending Postfix pickup" test -S "$c/queue/public/pickup"
}

# ---------------------------------------------------------------- proxy, capture, delivery

PROXY_PID=""
start_proxy() { # start_proxy MODE
    rm -f "$W/proxy.ready"
    echo "{\"ev\": \"start\", \"mode\": \"$1\"}" >> "$W/proxy.log"
    ip netns exec $NS_M /usr/bin/python3 "$HERE/strip_proxy.py" --listen "$S_IP:25" --upstream "$R_IP:25" \
        --mode "$1" --log "$W/proxy.log" --ready-file "$W/proxy.ready" --max-runtime 120 \
        >>"$W/proxy.out" 2>&1 &
    PROXY_PID=$!
    wait_for 10 "proxy ($1) listening" test -s "$W/proxy.ready"
}

stop_proxy() {
    [ -n "$PROXY_PID" ] || return 0
    stop_pid "$PROXY_PID" TERM 10
    PROXY_PID=""
}

TCPDUMP_PID=""
start_capture() { # start_capture FILE
    rm -f "$W/tcpdump.err"
    ip netns exec $NS_C tcpdump -i swc-c -s 262144 --immediate-mode -U -n -w "$1" 'tcp port 25' 2>"$W/tcpdump.err" &
    TCPDUMP_PID=$!
    wait_for 10 "tcpdump listening" grep -q "listening on" "$W/tcpdump.err"
}

stop_capture() {
    [ -n "$TCPDUMP_PID" ] || return 0
    sleep 0.3   # last ACKs
    stop_pid "$TCPDUMP_PID" TERM 10
    TCPDUMP_PID=""
}

proxy_idle() { # every connection the proxy opened is closed again, and there was one
    local opened closed
    opened=$(count_in "$W/proxy.log" '"ev": "open"')
    closed=$(count_in "$W/proxy.log" '"ev": "close"')
    [ "$opened" -gt "$PROXY_OPEN0" ] && [ "$opened" = "$closed" ]
}

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
    PROXY_OPEN0=$(count_in "$W/proxy.log" '"ev": "open"')
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

queue_empty() { [ -z "$(find "$W/client/queue/deferred" "$W/client/queue/active" "$W/client/queue/incoming" -type f 2>/dev/null)" ]; }

# capture NAME "DESCRIPTION" EXPECTED_VERDICTS MODE...
# EXPECTED_VERDICTS (an extended regex over the space-separated session verdicts) is what
# the scenario is meant to produce; the
# expected JSON itself is derived from the capture and the run fails if they differ.
capture() {
    local name=$1 desc=$2 want=$3; shift 3
    local pcap="$OUT/$name.pcap" json="$OUT/$name.expected.json"
    local tmp="$OUT/.$name.pcap.tmp" got
    log "=== $name"
    start_capture "$tmp"
    for mode in "$@"; do deliver "$mode"; done
    stop_capture
    wait_for 10 "sender queue to be empty" queue_empty
    /usr/bin/python3 "$HERE/expect.py" "$tmp" --description "$desc" --summary \
        --out "$OUT/.$name.json.tmp"
    got=$(/usr/bin/python3 -c 'import json,sys; print(" ".join(s["verdict"] for s in json.load(open(sys.argv[1]))["sessions"]))' "$OUT/.$name.json.tmp")
    if ! [[ "$got" =~ ^($want)$ ]]; then
        rm -f "$OUT/.$name.json.tmp"
        die "$name: sessions in the capture have verdicts '$got', expected '$want'"
    fi
    mv "$OUT/.$name.json.tmp" "$json"
    mv "$tmp" "$pcap"
    chmod 644 "$pcap" "$json"
    chown --reference="$OUT" "$pcap" "$json"   # tcpdump writes as user tcpdump
    log "    -> $pcap ($(stat -c %s "$pcap") bytes), verdicts: $got"
}

# ---------------------------------------------------------------- main

exec 9>"$LOCK"
flock -w 30 9 || die "another make.sh is running"

ensure_packages
[ -n "$INSTALL_ONLY" ] && exit 0
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

teardown                                  # leftovers of an earlier, killed run
rm -rf /tmp/swcap-make.* 2>/dev/null || true
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
W=$(mktemp -d /tmp/swcap-make.XXXXXX)
chmod 755 "$W"
: > "$W/proxy.log"

setup_network
make_cert
setup_postfix

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

log "all captures written to $OUT"
