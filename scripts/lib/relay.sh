# shellcheck shell=bash
# The relay rig that scripts/real-captures/make.sh and scripts/sender-captures/make.sh share: a
# sender namespace, a middle namespace with strip_proxy.py on the server address S, and a
# receiving Postfix behind it; tcpdump on the sender's veth; expected results by expect.py.
# Sourced after netns.sh:
#
#   . "$HERE/../lib/netns.sh"
#   . "$HERE/../lib/relay.sh"
#
# The caller sets NS_C NS_M NS_S (namespace names), VETH (a short prefix of the veth names),
# C_IP S_IP M_IP R_IP (sender, proxy's client side = S, proxy's server side, receiver),
# CAPTURE_SOURCE (the "source" written into each expected JSON), optionally RIG_PORT (the SMTP
# port of the receiver, the proxy and the capture filter; default 25), and defines
#   deliver MODE      one delivery through the proxy in MODE (start_proxy ... stop_proxy)
#   sender_done       true once the sender has nothing left to do
#   receiver_main_cf_extra
#                     (optional) more main.cf lines for the receiving Postfix
#
# The functions:
#   rig_network                the three namespaces and their two veth pairs (checksum
#                              offload off), /etc/hosts naming client.swcap.test and
#                              mx.swcap.test
#   make_cert                  $W/tls/server.{crt,key}, self-signed RSA for mx.swcap.test
#   write_master_cf FILE       a master.cf with smtpd on RIG_PORT and every service unchrooted
#   common_main_cf INSTDIR     main.cf lines of every instance of the rig
#   receiver_main_cf INSTDIR   the receiving Postfix's main.cf (mx.swcap.test on R_IP, TLS may,
#                              mail for swcap.test discarded)
#   start_receiver             make and start the receiving Postfix in $W/server
#   start_proxy MODE / stop_proxy
#   start_capture FILE / stop_capture
#   proxy_idle                 every connection the proxy opened since PROXY_OPEN0 is closed
#   capture NAME DESC WANT MODE...
#                              capture the deliveries in MODE..., derive NAME.expected.json
#                              with expect.py, insist that the session verdicts match the
#                              extended regex WANT, and publish both into $OUT

RIG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../real-captures" && pwd)
RIG_PORT=${RIG_PORT:-25}

# ---------------------------------------------------------------- network

rig_network() {
    log "creating namespaces $NS_C, $NS_M, $NS_S"
    netns_add "$(printf '127.0.0.1 localhost\n%s client.swcap.test\n%s mx.swcap.test' "$C_IP" "$R_IP")" \
        "$NS_C" "$NS_M" "$NS_S"
    ip link add "$VETH-c" netns "$NS_C" type veth peer name "$VETH-mc" netns "$NS_M"
    ip link add "$VETH-ms" netns "$NS_M" type veth peer name "$VETH-s" netns "$NS_S"
    ip -n "$NS_C" addr add "$C_IP/24" dev "$VETH-c"
    ip -n "$NS_M" addr add "$S_IP/24" dev "$VETH-mc"
    ip -n "$NS_M" addr add "$M_IP/24" dev "$VETH-ms"
    ip -n "$NS_S" addr add "$R_IP/24" dev "$VETH-s"
    local pair ns dev
    for pair in "$NS_C $VETH-c" "$NS_M $VETH-mc" "$NS_M $VETH-ms" "$NS_S $VETH-s"; do
        read -r ns dev <<<"$pair"
        no_offload "$ns" "$dev"
        ip -n "$ns" link set "$dev" up
    done
    wait_for 5 "veth up" rig_link_up
}
rig_link_up() { ip -n "$NS_C" link show "$VETH-c" | grep -q 'state UP'; }
rig_smtpd_listening() { nsx "$NS_S" ss -Hltn "sport = :$RIG_PORT" | grep -q "$R_IP:$RIG_PORT"; }

# ---------------------------------------------------------------- TLS + receiving Postfix

make_cert() {
    mkdir -p "$W/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 \
        -subj "/CN=mx.swcap.test" -addext "subjectAltName=DNS:mx.swcap.test" \
        -keyout "$W/tls/server.key" -out "$W/tls/server.crt" >/dev/null 2>&1
    chmod 644 "$W/tls/server.crt"; chmod 600 "$W/tls/server.key"
}

