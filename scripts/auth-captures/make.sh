#!/usr/bin/env bash
# Make real captures of SMTP AUTH after a STARTTLS downgrade: swaks submits mail with AUTH
# (LOGIN, and PLAIN once) to Postfix submission on port 587, SASL from Dovecot, through the
# on-path proxy of scripts/real-captures in network namespaces, captured with tcpdump, plus
# NAME.expected.json for each capture (derived by scripts/real-captures/expect.py).
#
#   sudo scripts/auth-captures/make.sh [--out DIR] [--keep-logs DIR]
#
# Debian bookworm, run as root. Installs what it needs. Uses only addresses inside the
# namespaces it creates (10.80.0.0/24 and 10.80.1.0/24 on veth pairs between them).
# See README.md beside this file.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/netns.sh
. "$HERE/../lib/netns.sh"
LOG_TAG="auth-captures"
capture_script_args "$@"

NS_C=swauth-client
NS_M=swauth-mid
NS_S=swauth-server
C_IP=10.80.0.1      # swaks (swauth-client)
S_IP=10.80.0.2      # the server address the client connects to (proxy on swauth-mid)
M_IP=10.80.1.1      # swauth-mid, server-facing side
R_IP=10.80.1.2      # Postfix submission with Dovecot SASL (swauth-server)
PORT=587
AUTH_USER=alice
# Distinctive, so that tests can prove it never reaches stripwatch's output.
AUTH_PASSWORD=Sw-Secret-Pa55
PROXY=$HERE/../real-captures/strip_proxy.py
EXPECT=$HERE/../real-captures/expect.py
FAILURE_LOGS="server/maillog dovecot/dovecot.log proxy.log proxy.out tcpdump.err swaks/*.out"
# Dovecot's package starts no service on the host: its instance runs in the namespace only.
NO_SERVICE_START=1

ensure_packages() {
    need_base
    need_cmd swaks swaks
    # swaks does TLS through Net::SSLeay (a Recommends, so not pulled in by --no-install-recommends)
    perl -MNet::SSLeay -e 1 2>/dev/null || NEED+=(libnet-ssleay-perl)
    perl -MIO::Socket::SSL -e 1 2>/dev/null || NEED+=(libio-socket-ssl-perl)
    need_exe /usr/sbin/dovecot dovecot-core
    install_needed
}

# ---------------------------------------------------------------- cleanup (called by on_exit)

teardown() {
    postfix_abort server
    netns_delete $NS_C $NS_M $NS_S   # also ends Dovecot, the proxy and tcpdump
}

on_exit_first() { if [ -n "$TCPDUMP_PID" ]; then stop_pid "$TCPDUMP_PID" TERM 5; fi; }

keep_logs() {
    cp "$W"/server/maillog "$1/server.maillog" 2>/dev/null
    cp "$W"/dovecot/dovecot.log "$1/dovecot.log" 2>/dev/null
    cp "$W"/proxy.log "$W"/proxy.out "$1/" 2>/dev/null
    cp -r "$W"/swaks "$1/" 2>/dev/null
}

remove_partial() { rm -f "$OUT"/.auth-*.tmp 2>/dev/null; }

# ---------------------------------------------------------------- network

link_up() { ip -n $NS_C link show swa-c | grep -q 'state UP' && ip -n $NS_S link show swa-s | grep -q 'state UP'; }

setup_network() {
    log "creating namespaces $NS_C, $NS_M, $NS_S"
    netns_add "$(printf '127.0.0.1 localhost\n%s client.swauth.test\n%s mx.swauth.test' "$C_IP" "$R_IP")" \
        $NS_C $NS_M $NS_S
    ip link add swa-c netns $NS_C type veth peer name swa-mc netns $NS_M
    ip link add swa-ms netns $NS_M type veth peer name swa-s netns $NS_S
    ip -n $NS_C addr add $C_IP/24 dev swa-c
    ip -n $NS_M addr add $S_IP/24 dev swa-mc
    ip -n $NS_M addr add $M_IP/24 dev swa-ms
    ip -n $NS_S addr add $R_IP/24 dev swa-s
    local ns dev
    while read -r ns dev; do
        no_offload "$ns" "$dev"
        ip -n "$ns" link set "$dev" up
    done <<EOF
$NS_C swa-c
$NS_M swa-mc
$NS_M swa-ms
$NS_S swa-s
EOF
    wait_for 5 "veth up" link_up
}

