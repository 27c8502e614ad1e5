#!/usr/bin/env bash
# Make real SMTP STARTTLS captures with certificates from a private test CA: a receiving
# Postfix 3.7 in one network namespace, openssl s_client and swaks in another, captured with
# tcpdump. Writes pcaps/tls-NAME.pcap with tls-NAME.facts.json, tls-test-root-ca.pem and the
# TLSA files tls-dane.tlsa / tls-dane-mismatch.tlsa.
#
#   sudo scripts/tls-captures/make.sh [--out DIR] [--keep-logs DIR]
#
# Debian bookworm, run as root. Installs what it needs. Uses only addresses inside the
# namespaces it creates (10.78.0.0/24 on one veth pair). See README.md beside this file.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/netns.sh
. "$HERE/../lib/netns.sh"
LOG_TAG="tls make.sh"
capture_script_args "$@"

NS_C=swtls-client
NS_S=swtls-server
C_IP=10.78.0.1        # the clients (s_client, swaks) and tcpdump
# one smtpd listener per server configuration, all in swtls-server, all "mx.tls.test"
S_OK=10.78.0.10       # leaf + intermediate from the test CA
S_SELF=10.78.0.11     # self-signed leaf
S_EXPIRED=10.78.0.12  # leaf valid 2024-01-01 .. 2025-01-01
S_WRONG=10.78.0.13    # leaf for other.example.net only
S_WEAK=10.78.0.14     # RSA 1024 leaf signed with SHA-1
S_TLS13=10.78.0.15    # ok leaf, smtpd_tls_protocols = >=TLSv1.3
SERVER_IPS="$S_OK $S_SELF $S_EXPIRED $S_WRONG $S_WEAK $S_TLS13"
SERVER_NAME=mx.tls.test
CLIENT_NAME=client.tls.test
FAILURE_LOGS="server/maillog tcpdump.err clients/*.out"

ensure_packages() {
    need_base
    need_cmd tshark tshark
    need_cmd swaks swaks
    # swaks does TLS through Net::SSLeay (a Recommends, so not pulled in by --no-install-recommends)
    perl -MNet::SSLeay -e 1 2>/dev/null || NEED+=(libnet-ssleay-perl)
    perl -MIO::Socket::SSL -e 1 2>/dev/null || NEED+=(libio-socket-ssl-perl)
    install_needed
}

# ---------------------------------------------------------------- cleanup (called by on_exit)

teardown() {
    postfix_abort server
    netns_delete $NS_C $NS_S
}

on_exit_first() { if [ -n "$TCPDUMP_PID" ]; then stop_pid "$TCPDUMP_PID" TERM 5; fi; }

keep_logs() {
    cp "$W"/server/maillog "$1/server.maillog" 2>/dev/null
    cp -r "$W"/clients "$1/" 2>/dev/null
    cp -r "$W"/tls "$1/" 2>/dev/null
}

remove_partial() { rm -f "$OUT"/.tls-*.tmp 2>/dev/null; }

# ---------------------------------------------------------------- network

link_up() { ip -n $NS_C link show swt-c | grep -q 'state UP' && ip -n $NS_S link show swt-s | grep -q 'state UP'; }

setup_network() {
    log "creating namespaces $NS_C, $NS_S"
    netns_add "$(printf '127.0.0.1 localhost\n%s %s\n%s %s' "$C_IP" "$CLIENT_NAME" "$S_OK" "$SERVER_NAME")" \
        $NS_C $NS_S
    ip link add swt-c netns $NS_C type veth peer name swt-s netns $NS_S
    ip -n $NS_C addr add $C_IP/24 dev swt-c
    for a in $SERVER_IPS; do ip -n $NS_S addr add "$a/24" dev swt-s; done
    no_offload $NS_C swt-c
    ip -n $NS_C link set swt-c up
    no_offload $NS_S swt-s
    ip -n $NS_S link set swt-s up
    wait_for 5 "veth up" link_up
}
# ---------------------------------------------------------------- certificates