write_master_cf() { # every service unchrooted (the instances live in a temp dir)
    local service=smtp
    [ "$RIG_PORT" = 25 ] || service=$RIG_PORT
    {
        printf '%-9s inet  n       -       n       -       -       smtpd\n' "$service"
        postfix_services
    } > "$1"
}

common_main_cf() { # common_main_cf INSTANCE_DIR
    postfix_main_cf "$1"
    cat <<EOF2
mydomain = swcap.test
inet_protocols = ipv4
smtp_dns_support_level = disabled
smtp_connection_cache_on_demand = no
EOF2
}

receiver_main_cf() { # receiver_main_cf INSTANCE_DIR
    common_main_cf "$1"
    cat <<EOF
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
}

start_receiver() {
    local s=$W/server
    mkdir -p "$s/etc" "$s/queue" "$s/data"
    chown postfix "$s/data"
    write_master_cf "$s/etc/master.cf"
    {
        receiver_main_cf "$s"
        if declare -F receiver_main_cf_extra >/dev/null; then receiver_main_cf_extra; fi
    } > "$s/etc/main.cf"
    log "starting the receiving Postfix"
    nsx "$NS_S" postfix -c "$s/etc" start >>"$W/postfix-start.log" 2>&1 \
        || { cat "$W/postfix-start.log" >&2; die "receiving Postfix did not start"; }
    wait_for 10 "receiving smtpd listening" rig_smtpd_listening
}

# ---------------------------------------------------------------- proxy, capture

PROXY_PID=""
PROXY_OPEN0=0
start_proxy() { # start_proxy MODE
    rm -f "$W/proxy.ready"
    echo "{\"ev\": \"start\", \"mode\": \"$1\"}" >> "$W/proxy.log"
    ip netns exec "$NS_M" /usr/bin/python3 "$RIG_DIR/strip_proxy.py" --listen "$S_IP:$RIG_PORT" \
        --upstream "$R_IP:$RIG_PORT" --mode "$1" --log "$W/proxy.log" --ready-file "$W/proxy.ready" \
        --max-runtime 180 >>"$W/proxy.out" 2>&1 &
    PROXY_PID=$!
    wait_for 10 "proxy ($1) listening" test -s "$W/proxy.ready"
    PROXY_OPEN0=$(count_in "$W/proxy.log" '"ev": "open"')
}

stop_proxy() {
    [ -n "$PROXY_PID" ] || return 0
    stop_pid "$PROXY_PID" TERM 10
    PROXY_PID=""
}

TCPDUMP_PID=""
start_capture() { # start_capture FILE
    rm -f "$W/tcpdump.err"
    ip netns exec "$NS_C" tcpdump -i "$VETH-c" -s 262144 --immediate-mode -U -n -w "$1" "tcp port $RIG_PORT" \
        2>"$W/tcpdump.err" &
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

# capture NAME "DESCRIPTION" EXPECTED_VERDICTS MODE...
# EXPECTED_VERDICTS (an extended regex over the space-separated session verdicts) is what
# the scenario is meant to produce; the expected JSON itself is derived from the capture and
# the run fails if they differ.
capture() {
    local name=$1 desc=$2 want=$3; shift 3
    local pcap="$OUT/$name.pcap" json="$OUT/$name.expected.json"
    local tmp="$OUT/.$name.pcap.tmp" got mode
    log "=== $name"
    start_capture "$tmp"
    for mode in "$@"; do deliver "$mode"; done
    stop_capture
    wait_for 10 "the sender to be done" sender_done
    /usr/bin/python3 "$RIG_DIR/expect.py" "$tmp" --description "$desc" --summary \
        --source "$CAPTURE_SOURCE" --out "$OUT/.$name.json.tmp"
    got=$(/usr/bin/python3 -c 'import json,sys; print(" ".join(s["verdict"] for s in json.load(open(sys.argv[1]))["sessions"]))' "$OUT/.$name.json.tmp")
    if ! [[ "$got" =~ ^($want)$ ]]; then
        rm -f "$OUT/.$name.json.tmp"
        die "$name: sessions in the capture have verdicts '$got', expected '$want'"
    fi
    publish "$OUT/.$name.json.tmp" "$json" "$tmp" "$pcap"
    log "    -> $pcap ($(stat -c %s "$pcap") bytes), verdicts: $got"
}