# ---------------------------------------------------------------- Dovecot (SASL only) + Postfix submission

setup_dovecot() {
    local d=$W/dovecot
    mkdir -p "$d"
    # {PLAIN} scheme: the test user's password in the clear, as the test needs no more
    printf '%s:{PLAIN}%s\n' "$AUTH_USER" "$AUTH_PASSWORD" > "$d/users"
    chown root:dovecot "$d/users"; chmod 640 "$d/users"
    cat > "$d/dovecot.conf" <<EOF
# Dovecot as Postfix's SASL server, nothing else: no IMAP/POP3 listener, no TLS of its own.
protocols = none
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%n $d/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}
service auth {
  unix_listener $W/server/queue/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
service anvil {
  chroot =
}
EOF
    mkdir -p "$d/state"
    log "starting Dovecot (SASL for Postfix)"
    nsx $NS_S dovecot -c "$d/dovecot.conf" >"$W/dovecot-start.log" 2>&1 \
        || { cat "$W/dovecot-start.log" >&2; die "Dovecot did not start"; }
    wait_for 10 "Dovecot's auth socket" test -S "$W/server/queue/private/auth"
}

make_cert() {
    mkdir -p "$W/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 \
        -subj "/CN=mx.swauth.test" -addext "subjectAltName=DNS:mx.swauth.test" \
        -keyout "$W/tls/server.key" -out "$W/tls/server.crt" >/dev/null 2>&1
    chmod 644 "$W/tls/server.crt"; chmod 600 "$W/tls/server.key"
}

submission_listening() { nsx $NS_S ss -Hltn "sport = :$PORT" | grep -q "$R_IP:$PORT"; }

setup_postfix() {
    local s=$W/server
    mkdir -p "$s/etc" "$s/queue" "$s/data"
    chown postfix "$s/data"
    {
        echo "$PORT       inet  n       -       n       -       -       smtpd"
        postfix_services
    } > "$s/etc/master.cf"
    { postfix_main_cf "$s"; cat <<EOF
mydomain = swauth.test
inet_protocols = ipv4
myhostname = mx.swauth.test
myorigin = \$myhostname
mydestination = swauth.test, mx.swauth.test
inet_interfaces = $R_IP
local_recipient_maps =
local_transport = discard:
smtpd_banner = \$myhostname ESMTP
# submission: TLS offered but not required, and AUTH allowed before TLS
# (smtpd_tls_auth_only = no), so that a client whose upgrade was stripped authenticates in clear
smtpd_tls_security_level = may
smtpd_tls_auth_only = no
smtpd_tls_cert_file = $W/tls/server.crt
smtpd_tls_key_file = $W/tls/server.key
smtpd_tls_loglevel = 1
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
EOF
    } > "$s/etc/main.cf"
    log "starting Postfix submission on $R_IP:$PORT"
    nsx $NS_S postfix -c "$s/etc" start >"$W/postfix-start.log" 2>&1 \
        || { cat "$W/postfix-start.log" >&2; die "Postfix did not start"; }
    wait_for 10 "Postfix submission listening" submission_listening
}

# ---------------------------------------------------------------- proxy, capture, swaks