# Dates: the CAs cover 2020..2040; the good leaves start on 1 January of the current year
# and end two years later, so they are valid whenever the script runs; the expired leaf
# is fixed to 2024-01-01 .. 2025-01-01.
YEAR=$(date -u +%Y)
LEAF_START="${YEAR}0101000000Z"
LEAF_END="$((YEAR + 2))0101000000Z"

write_ca_cnf() {
    cat > "$W/tls/ca.cnf" <<'EOF'
[ ca ]
default_ca = CA_int

[ CA_root ]
dir = $ENV::CA_DIR/root
database = $dir/index.txt
new_certs_dir = $dir/new
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
name_opt = ca_default
cert_opt = ca_default

[ CA_int ]
dir = $ENV::CA_DIR/int
database = $dir/index.txt
new_certs_dir = $dir/new
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
name_opt = ca_default
cert_opt = ca_default

[ policy_any ]
organizationName = optional
commonName = supplied

[ ext_root ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ ext_int ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ ext_leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = $ENV::SAN

[ ext_selfsigned_leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
subjectAltName = $ENV::SAN
EOF
}

newkey() { # newkey FILE BITS
    openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$2" -out "$1" 2>/dev/null
    chmod 600 "$1"
}

# issue CA_SECTION SERIAL SUBJECT SAN EXT START END MD KEY OUT [selfsign]
issue() {
    local section=$1 serial=$2 subj=$3 san=$4 ext=$5 start=$6 end=$7 md=$8 key=$9 out=${10}
    local selfsign=${11:-} t=$W/tls
    local -a signer
    if [ "$selfsign" = selfsign ]; then
        signer=(-selfsign -keyfile "$key")
    elif [ "$section" = CA_root ]; then
        signer=(-cert "$t/root.pem" -keyfile "$t/root.key")
    else
        signer=(-cert "$t/int.pem" -keyfile "$t/int.key")
    fi
    openssl req -new -key "$key" -subj "$subj" -out "$out.csr" 2>/dev/null
    echo "$serial" > "$t/ca/${section#CA_}/serial"
    CA_DIR="$t/ca" SAN="$san" openssl ca -batch -notext -config "$t/ca.cnf" -name "$section" \
        -preserveDN -md "$md" -startdate "$start" -enddate "$end" -extensions "$ext" \
        "${signer[@]}" -in "$out.csr" -out "$out" >>"$t/ca.log" 2>&1 \
        || { cat "$t/ca.log" >&2; die "openssl ca failed for $subj"; }
    rm -f "$out.csr"
}

make_certs() {
    local t=$W/tls
    log "making the test CA and certificates"
    mkdir -p "$t/ca/root/new" "$t/ca/int/new"
    : > "$t/ca/root/index.txt"; : > "$t/ca/int/index.txt"
    write_ca_cnf
    for k in root int ok selfsigned expired wrongname; do newkey "$t/$k.key" 2048; done
    newkey "$t/weak.key" 1024
    newkey "$t/other.key" 2048      # for the TLSA record that must not match
    issue CA_root 1000 "/O=stripwatch test/CN=stripwatch test root CA" "DNS:unused.invalid" \
        ext_root 20200101000000Z 20400101000000Z sha256 "$t/root.key" "$t/root.pem" selfsign
    issue CA_root 2000 "/O=stripwatch test/CN=stripwatch test intermediate CA" "DNS:unused.invalid" \
        ext_int 20200101000000Z 20350101000000Z sha256 "$t/int.key" "$t/int.pem"
    issue CA_int 3001 "/O=stripwatch test/CN=$SERVER_NAME" "DNS:$SERVER_NAME" \
        ext_leaf "$LEAF_START" "$LEAF_END" sha256 "$t/ok.key" "$t/ok.pem"
    issue CA_int 3002 "/O=stripwatch test/CN=$SERVER_NAME" "DNS:$SERVER_NAME" \
        ext_selfsigned_leaf "$LEAF_START" "$LEAF_END" sha256 "$t/selfsigned.key" "$t/selfsigned.pem" selfsign
    issue CA_int 3003 "/O=stripwatch test/CN=$SERVER_NAME" "DNS:$SERVER_NAME" \
        ext_leaf 20240101000000Z 20250101000000Z sha256 "$t/expired.key" "$t/expired.pem"
    issue CA_int 3004 "/O=stripwatch test/CN=other.example.net" "DNS:other.example.net" \
        ext_leaf "$LEAF_START" "$LEAF_END" sha256 "$t/wrongname.key" "$t/wrongname.pem"
    issue CA_int 3005 "/O=stripwatch test/CN=$SERVER_NAME" "DNS:$SERVER_NAME" \
        ext_leaf "$LEAF_START" "$LEAF_END" sha1 "$t/weak.key" "$t/weak.pem"
    # what each server sends: leaf + intermediate (the self-signed one sends itself only)
    for k in ok expired wrongname weak; do cat "$t/$k.pem" "$t/int.pem" > "$t/$k.chain.pem"; done
    cp "$t/selfsigned.pem" "$t/selfsigned.chain.pem"
    chmod 644 "$t"/*.pem
    # sanity: the chains verify (the weak one only at security level 0, the expired one
    # only with a time inside its validity), the self-signed one does not
    openssl verify -CAfile "$t/root.pem" -untrusted "$t/int.pem" "$t/ok.pem" "$t/wrongname.pem" >/dev/null \
        || die "test chain does not verify"
    openssl verify -auth_level 0 -CAfile "$t/root.pem" -untrusted "$t/int.pem" "$t/weak.pem" >/dev/null \
        || die "weak chain does not verify at level 0"
    openssl verify -attime 1710000000 -CAfile "$t/root.pem" -untrusted "$t/int.pem" "$t/expired.pem" >/dev/null \
        || die "expired chain does not verify in 2024"
    ! openssl verify -CAfile "$t/root.pem" -untrusted "$t/int.pem" "$t/expired.pem" >/dev/null 2>&1 \
        || die "expired leaf verifies now"
    ! openssl verify -CAfile "$t/root.pem" "$t/selfsigned.pem" >/dev/null 2>&1 \
        || die "self-signed leaf verifies against the test root"
}

spki_sha256() { openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1; }
key_spki_sha256() { openssl pkey -in "$1" -pubout -outform DER | sha256sum | cut -d' ' -f1; }
cert_sha256() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }

write_tlsa() {
    local t=$W/tls leaf_spki int_full other_spki
    leaf_spki=$(spki_sha256 "$t/ok.pem")
    int_full=$(cert_sha256 "$t/int.pem")
    other_spki=$(key_spki_sha256 "$t/other.key")
    [ "$other_spki" != "$leaf_spki" ] || die "the mismatching TLSA key equals the leaf key"
    {
        echo "; TLSA records for the server of tls-dane.pcap (leaf: $(openssl x509 -in "$t/ok.pem" -noout -subject))"
        echo "; 3 1 1: DANE-EE, SubjectPublicKeyInfo, SHA-256 of the leaf's key"
        echo "_25._tcp.$SERVER_NAME. 3600 IN TLSA 3 1 1 $leaf_spki"
        echo "; 2 0 1: DANE-TA, full certificate, SHA-256 of the intermediate CA certificate (sent in the chain)"
        echo "_25._tcp.$SERVER_NAME. 3600 IN TLSA 2 0 1 $int_full"
    } > "$OUT/.tls-dane.tlsa.tmp"
    {
        echo "; A TLSA record that matches nothing the server of tls-dane.pcap sends: the"
        echo "; SHA-256 of the SubjectPublicKeyInfo of an unrelated RSA 2048 key (tlsa-invalid)"
        echo "_25._tcp.$SERVER_NAME. 3600 IN TLSA 3 1 1 $other_spki"
    } > "$OUT/.tls-dane-mismatch.tlsa.tmp"
    cp "$t/root.pem" "$OUT/.tls-test-root-ca.pem.tmp"
}

# ---------------------------------------------------------------- Postfix

write_master_cf() { # every service unchrooted (the instance lives in a temp dir)
    local t=$W/tls
    {
        cat <<EOF2
# one smtpd per server configuration, each on its own address
$S_OK:smtp inet n - n - - smtpd
  -o smtpd_tls_cert_file=$t/ok.chain.pem -o smtpd_tls_key_file=$t/ok.key
$S_SELF:smtp inet n - n - - smtpd
  -o smtpd_tls_cert_file=$t/selfsigned.chain.pem -o smtpd_tls_key_file=$t/selfsigned.key
$S_EXPIRED:smtp inet n - n - - smtpd
  -o smtpd_tls_cert_file=$t/expired.chain.pem -o smtpd_tls_key_file=$t/expired.key
$S_WRONG:smtp inet n - n - - smtpd
  -o smtpd_tls_cert_file=$t/wrongname.chain.pem -o smtpd_tls_key_file=$t/wrongname.key
# The RSA-1024 / SHA-1 chain needs no OpenSSL setting here: Postfix puts its TLS contexts
# at OpenSSL security level 0 ("backwards compatible security as a base for opportunistic
# TLS"), although Debian's OpenSSL default (level 2) refuses this key (openssl s_server:
# "ee key too small")
$S_WEAK:smtp inet n - n - - smtpd
  -o smtpd_tls_cert_file=$t/weak.chain.pem -o smtpd_tls_key_file=$t/weak.key
$S_TLS13:smtp inet n - n - - smtpd
  -o smtpd_tls_cert_file=$t/ok.chain.pem -o smtpd_tls_key_file=$t/ok.key
  -o smtpd_tls_protocols=>=TLSv1.3 -o smtpd_tls_mandatory_protocols=>=TLSv1.3
EOF2
        postfix_services
    } > "$1"
}
smtpd_listening() {
    local a listening
    listening=$(nsx $NS_S ss -Hltn "sport = :25")
    for a in $SERVER_IPS; do grep -q "$a:25" <<<"$listening" || return 1; done
}

setup_postfix() {
    local s=$W/server
    mkdir -p "$s/etc" "$s/queue" "$s/data"
    chown postfix "$s/data"
    write_master_cf "$s/etc/master.cf"
    local ifaces
    ifaces=${SERVER_IPS// /, }
    { postfix_main_cf "$s"; cat <<EOF
inet_protocols = ipv4
inet_interfaces = $ifaces
myhostname = $SERVER_NAME
mydomain = tls.test
myorigin = \$myhostname
mydestination = tls.test, \$myhostname
local_recipient_maps =
local_transport = discard:
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_banner = \$myhostname ESMTP
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
EOF
    } > "$s/etc/main.cf"
    log "starting Postfix"
    nsx $NS_S timeout 30 postfix -c "$s/etc" check >"$W/postfix-start.log" 2>&1 || true
    nsx $NS_S timeout 30 postfix -c "$s/etc" start >>"$W/postfix-start.log" 2>&1 \
        || { cat "$W/postfix-start.log" >&2; die "Postfix did not start"; }
    wait_for 10 "smtpd listening on every server address" smtpd_listening
}

# ---------------------------------------------------------------- capture and clients

TCPDUMP_PID=""
start_capture() { # start_capture FILE
    rm -f "$W/tcpdump.err"
    ip netns exec $NS_C tcpdump -i swt-c -s 262144 --immediate-mode -U -n -w "$1" 'tcp port 25' 2>"$W/tcpdump.err" &
    TCPDUMP_PID=$!
    wait_for 10 "tcpdump listening" grep -q "listening on" "$W/tcpdump.err"
}

# shellcheck disable=SC2143 # not grep -q: ss could die of SIGPIPE and pipefail report that
no_smtp_connections() { [ -z "$(nsx $NS_C ss -Htn state all '( dport = :25 )' | grep -v TIME-WAIT)" ]; }

stop_capture() {
    [ -n "$TCPDUMP_PID" ] || return 0
    wait_for 10 "client connections to close" no_smtp_connections
    sleep 0.3   # last ACKs
    stop_pid "$TCPDUMP_PID" TERM 10
    TCPDUMP_PID=""
}

N_CLIENT=0
# s_client NAME SERVER_IP ARGS...: one STARTTLS session with openssl s_client (EHLO, QUIT)
s_client() {
    local name=$1 server=$2; shift 2
    local out
    N_CLIENT=$((N_CLIENT + 1))
    out="$W/clients/$name.$N_CLIENT.s_client.out"
    echo "$out" >> "$W/clients/$name.list"
    log "    openssl s_client -starttls smtp -connect $server:25 $*"
    # -ign_eof: keep reading until the server closes after QUIT; -nocommands: a line
    # starting with Q or R is data, not a command; the sleep lets the handshake finish
    # before EHLO goes out (s_client reads stdin only afterwards anyway)
    { sleep 0.5; printf 'EHLO %s\n' "$CLIENT_NAME"; sleep 0.3; printf 'QUIT\n'; sleep 1; } |
        nsx $NS_C timeout 15 openssl s_client -starttls smtp -name "$CLIENT_NAME" \
            -connect "$server:25" -crlf -ign_eof -nocommands -showcerts \
            -CAfile "$W/tls/root.pem" -verify_hostname "$SERVER_NAME" "$@" >"$out" 2>&1 || true
}

# swaks_send NAME SERVER_IP ARGS...: one message with swaks --tls
swaks_send() {
    local name=$1 server=$2; shift 2
    local out
    N_CLIENT=$((N_CLIENT + 1))
    out="$W/clients/$name.$N_CLIENT.swaks.out"
    echo "$out" >> "$W/clients/$name.list"
    log "    swaks --tls --server $server:25 $*"
    nsx $NS_C timeout 20 swaks --server "$server" --port 25 --tls --ehlo "$CLIENT_NAME" \
        --from "alice@$CLIENT_NAME" --to bob@tls.test --timeout 10 \
        --header "Subject: stripwatch TLS capture $name" \
        --body "Hello Bob, this is a test message for the stripwatch TLS captures." \
        "$@" >"$out" 2>&1 || true
}

TLSA_ARGS=()
# capture NAME "DESCRIPTION" SCENARIO_JSON CLIENT_CMD...
# Each CLIENT_CMD is one string: "s_client IP ARGS" or "swaks_send IP ARGS".
capture() {
    local name=$1 desc=$2 scenario=$3; shift 3
    local tmp="$OUT/.tls-$name.pcap.tmp" cmd words
    log "=== tls-$name"
    : > "$W/clients/$name.list"
    start_capture "$tmp"
    for cmd in "$@"; do
        read -ra words <<<"$cmd"     # "FUNCTION IP ARGS..."
        "${words[0]}" "$name" "${words[@]:1}"
    done
    stop_capture
    timeout 90 /usr/bin/python3 "$HERE/facts.py" "$tmp" --name "tls-$name" --description "$desc" \
        --scenario "$scenario" --certs "$W/tls" --clients "$W/clients/$name.list" "${TLSA_ARGS[@]}" \
        --out "$OUT/.tls-$name.facts.json.tmp" \
        || die "tls-$name: the capture does not show what the scenario needs"
    publish "$OUT/.tls-$name.facts.json.tmp" "$OUT/tls-$name.facts.json" "$tmp" "$OUT/tls-$name.pcap"
    log "    -> tls-$name.pcap ($(stat -c %s "$OUT/tls-$name.pcap") bytes)"
}

# ---------------------------------------------------------------- main

run_start /run/swtls-make.lock /tmp/swtls-make
mkdir -p "$W/tls" "$W/clients"

setup_network
make_certs
write_tlsa
setup_postfix

TLS12="-servername $SERVER_NAME -tls1_2"

# Scenario JSON (checked by facts.py against the capture): the certificate the server was
# given ("cert"), what each session must show, and the findings a careful sender reports.
capture ca-signed-ok \
    "openssl s_client (TLS 1.2, SNI mx.tls.test) to Postfix 3.7 presenting a leaf for mx.tls.test issued by the test intermediate CA, sent with the intermediate." \
    '{"sessions": [{"cert": "ok", "version": "TLSv1.2", "findings": []}]}' \
    "s_client $S_OK $TLS12"

capture self-signed \
    "openssl s_client (TLS 1.2, SNI mx.tls.test) to Postfix 3.7 presenting a self-signed certificate for mx.tls.test." \
    '{"sessions": [{"cert": "selfsigned", "version": "TLSv1.2", "findings": ["certificate-self-signed", "certificate-not-trusted"]}]}' \
    "s_client $S_SELF $TLS12"

capture expired \
    "openssl s_client (TLS 1.2, SNI mx.tls.test) to Postfix 3.7 presenting a leaf for mx.tls.test from the test intermediate CA that was valid from 2024-01-01 to 2025-01-01." \
    '{"sessions": [{"cert": "expired", "version": "TLSv1.2", "findings": ["certificate-expired"]}]}' \
    "s_client $S_EXPIRED $TLS12"

capture wrong-name \
    "openssl s_client (TLS 1.2, SNI mx.tls.test) to Postfix 3.7 (banner mx.tls.test) presenting a leaf from the test intermediate CA for other.example.net only." \
    '{"sessions": [{"cert": "wrongname", "version": "TLSv1.2", "findings": ["certificate-host-mismatch"]}]}' \
    "s_client $S_WRONG $TLS12"

capture weak \
    "openssl s_client (TLS 1.2, SNI mx.tls.test, OpenSSL security level 0) to Postfix 3.7 presenting an RSA 1024-bit leaf for mx.tls.test signed with SHA-1 by the test intermediate CA." \
    '{"sessions": [{"cert": "weak", "version": "TLSv1.2", "findings": ["certificate-not-trusted", "certificate-weak"]}]}' \
    "s_client $S_WEAK $TLS12 -cipher DEFAULT:@SECLEVEL=0"

capture 13 \
    "swaks --tls (SNI mx.tls.test, no protocol restriction) sends one message to Postfix 3.7 with the CA-signed leaf; TLS 1.3 is negotiated and the certificate is encrypted." \
    '{"sessions": [{"cert": "ok", "version": "TLSv1.3", "findings": ["certificate-not-observable"]}]}' \
    "swaks_send $S_OK --tls-sni $SERVER_NAME"

capture alert \
    "openssl s_client forcing TLS 1.2 (SNI mx.tls.test) to Postfix 3.7 restricted to TLS 1.3 (smtpd_tls_protocols = >=TLSv1.3): the server answers the ClientHello with a fatal protocol_version alert." \
    '{"sessions": [{"cert": null, "version": null, "alert": {"level": 2, "description": 70}, "findings": ["tls-handshake-failed"]}]}' \
    "s_client $S_TLS13 $TLS12"

capture no-sni-banner-name \
    "openssl s_client (TLS 1.2, no SNI) to Postfix 3.7 whose banner and EHLO name (myhostname) is mx.tls.test, presenting the CA-signed leaf for mx.tls.test." \
    '{"sessions": [{"cert": "ok", "version": "TLSv1.2", "sni": null, "findings": []}]}' \
    "s_client $S_OK -noservername -tls1_2"

TLSA_ARGS=(--tlsa "tls-dane.tlsa=$OUT/.tls-dane.tlsa.tmp" --tlsa "tls-dane-mismatch.tlsa=$OUT/.tls-dane-mismatch.tlsa.tmp")
capture dane \
    "Two STARTTLS sessions to the same Postfix 3.7 server presenting the CA-signed leaf for mx.tls.test and the intermediate: openssl s_client (TLS 1.2, EHLO/QUIT), then swaks sending one message (TLS 1.2). tls-dane.tlsa matches (3 1 1 leaf key, 2 0 1 intermediate); tls-dane-mismatch.tlsa does not." \
    '{"sessions": [{"cert": "ok", "version": "TLSv1.2", "findings": [], "dane": true}, {"cert": "ok", "version": "TLSv1.2", "findings": [], "dane": true}]}' \
    "s_client $S_OK $TLS12" "swaks_send $S_OK --tls-sni $SERVER_NAME --tls-protocol tlsv1_2"

for f in tls-dane.tlsa tls-dane-mismatch.tlsa tls-test-root-ca.pem; do
    mv "$OUT/.$f.tmp" "$OUT/$f"
    chmod 644 "$OUT/$f"
done

log "all captures written to $OUT"
