#!/usr/bin/env bash
# Make real DNS + SMTP captures: an authoritative NSD serving a DNSSEC-signed zone dns.test,
# a validating Unbound, a receiving Postfix on mx1/mx2.dns.test and a sending Postfix that
# looks the MX up itself (DNSSEC + DANE), each in its own network namespace, captured with
# tcpdump on the client side. Writes pcaps/dns-NAME.pcap with dns-NAME.facts.json.
#
#   sudo scripts/dns-captures/make.sh [--out DIR] [--keep-logs DIR] [CAPTURE...]
#
# With CAPTURE names (e.g. dns-dane-tls12-match), only those captures are written; the others
# in --out are left as they are (every run makes new keys, so a capture made again differs).
#
# Debian bookworm, run as root. Installs what it needs. Uses only addresses inside the
# namespaces it creates (10.79.0.0/24 on a bridge between them). See README.md beside this file.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/netns.sh
. "$HERE/../lib/netns.sh"
LOG_TAG="dns make.sh"
# capture names are ours; every other argument is the shared command line
ONLY=()
ARGS=()
for a in "$@"; do
    case "$a" in
        dns-*) ONLY+=("$a") ;;
        *) ARGS+=("$a") ;;
    esac
done
capture_script_args "${ARGS[@]}"

NS_L=swdns-lan        # holds only the bridge every other namespace is plugged into
NS_A=swdns-auth       # NSD, authoritative for dns.test (signed)
NS_R=swdns-resolver   # Unbound, validating, stub-zone dns.test -> NSD
NS_M=swdns-mx         # receiving Postfix on mx1 and mx2
NS_C=swdns-client     # sending Postfix, kdig, tcpdump
ALL_NS=("$NS_C" "$NS_M" "$NS_R" "$NS_A" "$NS_L")
C_IP=10.79.0.10
MX1_IP=10.79.0.25
MX2_IP=10.79.0.26
MX3_IP=10.79.0.27     # mx3/mx4: TLS 1.2 only, a certificate from a private CA
MX4_IP=10.79.0.28
R_IP=10.79.0.53
A_IP=10.79.0.54
ZONE=dns.test
# the only files this script writes in --out
CAPTURES=(dns-mx-delivery dns-tcp dns-kdig-do dns-dane-tls12-match dns-dane-tls12-mismatch)
for a in "${ONLY[@]}"; do
    printf '%s\n' "${CAPTURES[@]}" | grep -qx -- "$a" || { echo "unknown capture: $a" >&2; exit 2; }