PROXY_PID=""
start_proxy() { # start_proxy MODE
    rm -f "$W/proxy.ready"
    echo "{\"ev\": \"start\", \"mode\": \"$1\"}" >> "$W/proxy.log"
    # ip netns exec, not nsx: $! must be the proxy itself, not a subshell
    ip netns exec $NS_M /usr/bin/python3 "$PROXY" --listen "$S_IP:$PORT" --upstream "$R_IP:$PORT" \
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

proxy_idle() { # every connection the proxy accepted is closed again
    [ "$(count_in "$W/proxy.log" '"ev": "open"')" = "$(count_in "$W/proxy.log" '"ev": "close"')" ]
}

TCPDUMP_PID=""
start_capture() { # start_capture FILE
    rm -f "$W/tcpdump.err"
    ip netns exec $NS_C tcpdump -i swa-c -s 262144 --immediate-mode -U -n -w "$1" "tcp port $PORT" 2>"$W/tcpdump.err" &
    TCPDUMP_PID=$!
    wait_for 10 "tcpdump listening" grep -q "listening on" "$W/tcpdump.err"
}

stop_capture() {
    [ -n "$TCPDUMP_PID" ] || return 0
    sleep 0.3   # last ACKs
    stop_pid "$TCPDUMP_PID" TERM 10
    TCPDUMP_PID=""
}

N_SEND=0
# submit MODE AUTH TLS: one swaks run through the proxy in MODE with --auth AUTH; TLS is
# "optional" (--tls-optional: STARTTLS when offered, else, or when it fails, carry on in
# clear) or "off" (no STARTTLS at all). Sets SWAKS_OUT and SWAKS_RC; waits for the proxy's
# connections to close.
submit() {
    local mode=$1 auth=$2 tls=$3 tls_args=()
    N_SEND=$((N_SEND + 1))
    [ "$tls" = optional ] && tls_args=(--tls-optional)
    SWAKS_OUT="$W/swaks/$N_SEND-$mode-$auth.out"
    start_proxy "$mode"
    log "    swaks #$N_SEND through the proxy in mode '$mode': --auth $auth ${tls_args[*]}"
    SWAKS_RC=0
    nsx $NS_C timeout 30 swaks --server "$S_IP" --port "$PORT" --ehlo client.swauth.test \
        --from "$AUTH_USER@swauth.test" --to bob@swauth.test --timeout 10 \
        --auth "$auth" --auth-user "$AUTH_USER" --auth-password "$AUTH_PASSWORD" \
        "${tls_args[@]}" \
        --header "Subject: stripwatch auth capture $N_SEND ($mode)" \
        --body "Hello Bob, this is a test message for the stripwatch AUTH captures." \
        >"$SWAKS_OUT" 2>&1 || SWAKS_RC=$?
    wait_for 15 "the proxy's connections to close" proxy_idle
    stop_proxy
    # the transcript's outline: where AUTH went (verb and mechanism only: a PLAIN line carries
    # the credential) and the replies that matter
    log "    swaks exit status $SWAKS_RC: $(awk '/^ [~-]> AUTH / { print $1, $2, $3; next }
        /^<[~*-]* +(220 2|235|454|535|250 2\.0\.0)|^\*\*\* .*(TLS|STARTTLS)/' "$SWAKS_OUT" \
        | tr -s ' ' | paste -sd '|' -)"
}

# expect_swaks WANT_RC REGEX: the last swaks run's exit status matches WANT_RC (an extended
# regex) and its transcript matches REGEX (what the scenario means, e.g. AUTH sent in clear)
expect_swaks() {
    if ! [[ "$SWAKS_RC" =~ ^($1)$ ]] || ! grep -qE -- "$2" "$SWAKS_OUT"; then
        tail -n 20 "$SWAKS_OUT" >&2
        die "swaks #$N_SEND: exit status $SWAKS_RC (wanted $1), /$2/ in the transcript: $(grep -cE -- "$2" "$SWAKS_OUT")"
    fi
}

# capture NAME "DESCRIPTION" EXPECTED_VERDICTS STEP...
# Each STEP is "MODE AUTH TLS WANT_RC REGEX" (see submit and expect_swaks). EXPECTED_VERDICTS
# (an extended regex over the space-separated session verdicts) is what the scenario is meant
# to produce; the expected JSON itself is derived from the capture by expect.py, and the run
# fails if they differ.
capture() {
    local name=$1 desc=$2 want=$3; shift 3
    local pcap="$OUT/$name.pcap" json="$OUT/$name.expected.json"
    local tmp="$OUT/.$name.pcap.tmp" step mode auth tls rc regex got
    log "=== $name"
    start_capture "$tmp"
    for step in "$@"; do
        read -r mode auth tls rc regex <<<"$step"
        submit "$mode" "$auth" "$tls"
        expect_swaks "$rc" "$regex"
    done
    stop_capture
    /usr/bin/python3 "$EXPECT" "$tmp" --description "$desc" --summary \
        --source scripts/auth-captures/make.sh --out "$OUT/.$name.json.tmp"
    got=$(/usr/bin/python3 -c 'import json,sys; print(" ".join(s["verdict"] for s in json.load(open(sys.argv[1]))["sessions"]))' "$OUT/.$name.json.tmp")
    if ! [[ "$got" =~ ^($want)$ ]]; then
        rm -f "$OUT/.$name.json.tmp"
        die "$name: sessions in the capture have verdicts '$got', expected '$want'"
    fi
    publish "$OUT/.$name.json.tmp" "$json" "$tmp" "$pcap"
    log "    -> $pcap ($(stat -c %s "$pcap") bytes), verdicts: $got"
}

# ---------------------------------------------------------------- main

run_start /run/swauth-make.lock /tmp/swauth-make
: > "$W/proxy.log"
mkdir -p "$W/swaks"

setup_network
make_cert
setup_postfix      # first: it makes queue/private, where Dovecot puts its socket
setup_dovecot

# swaks marks what it sends in clear with "->", inside TLS with "~>"; exit status 0: the
# message was accepted (after AUTH succeeded: the server requires it)
IN_TLS='^ ~> AUTH '
IN_CLEAR='^ -> AUTH '
capture auth-swaks-tls \
    "swaks 20201014 (--tls-optional --auth LOGIN) submitting to Postfix 3.7 on port 587 (SASL from Dovecot 2.3) through a TCP proxy that passes every byte unchanged: STARTTLS succeeds and AUTH LOGIN goes inside TLS." \
    "certificate-not-observable" \
    "pass LOGIN optional 0 $IN_TLS"
capture auth-swaks-overwrite \
    "swaks 20201014 (--tls-optional --auth LOGIN) submitting to Postfix 3.7 on port 587 (SASL from Dovecot 2.3) through an on-path proxy that overwrites STARTTLS in the EHLO reply with XXXXXXXA; swaks carries on in clear and sends the base64 user name and password (AUTH LOGIN) in cleartext." \
    "auth-in-cleartext" \
    "overwrite LOGIN optional 0 $IN_CLEAR"
capture auth-swaks-reject \
    "swaks 20201014 (--tls-optional --auth PLAIN) submitting to Postfix 3.7 on port 587 (SASL from Dovecot 2.3) through an on-path proxy that answers STARTTLS with 454 itself; swaks carries on in the same connection and sends AUTH PLAIN with the credential as initial response in cleartext." \
    "auth-in-cleartext" \
    "reject-starttls PLAIN optional 0 $IN_CLEAR"
capture auth-swaks-missing \
    "swaks 20201014 (--tls-optional --auth LOGIN) submitting twice to the same Postfix 3.7 submission address (SASL from Dovecot 2.3): first through a proxy that passes bytes (STARTTLS, AUTH inside TLS), then through one that deletes the STARTTLS line from the EHLO reply (AUTH LOGIN in cleartext)." \
    "certificate-not-observable auth-in-cleartext" \
    "pass LOGIN optional 0 $IN_TLS" "delete LOGIN optional 0 $IN_CLEAR"
# swaks --tls-optional does not fall back on a new connection: after the reset it writes
# AUTH LOGIN into the dead connection and dies of SIGPIPE (exit status 141; nothing of the
# AUTH reaches the wire). The retry without STARTTLS is what a user or a script does next.
capture auth-swaks-break-tls-retry \
    "swaks 20201014 (--tls-optional --auth LOGIN) submitting to Postfix 3.7 on port 587 (SASL from Dovecot 2.3) through an on-path proxy that passes STARTTLS and its 220 but answers the ClientHello with a TCP reset; swaks fails (it writes AUTH into the reset connection and dies of SIGPIPE). A second swaks run without TLS (the retry a user makes) then sends AUTH LOGIN and the mail in cleartext on a new connection." \
    "tls-handshake-failed auth-in-cleartext" \
    "break-tls LOGIN optional [1-9][0-9]* ^\*\*\* STARTTLS attempted but failed" "break-tls LOGIN off 0 $IN_CLEAR"

log "all captures written to $OUT"
