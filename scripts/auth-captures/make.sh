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
# shellcheck source-path=SCRIPTDIR source=../lib/relay.sh
. "$HERE/../lib/relay.sh"
LOG_TAG="auth-captures"
capture_script_args "$@"

NS_C=swauth-client
NS_M=swauth-mid
NS_S=swauth-server
C_IP=10.80.0.1      # swaks (swauth-client)
S_IP=10.80.0.2      # the server address the client connects to (proxy on swauth-mid)
M_IP=10.80.1.1      # swauth-mid, server-facing side
R_IP=10.80.1.2      # Postfix submission with Dovecot SASL (swauth-server)
VETH=swa
RIG_PORT=587
CAPTURE_SOURCE=scripts/auth-captures/make.sh
AUTH_USER=alice
# Distinctive, so that tests can prove it never reaches stripwatch's output.
AUTH_PASSWORD=Sw-Secret-Pa55
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

# ---------------------------------------------------------------- Postfix submission + Dovecot

# The rig's receiver (relay.sh) on 587, plus SASL from Dovecot. TLS is offered but not
# required, and AUTH is allowed before TLS (smtpd_tls_auth_only = no), so that a client whose
# upgrade was taken away really authenticates in clear. No mail without AUTH.
receiver_main_cf_extra() {
    cat <<EOF
smtpd_tls_auth_only = no
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
EOF
}

start_dovecot() { # after Postfix, which makes queue/private where the socket goes
    local d=$W/dovecot
    mkdir -p "$d/state"
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
    log "starting Dovecot (SASL for Postfix)"
    nsx $NS_S dovecot -c "$d/dovecot.conf" >"$W/dovecot-start.log" 2>&1 \
        || { cat "$W/dovecot-start.log" >&2; die "Dovecot did not start"; }
    wait_for 10 "Dovecot's auth socket" test -S "$W/server/queue/private/auth"
}

# ---------------------------------------------------------------- swaks

sender_done() { true; }   # swaks has ended when deliver returns

N_SEND=0
# deliver "MODE AUTH TLS WANT_RC REGEX": one swaks run through the proxy in MODE with
# --auth AUTH. TLS is "optional" (--tls-optional: STARTTLS when offered, else, or when it
# fails, carry on in clear) or "off" (no STARTTLS at all). The run must end with an exit
# status matching WANT_RC (an extended regex) and its transcript match REGEX: what the
# scenario means (swaks marks what it sends in clear "->", inside TLS "~>").
deliver() {
    local mode auth tls want_rc regex rc=0 out tls_args=()
    read -r mode auth tls want_rc regex <<<"$1"
    N_SEND=$((N_SEND + 1))
    [ "$tls" = optional ] && tls_args=(--tls-optional)
    out="$W/swaks/$N_SEND-$mode-$auth.out"
    start_proxy "$mode"
    log "    swaks #$N_SEND through the proxy in mode '$mode': --auth $auth ${tls_args[*]}"
    nsx $NS_C timeout 30 swaks --server "$S_IP" --port "$RIG_PORT" --ehlo client.swcap.test \
        --from "$AUTH_USER@swcap.test" --to bob@swcap.test --timeout 10 \
        --auth "$auth" --auth-user "$AUTH_USER" --auth-password "$AUTH_PASSWORD" \
        "${tls_args[@]}" \
        --header "Subject: stripwatch auth capture $N_SEND ($mode)" \
        --body "Hello Bob, this is a test message for the stripwatch AUTH captures." \
        >"$out" 2>&1 || rc=$?
    wait_for 15 "the proxy's connections to close" proxy_idle
    stop_proxy
    # the transcript's outline: where AUTH went (verb and mechanism only: a PLAIN line carries
    # the credential) and the replies that matter
    log "    swaks exit status $rc: $(awk '/^ [~-]> AUTH / { print $1, $2, $3; next }
        /^<[~*-]* +(220 2|235|454|535|250 2\.0\.0)|^\*\*\* .*(TLS|STARTTLS)/' "$out" \
        | tr -s ' ' | paste -sd '|' -)"
    if ! [[ "$rc" =~ ^($want_rc)$ ]] || ! grep -qE -- "$regex" "$out"; then
        tail -n 20 "$out" >&2
        die "swaks #$N_SEND: exit status $rc (wanted $want_rc), /$regex/ in the transcript: $(grep -cE -- "$regex" "$out")"
    fi
}

# ---------------------------------------------------------------- main

run_start /run/swauth-make.lock /tmp/swauth-make
: > "$W/proxy.log"
mkdir -p "$W/swaks" "$W/dovecot"

rig_network
make_cert
start_receiver
start_dovecot

IN_TLS='^ ~> AUTH '
IN_CLEAR='^ -> AUTH '
# capture NAME DESCRIPTION EXPECTED_VERDICTS "MODE AUTH TLS WANT_RC REGEX"... (relay.sh)
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
