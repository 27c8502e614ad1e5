#!/usr/bin/env bash
# Make real MTA-STS captures: a sending Postfix whose TLS policy comes from
# postfix-mta-sts-resolver (mta-sts-daemon, a socketmap), an authoritative NSD holding the
# domain's MX, A and _mta-sts TXT records, nginx serving /.well-known/mta-sts.txt over HTTPS
# with a test CA the resolver trusts, and a receiving Postfix; an on-path box between the
# sender and everything else (it routes, and it holds the STARTTLS-stripping proxy, an nft
# rule set and a DNS server of its own). Captured with tcpdump on the sender's side. Writes
# pcaps/sts-NAME.pcap with sts-NAME.facts.json (what the wire and the software's own logs say,
# and what the on-path box did).
#
#   sudo scripts/sts-captures/make.sh [--out DIR] [--keep-logs DIR] [--install-only]
#
# Debian bookworm, run as root. Installs what it needs. Uses only addresses inside the
# namespaces it creates (10.81.0.0/24 and 10.81.1.0/24 on veth pairs). See README.md beside
# this file.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/netns.sh
. "$HERE/../lib/netns.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/relay.sh
. "$HERE/../lib/relay.sh"
LOG_TAG="sts make.sh"
capture_script_args "$@"

NS_C=swsts-client   # sending Postfix, mta-sts-daemon, tcpdump
NS_M=swsts-path     # the on-path box: router, proxy on S_IP:25, nft, a DNS server of its own
NS_S=swsts-server   # receiving Postfix, nginx, NSD
VETH=swst
C_IP=10.81.0.10     # the sender
S_IP=10.81.0.25     # mx.swcap.test: the proxy on the path box
M_IP=10.81.1.1      # the path box, server side
R_IP=10.81.1.25     # the receiving Postfix
WEB_IP=10.81.1.44   # nginx: mta-sts.swcap.test and mta-sts.testing.swcap.test
DNS_IP=10.81.1.53   # NSD, authoritative for swcap.test (the sender's name server)
ZONE=swcap.test
STS_ID=20261207T0850
TESTING_ID=testing1
CAPTURE_SOURCE=scripts/sts-captures/make.sh
CAPTURES=(sts-enforce-clean sts-fetch-reset sts-txt-removed sts-testing-stripped sts-fetch-timeout
    sts-fetch-bad-cert)
FAILURE_LOGS="client/maillog server/maillog mta-sts.log nginx/error.log nginx-path/error.log nsd*.log proxy.out tcpdump.err"

ensure_packages() {
    need_base
    need_cmd tshark tshark
    need_exe /usr/sbin/nsd nsd
    need_exe /usr/sbin/nginx nginx
    need_cmd nft nftables
    need_cmd mta-sts-daemon postfix-mta-sts-resolver
    # nginx, nsd and the resolver would start system-wide services on the host: only our own
    # instances run, inside the namespaces
    NO_SERVICE_START=1 install_needed
}

# ---------------------------------------------------------------- cleanup (called by on_exit)

teardown() {
    postfix_abort client server
    netns_delete $NS_C $NS_M $NS_S
}

keep_logs() {
    cp "$W"/client/maillog "$1/client.maillog" 2>/dev/null
    cp "$W"/server/maillog "$1/server.maillog" 2>/dev/null
    cp "$W"/mta-sts.log "$W"/proxy.log "$W"/nsd-*.log "$1/" 2>/dev/null
    cp -r "$W"/nginx "$W"/nginx-path "$W"/zone "$1/" 2>/dev/null
}

remove_partial() { rm -f "$OUT"/.sts-*.tmp 2>/dev/null; }

# ---------------------------------------------------------------- network: relay.sh's rig, routed