done
wanted() { [ ${#ONLY[@]} = 0 ] || printf '%s\n' "${ONLY[@]}" | grep -qx -- "$1"; }
FAILURE_LOGS="client/maillog mx/maillog unbound.log nsd.log tcpdump.err kdig.out"

ensure_packages() {
    need_base
    need_cmd tshark tshark
    need_exe /usr/sbin/unbound unbound
    need_exe /usr/sbin/nsd nsd
    need_cmd ldns-signzone ldnsutils
    need_cmd kdig knot-dnsutils
    need_cmd dig bind9-dnsutils
    # unbound and nsd would start system-wide services on the host: we run our own instances
    # inside namespaces only, so keep the packages from starting theirs
    NO_SERVICE_START=1 install_needed
}

# ---------------------------------------------------------------- cleanup (called by on_exit)

teardown() {
    postfix_abort client mx
    netns_delete "${ALL_NS[@]}"
}

keep_logs() {
    cp "$W"/client/maillog "$1/client.maillog" 2>/dev/null
    cp "$W"/mx/maillog "$1/mx.maillog" 2>/dev/null
    cp "$W"/unbound.log "$W"/nsd.log "$W"/kdig.out "$1/" 2>/dev/null
    rm -rf "$1/zone"; cp -r "$W"/zone "$1/" 2>/dev/null
    cp "$W"/unbound.conf "$W"/nsd.conf "$1/" 2>/dev/null
    cp "$W"/tls/server.crt "$1/mx.crt" 2>/dev/null
    cp "$W"/tls/ca.crt "$1/private-ca.crt" 2>/dev/null
    cp "$W"/tls/tls12-chain.crt "$1/mx3-chain.crt" 2>/dev/null
}

remove_partial() {
    local n
    for n in "${CAPTURES[@]}"; do rm -f "$OUT/.$n.pcap.tmp" "$OUT/.$n.json.tmp" 2>/dev/null; done
}

# ---------------------------------------------------------------- network

# set_resolv_conf OPTIONS...: the client's resolv.conf (bind-mounted by "ip netns exec")
set_resolv_conf() {
    {
        echo "nameserver $R_IP"
        # glibc >= 2.31 clears the AD bit of answers unless trust-ad is set. Postfix 3.7 sets
        # RES_TRUSTAD itself when it asks for DNSSEC (the captures are the same without this
        # line); it is here for any other glibc program run in the namespace
        echo "options trust-ad $*"
    } > "/etc/netns/$NS_C/resolv.conf"
}

setup_network() {
    log "creating namespaces ${ALL_NS[*]}"
    # by default nothing leaves a namespace: lookups go to its own loopback (nothing there)
    netns_add "$(printf '127.0.0.1 localhost\n::1 localhost')" "${ALL_NS[@]}"
    set_resolv_conf
    ip -n $NS_L link add swd-br type bridge
    ip -n $NS_L link set swd-br up
    local pair ns dev ip
    for pair in "$NS_C swd-c $C_IP" "$NS_M swd-m $MX1_IP" "$NS_R swd-r $R_IP" "$NS_A swd-a $A_IP"; do
        read -r ns dev ip <<<"$pair"
        ip link add "$dev" netns "$ns" type veth peer name "${dev}b" netns $NS_L
        ip -n $NS_L link set "${dev}b" master swd-br
        ip -n $NS_L link set "${dev}b" up
        ip -n "$ns" addr add "$ip/24" dev "$dev"
        no_offload "$ns" "$dev"
        nsx "$ns" sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1" 2>/dev/null || true
        ip -n "$ns" link set "$dev" up
    done
    ip -n $NS_M addr add "$MX2_IP/24" dev swd-m
    ip -n $NS_M addr add "$MX3_IP/24" dev swd-m
    ip -n $NS_M addr add "$MX4_IP/24" dev swd-m
    wait_for 5 "veths up" links_up
}

links_up() {
    ip -n $NS_C link show swd-c | grep -q 'state UP' && ip -n $NS_A link show swd-a | grep -q 'state UP' \
        && ip -n $NS_R link show swd-r | grep -q 'state UP' && ip -n $NS_M link show swd-m | grep -q 'state UP'
}

# ---------------------------------------------------------------- certificate, zone, NSD, Unbound

make_cert() {
    mkdir -p "$W/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 \
        -subj "/CN=mx1.$ZONE" -addext "subjectAltName=DNS:mx1.$ZONE,DNS:mx2.$ZONE" \
        -keyout "$W/tls/server.key" -out "$W/tls/server.crt" >/dev/null 2>&1
    chmod 644 "$W/tls/server.crt"; chmod 600 "$W/tls/server.key"
    # TLSA 3 1 1: SHA-256 of the DER SubjectPublicKeyInfo of the leaf
    SPKI_SHA256=$(spki_sha256 "$W/tls/server.crt")
    # mx3 and mx4 (TLS 1.2 only): a leaf issued by a private CA that no root store holds,
    # sent with that CA as its chain
    local t=$W/tls
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 -subj "/CN=swdns private test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$t/ca.key" -out "$t/ca.crt" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=mx3.$ZONE" -keyout "$t/tls12.key" -out "$t/tls12.csr" >/dev/null 2>&1
    printf 'subjectAltName=DNS:mx3.%s,DNS:mx4.%s\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \
        "$ZONE" "$ZONE" > "$t/tls12.ext"
    openssl x509 -req -in "$t/tls12.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial -days 365 -sha256 \
        -extfile "$t/tls12.ext" -out "$t/tls12.crt" >/dev/null 2>&1
    cat "$t/tls12.crt" "$t/ca.crt" > "$t/tls12-chain.crt"
    chmod 644 "$t/tls12-chain.crt" "$t/ca.crt"; chmod 600 "$t/tls12.key" "$t/ca.key"
    TLS12_SPKI_SHA256=$(spki_sha256 "$t/tls12.crt")
    # the key mx4's TLSA record pins: one the server does not use (a key rolled over without
    # updating DNS)
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$t/old.key" >/dev/null 2>&1
    OLD_SPKI_SHA256=$(openssl pkey -in "$t/old.key" -pubout -outform DER | sha256sum | cut -d' ' -f1)
}
# spki_sha256 CERT: SHA-256 of the DER SubjectPublicKeyInfo of a PEM certificate (TLSA 3 1 1)
spki_sha256() {
    openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1
}

make_zone() {
    local z=$W/zone
    mkdir -p "$z"
    cat > "$z/$ZONE.zone" <<EOF
\$ORIGIN $ZONE.
\$TTL 300
@            SOA   ns1.$ZONE. hostmaster.$ZONE. 2026112201 3600 600 86400 300
@            NS    ns1.$ZONE.
ns1          A     $A_IP
@            MX    10 mx1.$ZONE.
@            MX    20 mx2.$ZONE.
mx1          A     $MX1_IP
mx2          A     $MX2_IP
_25._tcp.mx1 TLSA  3 1 1 $SPKI_SHA256
ee-match     MX    10 mx3.$ZONE.
ee-mismatch  MX    10 mx4.$ZONE.
mx3          A     $MX3_IP
mx4          A     $MX4_IP
_25._tcp.mx3 TLSA  3 1 1 $TLS12_SPKI_SHA256
_25._tcp.mx4 TLSA  3 1 1 $OLD_SPKI_SHA256
_mta-sts     TXT   "v=STSv1; id=1"
_smtp._tls   TXT   "v=TLSRPTv1; rua=mailto:tlsrpt@dns.test"
EOF
    # a KSK and a ZSK of our own (ECDSA P-256 SHA-256, algorithm 13); NSEC, 30 days validity
    (
        cd "$z"
        KSK=$(ldns-keygen -a ECDSAP256SHA256 -k "$ZONE")
        ZSK=$(ldns-keygen -a ECDSAP256SHA256 "$ZONE")
        ldns-signzone -e "$(date -u -d '+30 days' +%Y%m%d%H%M%S)" -i "$(date -u -d '-1 hour' +%Y%m%d%H%M%S)" \
            -f "$ZONE.zone.signed" "$ZONE.zone" "$ZSK" "$KSK"
        cp "$KSK.ds" trust-anchor.ds
        cp "$KSK.key" ksk.key
        cp "$ZSK.key" zsk.key
    )
    grep -q RRSIG "$z/$ZONE.zone.signed" || die "ldns-signzone produced no signatures"
    # the signed zone in ldns' canonical presentation form, for facts.py to compare with
    ldns-read-zone "$z/$ZONE.zone.signed" > "$z/$ZONE.zone.canonical"
    chmod -R a+rX "$z"
}

start_nsd() {
    cat > "$W/nsd.conf" <<EOF
server:
    ip-address: $A_IP
    port: 53
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$W/zone"
    database: ""
    zonelistfile: "$W/nsd.zonelist"
    xfrdfile: "$W/nsd.xfrdstate"
    xfrdir: "$W"
    pidfile: "$W/nsd.pid"
    logfile: "$W/nsd.log"
    server-count: 1
    verbosity: 1
    hide-version: yes
remote-control:
    control-enable: no
zone:
    name: "$ZONE"
    zonefile: "$ZONE.zone.signed"
EOF
    nsd-checkconf "$W/nsd.conf" || die "nsd-checkconf failed"
    nsd-checkzone "$ZONE" "$W/zone/$ZONE.zone.signed" >/dev/null || die "nsd-checkzone failed"
    nsx $NS_A nsd -d -c "$W/nsd.conf" >>"$W/nsd.log" 2>&1 &
    wait_for 10 "NSD listening" nsd_listening
}
nsd_listening() { nsx $NS_A ss -Hlun "sport = :53" | grep -q "$A_IP:53"; }

start_unbound() {
    cat > "$W/unbound.conf" <<EOF
server:
    interface: $R_IP
    port: 53
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    access-control: 10.79.0.0/24 allow
    username: ""
    chroot: ""
    directory: "$W"
    pidfile: "$W/unbound.pid"
    logfile: "$W/unbound.log"
    use-syslog: no
    log-time-ascii: yes
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    module-config: "validator iterator"
    # the zone's own trust anchor (DS of our KSK); no root trust anchor at all
    trust-anchor-file: "$W/zone/trust-anchor.ds"
    # an isolated test net: the authoritative server has a private address
    do-not-query-localhost: yes
    hide-identity: yes
    hide-version: yes
    # keep the traffic to the client what a stock resolver sends
    minimal-responses: yes
    qname-minimisation: yes
    # Unbound answers the special-use name "test." itself (a built-in static local-zone,
    # RFC 6761) with NXDOMAIN and AA set unless this default zone is switched off
    local-zone: "test." nodefault
remote-control:
    control-enable: no
stub-zone:
    name: "$ZONE"
    stub-addr: $A_IP
    stub-prime: no
EOF
    unbound-checkconf "$W/unbound.conf" >/dev/null || die "unbound-checkconf failed"
    nsx $NS_R unbound -d -c "$W/unbound.conf" >>"$W/unbound.out" 2>&1 &
    wait_for 10 "Unbound listening" unbound_listening
    # validated answer from inside the resolver's namespace (not on the captured link)
    local out
    out=$(nsx $NS_R dig +time=2 +tries=2 @"$R_IP" "$ZONE" SOA +dnssec 2>&1) || true
    echo "$out" | grep -q 'flags:.* ad' || { echo "$out" >&2; die "Unbound does not validate $ZONE (no AD)"; }
    log "Unbound validates $ZONE (AD set)"
    # the client reaches Unbound (a TCP connect to port 53, closed again: no query)
    wait_for 5 "the client to reach the resolver" nsx $NS_C timeout 2 bash -c "exec 3<>/dev/tcp/$R_IP/53"
}
unbound_listening() { nsx $NS_R ss -Hlun "sport = :53" | grep -q "$R_IP:53"; }

# ---------------------------------------------------------------- Postfix

write_master_cf() { # every service unchrooted (the instances live in a temp dir)
    {
        echo "smtp      inet  n       -       n       -       -       smtpd"
        postfix_services
    } > "$1"
}

common_main_cf() { # common_main_cf INSTANCE_DIR
    postfix_main_cf "$1"
    cat <<EOF2
mydomain = $ZONE
smtp_connection_cache_on_demand = no
EOF2
}
setup_postfix() {
    local c=$W/client m=$W/mx
    mkdir -p "$c/etc" "$c/queue" "$c/data" "$m/etc" "$m/queue" "$m/data"
    chown postfix "$c/data" "$m/data"
    write_master_cf "$c/etc/master.cf"
    write_master_cf "$m/etc/master.cf"
    # mx3 and mx4: TLS 1.2 at most (the certificate is visible on the wire), the private-CA chain
    local a h
    for a in "$MX3_IP mx3" "$MX4_IP mx4"; do
        read -r a h <<<"$a"
        echo "$a:smtp inet n - n - - smtpd -o myhostname=$h.$ZONE" \
            "-o smtpd_tls_protocols=!SSLv2,!SSLv3,!TLSv1,!TLSv1.1,!TLSv1.3" \
            "-o smtpd_tls_cert_file=$W/tls/tls12-chain.crt -o smtpd_tls_key_file=$W/tls/tls12.key" >> "$m/etc/master.cf"
    done
    { common_main_cf "$c"; cat <<EOF
myhostname = client.$ZONE
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
# A and AAAA lookups for every MX host (there are no AAAA records: NODATA with NSEC)
inet_protocols = all
smtp_bind_address = $C_IP
relayhost =
# the MX lookup is Postfix's own, through the validating resolver, and DANE is used where
# the TLSA records are DNSSEC-validated
smtp_dns_support_level = dnssec
smtp_tls_security_level = dane
smtp_tls_loglevel = 1
# Postfix checks once that its resolver validates; by default it asks "NS ." (the root),
# which this isolated net cannot answer: probe the test zone instead
dnssec_probe = ns:$ZONE
EOF
    } > "$c/etc/main.cf"
    { common_main_cf "$m"; cat <<EOF
myhostname = mx1.$ZONE
myorigin = \$myhostname
mydestination = $ZONE, mx1.$ZONE, mx2.$ZONE, ee-match.$ZONE, ee-mismatch.$ZONE
inet_interfaces = $MX1_IP, $MX2_IP
inet_protocols = ipv4
smtp_dns_support_level = disabled
local_recipient_maps =
local_transport = discard:
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_banner = \$myhostname ESMTP
smtpd_tls_security_level = may
smtpd_tls_cert_file = $W/tls/server.crt
smtpd_tls_key_file = $W/tls/server.key
smtpd_tls_loglevel = 1
EOF
    } > "$m/etc/main.cf"
    log "starting the receiving Postfix on $MX1_IP, $MX2_IP, $MX3_IP and $MX4_IP"
    nsx $NS_M postfix -c "$m/etc" start >"$W/postfix-start.log" 2>&1 \
        || { cat "$W/postfix-start.log" >&2; die "receiving Postfix did not start"; }
    wait_for 10 "receiving smtpd listening" smtpd_listening
}
smtpd_listening() {
    local l
    l=$(nsx $NS_M ss -Hltn "sport = :25")
    for a in "$MX1_IP" "$MX2_IP" "$MX3_IP" "$MX4_IP"; do grep -q "$a:25" <<<"$l" || return 1; done
}

start_client_postfix() {
    # "ip netns exec" bind-mounts the namespace's resolv.conf at exec time: the sender is
    # started fresh for each capture so it reads the resolv.conf meant for that capture
    nsx $NS_C postfix -c "$W/client/etc" start >>"$W/postfix-start.log" 2>&1 \
        || { cat "$W/postfix-start.log" >&2; die "sending Postfix did not start"; }
    wait_for 10 "sending Postfix pickup" test -S "$W/client/queue/public/pickup"
}
stop_client_postfix() {
    nsx $NS_C postfix -c "$W/client/etc" stop >>"$W/postfix-start.log" 2>&1 || true
    wait_for 15 "sending Postfix to stop" client_master_gone
}
client_master_gone() { ! nsx $NS_C postfix -c "$W/client/etc" status >/dev/null 2>&1; }

# ---------------------------------------------------------------- capture, delivery

TCPDUMP_PID=""
start_capture() { # start_capture FILE
    rm -f "$W/tcpdump.err"
    ip netns exec $NS_C tcpdump -i swd-c -s 262144 -B 65536 --immediate-mode -U -n -w "$1" 'port 53 or port 25' 2>"$W/tcpdump.err" &
    TCPDUMP_PID=$!
    wait_for 10 "tcpdump listening" grep -q "listening on" "$W/tcpdump.err"
}

stop_capture() {
    [ -n "$TCPDUMP_PID" ] || return 0
    sleep 0.3   # last ACKs
    stop_pid "$TCPDUMP_PID" TERM 10
    TCPDUMP_PID=""
    # a capture with kernel drops is incomplete: the caller makes it again (once)
    DROPPED=$(sed -n 's/^\([0-9]*\) packets dropped by kernel$/\1/p' "$W/tcpdump.err")
    DROPPED=${DROPPED:-0}
    log "    tcpdump: $(grep -E 'captured|received|dropped' "$W/tcpdump.err" | paste -sd, -)"
}

# again_if_dropped NAME ATTEMPT: true if the capture just made must be made again
again_if_dropped() {
    [ "$DROPPED" = 0 ] && return 1
    rm -f "$OUT/.$1.pcap.tmp"
    [ "$2" -lt 2 ] || die "$1: tcpdump dropped $DROPPED packets twice"
    log "    tcpdump dropped $DROPPED packets: making $1 again"
    return 0
}

sent_count() { count_in "$W/client/maillog" ' status=sent'; }
final_count() { count_in "$W/client/maillog" ' status=(sent|bounced|deferred)'; }
final_after() { [ "$(final_count)" -gt "$1" ]; }
no_smtp_conn() { [ -z "$(nsx $NS_C ss -Htn state connected exclude time-wait "dport = :25")" ]; }

N_MSG=0
# deliver DOMAIN EXPECT: one message to user@DOMAIN from the sending Postfix; EXPECT is the
# status it must end with (sent, or deferred when DANE authentication is meant to fail)
deliver() {
    local domain=$1 expect=$2 before_final before_sent
    N_MSG=$((N_MSG + 1))
    before_final=$(final_count)
    before_sent=$(sent_count)
    log "delivery $N_MSG: Postfix -> user@$domain"
    nsx $NS_C sendmail -C "$W/client/etc" -f alice@client.$ZONE "user@$domain" <<EOF
From: Alice Example <alice@client.$ZONE>
To: User Example <user@$domain>
Subject: stripwatch DNS capture test $N_MSG
Message-ID: <swdns-$N_MSG-$$@client.$ZONE>

Hello,

this is test message number $N_MSG for the stripwatch DNS captures.
It contains nothing of interest.

Alice
EOF
    wait_for 30 "delivery $N_MSG to finish" final_after "$before_final"
    if [ "$expect" = deferred ]; then
        grep -E ' status=' "$W/client/maillog" | tail -n 1 | sed 's/^/    postfix: /' >&2
        grep -E ' status=' "$W/client/maillog" | tail -n 1 | grep -q ' status=deferred' \
            || die "delivery $N_MSG was not deferred"
        return 0
    fi
    if [ "$(sent_count)" -le "$before_sent" ]; then
        grep -E ' status=' "$W/client/maillog" | tail -n 3 >&2
        die "delivery $N_MSG was not sent"
    fi
    grep -E ' status=sent' "$W/client/maillog" | tail -n 1 | sed 's/^/    postfix: /' >&2
    grep -E 'TLS connection established' "$W/client/maillog" | tail -n 1 | sed 's/^/    postfix: /' >&2
}

queue_empty() { [ -z "$(find "$W/client/queue/deferred" "$W/client/queue/active" "$W/client/queue/incoming" -type f 2>/dev/null)" ]; }

# finish_capture NAME DESCRIPTION CHECKS [CLIENT_REPORT]: facts from the capture, then move into place
finish_capture() {
    local name=$1 desc=$2 checks=$3 report=${4:-}
    local tmp="$OUT/.$name.pcap.tmp" pcap="$OUT/$name.pcap" json="$OUT/$name.facts.json"
    local args=(--name "$name" --description "$desc" --zone "$W/zone/$ZONE.zone.canonical"
                --trust-anchor "$W/zone/trust-anchor.ds" --spki-sha256 "${PINNED_SPKI:-$SPKI_SHA256}"
                --check "$checks" --out "$OUT/.$name.json.tmp")
    [ -n "$report" ] && args+=(--client-report "$report")
    /usr/bin/python3 "$HERE/facts.py" "$tmp" "${args[@]}" || die "$name: facts.py rejected the capture"
    publish "$OUT/.$name.json.tmp" "$json" "$tmp" "$pcap"
    log "    -> $pcap ($(stat -c %s "$pcap") bytes), $json"
}

# The recipient domain, the status the delivery must end with, the line the smtp client must log
# and the key the TLSA answer pins; capture_postfix uses them (the defaults are mx1's delivery)
RCPT_DOMAIN=$ZONE
EXPECT=sent
EXPECT_LOG='Verified TLS connection established to mx1'
PINNED_SPKI=""

capture_postfix() { # capture_postfix NAME DESCRIPTION CHECKS [RESOLV_OPTIONS...]
    local name=$1 desc=$2 checks=$3; shift 3
    local log0 attempt
    wanted "$name" || return 0
    log "=== $name"
    for attempt in 1 2; do
        set_resolv_conf "$@"
        start_client_postfix
        log0=$(wc -l < "$W/client/maillog")
        start_capture "$OUT/.$name.pcap.tmp"
        deliver "$RCPT_DOMAIN" "$EXPECT"
        [ "$EXPECT" = deferred ] || wait_for 10 "sender queue to be empty" queue_empty
        wait_for 10 "SMTP connection closed" no_smtp_conn
        stop_capture
        stop_client_postfix
        # a deferred message would be tried again by the next capture's sender: drop it
        postsuper -c "$W/client/etc" -d ALL >/dev/null 2>&1 || true
        set_resolv_conf
        again_if_dropped "$name" "$attempt" || break
    done
    # the smtp client's own report of this delivery (DANE verified or not), for the facts
    tail -n +"$((log0 + 1))" "$W/client/maillog" | grep ' postfix/smtp\[' \
        | sed -E 's/^.* (postfix\/smtp)\[[0-9]+\]: /\1: /' > "$W/$name.report"
    if ! grep -qE "$EXPECT_LOG" "$W/$name.report"; then
        cat "$W/$name.report" >&2
        die "$name: the smtp client did not log /$EXPECT_LOG/"
    fi
    finish_capture "$name" "$desc" "$checks" "$W/$name.report"
}

capture_kdig() { # capture_kdig NAME DESCRIPTION CHECKS
    local name=$1 desc=$2 checks=$3 attempt
    wanted "$name" || return 0
    log "=== $name"
    for attempt in 1 2; do
        start_capture "$OUT/.$name.pcap.tmp"
        # one kdig run, one UDP query after the other, each with the DO bit (+dnssec)
        nsx $NS_C timeout 20 kdig @"$R_IP" +dnssec +time=2 +retry=1 \
            "$ZONE" MX "mx1.$ZONE" A "_25._tcp.mx1.$ZONE" TLSA "_mta-sts.$ZONE" TXT \
            "_smtp._tls.$ZONE" TXT "$ZONE" DNSKEY > "$W/kdig.out" 2>&1 || die "kdig failed"
        [ "$(grep -c 'status: NOERROR' "$W/kdig.out")" = 6 ] || die "kdig: not 6 NOERROR answers"
        stop_capture
        again_if_dropped "$name" "$attempt" || break
    done
    finish_capture "$name" "$desc" "$checks"
}

# ---------------------------------------------------------------- main

run_start /run/swdns-make.lock /tmp/swdns-make

setup_network
make_cert
make_zone
start_nsd
start_unbound
setup_postfix

capture_postfix dns-mx-delivery \
    "Postfix 3.7 (smtp_dns_support_level = dnssec, smtp_tls_security_level = dane, no relayhost) delivers one message to user@dns.test: it looks up the MX of dns.test, the A records of mx1 and mx2 and the TLSA record of _25._tcp.mx1.dns.test over UDP through a validating Unbound (answers with AD and, since Postfix sets DO, RRSIGs), then connects to mx1 (10.79.0.25), upgrades with STARTTLS and verifies the certificate against the TLSA record (DANE-EE)." \
    "udp smtp dane"

capture_postfix dns-tcp \
    "The same delivery as dns-mx-delivery, but the sender's resolv.conf has 'options use-vc', so glibc sends every one of Postfix's DNS queries (MX, A, TLSA) over TCP port 53 to the validating Unbound, one query per TCP connection; then SMTP with STARTTLS to mx1 and DANE verification." \
    "tcp smtp dane" use-vc

capture_kdig dns-kdig-do \
    "kdig (Knot 3.2) asks the validating Unbound, over UDP with the DO bit set (+dnssec), for dns.test MX, mx1.dns.test A, _25._tcp.mx1.dns.test TLSA, _mta-sts.dns.test TXT, _smtp._tls.dns.test TXT and dns.test DNSKEY; every answer carries its RRSIG records and the AD bit." \
    "udp kdig"

# mx3 and mx4 speak TLS 1.2 at most, so the server's certificate chain is on the wire
RCPT_DOMAIN=ee-match.$ZONE EXPECT=sent EXPECT_LOG='Verified TLS connection established to mx3' \
PINNED_SPKI=$TLS12_SPKI_SHA256 capture_postfix dns-dane-tls12-match \
    "Postfix 3.7 (smtp_tls_security_level = dane) delivers one message to user@ee-match.dns.test: MX mx3.dns.test, A 10.79.0.27 and TLSA _25._tcp.mx3.dns.test 3 1 1 through the validating Unbound, then STARTTLS to mx3, which allows TLS 1.2 at most, so its certificate chain is visible: a leaf for mx3/mx4.dns.test issued by a private CA that no public root store holds. The TLSA record pins the leaf's key: DANE-EE authenticates the server, although PKIX would not." \
    "udp smtp dane tls12 tlsa-match"

RCPT_DOMAIN=ee-mismatch.$ZONE EXPECT=deferred EXPECT_LOG='status=deferred' \
PINNED_SPKI=$OLD_SPKI_SHA256 capture_postfix dns-dane-tls12-mismatch \
    "Postfix 3.7 (smtp_tls_security_level = dane) tries to deliver one message to user@ee-mismatch.dns.test: MX mx4.dns.test, A 10.79.0.28 and TLSA _25._tcp.mx4.dns.test 3 1 1 through the validating Unbound, then STARTTLS to mx4 (TLS 1.2 at most, the same private-CA chain as mx3). The TLSA record pins a key the server does not use, so DANE authentication fails and Postfix defers the message." \
    "udp smtp dane tls12 tlsa-mismatch"

log "all captures written to $OUT"