setup_network() {
    rig_network
    # the sender reaches the servers' net through the path box, which routes between them
    ip -n $NS_C route add default via $S_IP
    ip -n $NS_S route add default via $M_IP
    nsx $NS_M sysctl -qw net.ipv4.ip_forward=1
    ip -n $NS_S addr add $WEB_IP/24 dev $VETH-s
    ip -n $NS_S addr add $DNS_IP/24 dev $VETH-s
    echo "nameserver $DNS_IP" > /etc/netns/$NS_C/resolv.conf
    # the names the sender must look up in DNS are not in its /etc/hosts
    printf '127.0.0.1 localhost\n%s client.%s\n' $C_IP $ZONE > /etc/netns/$NS_C/hosts
    nsx $NS_M nft -f - <<EOF
table inet path {
    chain forward { type filter hook forward priority 0; policy accept; }
}
table ip pathnat {
    chain pre { type nat hook prerouting priority -100; policy accept; }
    chain pre443 { type nat hook prerouting priority -99; policy accept; }
}
EOF
}

# attack_policy_fetch off|on|drop|mitm: what the path box does to TCP/443 towards nginx: on,
# reset every connection; drop, drop every packet (the fetch times out); mitm, send it to its
# own nginx, whose certificate a CA the resolver does not trust issued (the handshake fails)
attack_policy_fetch() {
    nsx $NS_M nft flush chain inet path forward
    nsx $NS_M nft flush chain ip pathnat pre443
    case "$1" in
        on) nsx $NS_M nft add rule inet path forward tcp dport 443 reject with tcp reset ;;
        drop) nsx $NS_M nft add rule inet path forward tcp dport 443 drop ;;
        mitm) nsx $NS_M nft add rule ip pathnat pre443 ip daddr $WEB_IP tcp dport 443 dnat to $M_IP ;;
    esac
    return 0
}

# attack_dns on|off: the path box answers the sender's DNS queries itself, from a copy of the
# zone without the _mta-sts TXT records (addressed as if the real server answered)
attack_dns() {
    nsx $NS_M nft flush chain ip pathnat pre
    [ "$1" = on ] && nsx $NS_M nft add rule ip pathnat pre ip daddr $DNS_IP udp dport 53 dnat to $M_IP
    return 0
}

# ---------------------------------------------------------------- certificates, zone, servers

# relay.sh's make_cert, with a test CA: the receiver's certificate for mx.swcap.test and nginx's
# for the two mta-sts hosts are issued by it; the sender and the resolver trust it
make_cert() {
    local t=$W/tls
    mkdir -p "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 -subj "/CN=swsts test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$t/ca.key" -out "$t/ca.crt" >/dev/null 2>&1
    issue server "mx.$ZONE" "DNS:mx.$ZONE"
    issue web "mta-sts.$ZONE" "DNS:mta-sts.$ZONE,DNS:mta-sts.testing.$ZONE"
    # the path box's certificate names the policy hosts too, but its CA is its own
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 -subj "/CN=swsts path CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$t/path-ca.key" -out "$t/path-ca.crt" >/dev/null 2>&1
    CA=path-ca issue path "mta-sts.$ZONE" "DNS:mta-sts.$ZONE,DNS:mta-sts.testing.$ZONE"
    chmod 644 "$t"/*.crt; chmod 600 "$t"/*.key
}
issue() { # issue NAME CN SAN
    local t=$W/tls
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$t/$1.key" -out "$t/$1.csr" >/dev/null 2>&1
    printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \
        "$3" > "$t/$1.ext"
    openssl x509 -req -in "$t/$1.csr" -CA "$t/${CA:-ca}.crt" -CAkey "$t/${CA:-ca}.key" -CAcreateserial -days 365 \
        -sha256 -extfile "$t/$1.ext" -out "$t/$1.crt" >/dev/null 2>&1
}

# zone FILE WITH_TXT: the zone, with or without the _mta-sts TXT records
zone() {
    cat > "$1" <<EOF
\$ORIGIN $ZONE.
\$TTL 300
@                 SOA   ns1.$ZONE. hostmaster.$ZONE. 2026120701 3600 600 86400 300
@                 NS    ns1.$ZONE.
ns1               A     $DNS_IP
@                 MX    10 mx.$ZONE.
mx                A     $S_IP
mta-sts           A     $WEB_IP
testing           MX    10 mx.$ZONE.
mta-sts.testing   A     $WEB_IP
EOF
    [ "$2" = yes ] && cat >> "$1" <<EOF
_mta-sts          TXT   "v=STSv1; id=$STS_ID"
_mta-sts.testing  TXT   "v=STSv1; id=$TESTING_ID"
EOF
    return 0
}

# start_nsd NS IP NAME ZONEFILE
start_nsd() {
    local ns=$1 ip=$2 name=$3
    mkdir -p "$W/nsd-$name"
    cat > "$W/nsd-$name.conf" <<EOF
server:
    ip-address: $ip
    port: 53
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$W/zone"
    database: ""
    zonelistfile: "$W/nsd-$name/zonelist"
    xfrdfile: "$W/nsd-$name/xfrdstate"
    xfrdir: "$W/nsd-$name"
    pidfile: "$W/nsd-$name/nsd.pid"
    logfile: "$W/nsd-$name.log"
    server-count: 1
    hide-version: yes
remote-control:
    control-enable: no
zone:
    name: "$ZONE"
    zonefile: "$4"
EOF
    nsd-checkzone $ZONE "$W/zone/$4" >/dev/null || die "nsd-checkzone $4 failed"
    nsx "$ns" nsd -d -c "$W/nsd-$name.conf" >>"$W/nsd-$name.log" 2>&1 &
    wait_for 10 "NSD ($name) listening" udp_listening "$ns" "$ip"
}
udp_listening() { nsx "$1" ss -Hlun "sport = :53" | grep -q "$2:53"; }

start_dns() {
    mkdir -p "$W/zone"
    zone "$W/zone/$ZONE.zone" yes
    zone "$W/zone/$ZONE.no-sts.zone" no
    chmod -R a+rX "$W/zone"
    start_nsd $NS_S $DNS_IP real "$ZONE.zone"
    start_nsd $NS_M $M_IP path "$ZONE.no-sts.zone"
}

# policy DIR MODE: an MTA-STS policy file (RFC 8461 section 3.2, CRLF lines)
policy() {
    mkdir -p "$W/www/$1/.well-known"
    printf 'version: STSv1\r\nmode: %s\r\nmx: mx.%s\r\nmax_age: 86400\r\n' "$2" $ZONE \
        > "$W/www/$1/.well-known/mta-sts.txt"
}

# nginx_conf DIR CERT IP: an nginx serving both policy hosts on IP:443 with CERT
nginx_conf() {
    local n=$1 cert=$2 ip=$3
    mkdir -p "$n"
    cat > "$n/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log info;
events { worker_connections 64; }
http {
    access_log $n/access.log;
    default_type text/plain;
    ssl_certificate $W/tls/$cert.crt;
    ssl_certificate_key $W/tls/$cert.key;
    server { listen $ip:443 ssl; server_name mta-sts.$ZONE; root $W/www/enforce; }
    server { listen $ip:443 ssl; server_name mta-sts.testing.$ZONE; root $W/www/testing; }
}
EOF
}

start_nginx() {
    local n=$W/nginx p=$W/nginx-path
    policy enforce enforce
    policy testing testing
    chmod -R a+rX "$W/www"
    nginx_conf "$n" web $WEB_IP
    nsx $NS_S nginx -p "$n" -e "$n/error.log" -c "$n/nginx.conf" >>"$n/stdout.log" 2>&1 &
    wait_for 10 "nginx listening" nsx $NS_S ss -Hltn "sport = :443"
    # the path box's own, for the mitm attack
    nginx_conf "$p" path $M_IP
    nsx $NS_M nginx -p "$p" -e "$p/error.log" -c "$p/nginx.conf" >>"$p/stdout.log" 2>&1 &
    wait_for 10 "the path box's nginx listening" nsx $NS_M ss -Hltn "sport = :443"
}

# ---------------------------------------------------------------- the sender and its resolver

receiver_main_cf_extra() { echo "mydestination = $ZONE, testing.$ZONE, mx.$ZONE"; }

setup_sender() {
    local c=$W/client
    mkdir -p "$c/etc" "$c/queue" "$c/data"
    chown postfix "$c/data"
    write_master_cf "$c/etc/master.cf"
    { postfix_main_cf "$c"; cat <<EOF
mydomain = $ZONE
myhostname = client.$ZONE
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtp_bind_address = $C_IP
relayhost =
smtp_connection_cache_on_demand = no
# MX and address lookups in DNS (on the wire), the TLS policy from mta-sts-daemon
smtp_dns_support_level = enabled
smtp_tls_security_level = may
smtp_tls_CAfile = $W/tls/ca.crt
smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:postfix
smtp_tls_loglevel = 1
EOF
    } > "$c/etc/main.cf"
    cat > "$W/mta-sts.yml" <<EOF
host: 127.0.0.1
port: 8461
# one daemon at a time: each is gone before the next starts (its cache must be empty)
reuse_port: true
shutdown_timeout: 1
cache:
  type: internal
  options:
    cache_size: 100
default_zone:
  strict_testing: false
  timeout: 4
EOF
}

STS_PID=""
# the resolver is started fresh for each capture (an empty cache: it looks the TXT up and
# fetches the policy); aiohttp's TLS context takes its trust anchors from SSL_CERT_FILE
start_sender() {
    echo "{\"ev\": \"capture\", \"name\": \"$1\"}" >> "$W/mta-sts.log"
    ip netns exec $NS_C env SSL_CERT_FILE="$W/tls/ca.crt" mta-sts-daemon -c "$W/mta-sts.yml" -v debug \
        >>"$W/mta-sts.log" 2>&1 &
    STS_PID=$!
    wait_for 10 "mta-sts-daemon listening" nsx $NS_C ss -Hltn "sport = :8461"
    nsx $NS_C postfix -c "$W/client/etc" start >>"$W/postfix-start.log" 2>&1 \
        || { cat "$W/postfix-start.log" >&2; die "sending Postfix did not start"; }
    wait_for 10 "sending Postfix pickup" test -S "$W/client/queue/public/pickup"
}
stop_sender() {
    nsx $NS_C postfix -c "$W/client/etc" stop >>"$W/postfix-start.log" 2>&1 || true
    wait_for 15 "sending Postfix to stop" sender_gone
    stop_pid "$STS_PID" TERM 10
    STS_PID=""
    wait_for 10 "mta-sts-daemon gone" sts_port_free
}
sts_port_free() { [ -z "$(nsx $NS_C ss -Hltn "sport = :8461")" ]; }
sender_gone() { ! nsx $NS_C postfix -c "$W/client/etc" status >/dev/null 2>&1; }
sender_done() { [ -z "$(nsx $NS_C ss -Htn state connected exclude time-wait "( dport = :25 or dport = :443 )")" ]; }
sent_count() { count_in "$W/client/maillog" ' status=sent'; }
sent_after() { [ "$(sent_count)" -gt "$1" ]; }

# ---------------------------------------------------------------- capture

start_capture() { # relay.sh's, with DNS and HTTPS
    rm -f "$W/tcpdump.err"
    ip netns exec $NS_C tcpdump -i $VETH-c -s 262144 -B 65536 --immediate-mode -U -n -w "$1" \
        'port 25 or port 53 or port 443' 2>"$W/tcpdump.err" &
    TCPDUMP_PID=$!
    wait_for 10 "tcpdump listening" grep -q "listening on" "$W/tcpdump.err"
}

# capture NAME DOMAIN PROXY_MODE FETCH_ATTACK DNS_ATTACK "DESCRIPTION"
capture() {
    local name=$1 domain=$2 mode=$3 fetch=$4 dns=$5 desc=$6
    local tmp="$OUT/.$name.pcap.tmp" before log0 sts0
    log "=== $name"
    attack_policy_fetch "$fetch"
    attack_dns "$dns"
    start_proxy "$mode"
    log0=$({ wc -l < "$W/client/maillog"; } 2>/dev/null || echo 0)
    sts0=$({ wc -l < "$W/mta-sts.log"; } 2>/dev/null || echo 0)
    start_sender "$name"
    start_capture "$tmp"
    before=$(sent_count)
    nsx $NS_C sendmail -C "$W/client/etc" -f "alice@client.$ZONE" "user@$domain" <<EOF
From: Alice Example <alice@client.$ZONE>
To: User Example <user@$domain>
Subject: stripwatch MTA-STS capture $name
Message-ID: <$name-$$@client.$ZONE>

Hello,

this is the stripwatch MTA-STS capture $name. It contains nothing of interest.
EOF
    wait_for 30 "$name: the message to be sent" sent_after "$before"
    wait_for 10 "$name: the proxy's connections to close" proxy_idle
    wait_for 10 "$name: the sender's connections to close" sender_done
    stop_capture
    stop_sender
    stop_proxy
    attack_policy_fetch off
    attack_dns off
    tail -n +"$((log0 + 1))" "$W/client/maillog" > "$W/$name.maillog"
    tail -n +"$((sts0 + 1))" "$W/mta-sts.log" > "$W/$name.resolver.log"
    /usr/bin/python3 "$HERE/facts.py" "$tmp" --name "$name" --description "$desc" \
        --domain "$domain" --proxy-mode "$mode" --fetch-attack "$fetch" --dns-attack "$dns" \
        --maillog "$W/$name.maillog" --resolver-log "$W/$name.resolver.log" \
        --source "$CAPTURE_SOURCE" --out "$OUT/.$name.json.tmp" || die "$name: facts.py rejected the capture"
    publish "$OUT/.$name.json.tmp" "$OUT/$name.facts.json" "$tmp" "$OUT/$name.pcap"
    log "    -> $OUT/$name.pcap ($(stat -c %s "$OUT/$name.pcap") bytes)"
}

# ---------------------------------------------------------------- main

run_start /run/swsts-make.lock /tmp/swsts-make

setup_network
make_cert
start_dns
start_nginx
start_receiver
setup_sender

capture sts-enforce-clean "$ZONE" pass off off \
    "Postfix 3.7 with postfix-mta-sts-resolver 1.1.2 as its TLS policy source (smtp_tls_policy_maps = socketmap) sends one message to user@$ZONE. The resolver looks up TXT _mta-sts.$ZONE (v=STSv1; id=$STS_ID) and fetches https://mta-sts.$ZONE/.well-known/mta-sts.txt from nginx (mode: enforce, mx: mx.$ZONE; a test CA the resolver trusts); Postfix looks up the MX and its address and delivers with STARTTLS, verifying the certificate (secure, match=mx.$ZONE). The on-path box only routes and relays."
capture sts-fetch-reset "$ZONE" overwrite on off \
    "As sts-enforce-clean, but the on-path box answers every TCP connection to port 443 with a reset (nft: reject with tcp reset), so the resolver's policy fetch fails and it gives Postfix no policy; the box also overwrites STARTTLS in the EHLO reply (XXXXXXXA), and Postfix (smtp_tls_security_level = may) delivers in plaintext. The attack on MTA-STS's trust on first use."
capture sts-txt-removed "$ZONE" pass off on \
    "As sts-enforce-clean (the run before it), but the on-path box answers the sender's DNS queries itself from a copy of the zone without the _mta-sts TXT records (nft dnat to its own NSD, addressed as the real server): TXT _mta-sts.$ZONE is NXDOMAIN, the resolver fetches nothing, and Postfix delivers with STARTTLS but without a policy (may). Analysed with the baseline of sts-enforce-clean, the TXT record disappeared."
capture sts-testing-stripped "testing.$ZONE" overwrite off off \
    "Postfix with postfix-mta-sts-resolver sends one message to user@testing.$ZONE, whose policy (TXT v=STSv1; id=$TESTING_ID, fetched over HTTPS from mta-sts.testing.$ZONE) says mode: testing; the resolver (strict_testing: false) gives Postfix no policy for a testing domain. The on-path box overwrites STARTTLS (XXXXXXXA), and Postfix delivers in plaintext."
capture sts-fetch-timeout "$ZONE" pass drop off \
    "As sts-enforce-clean, but the on-path box drops every packet to TCP/443 (nft: tcp dport 443 drop): the resolver's SYNs go unanswered until its timeout (4 s) and it gives Postfix no policy. The box relays STARTTLS untouched, so Postfix (may) still delivers with STARTTLS to the trusted certificate: the fetch was blocked, but this delivery was not downgraded."
capture sts-fetch-bad-cert "$ZONE" overwrite mitm off \
    "As sts-enforce-clean, but the on-path box sends the resolver's policy fetch to its own nginx (nft dnat of TCP/443 to itself), which presents a certificate for mta-sts.$ZONE issued by a CA the resolver does not trust: the resolver's TLS handshake fails (certificate verify failed, a fatal alert) and it gives Postfix no policy. The box also overwrites STARTTLS (XXXXXXXA), and Postfix delivers in plaintext."

log "all captures written to $OUT"
