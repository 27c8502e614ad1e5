#!/usr/bin/env bash
# Make real SMTP captures with senders other than Postfix: Exim 4 and OpenSMTPD (Debian
# bookworm packages) -> on-path proxy (strip_proxy.py) -> Postfix, in network namespaces,
# captured with tcpdump, plus NAME.expected.json for each capture (by expect.py).
#
#   sudo scripts/sender-captures/make.sh [--out DIR] [--keep-logs DIR]
#
# Debian bookworm, run as root. exim4 and opensmtpd conflict with postfix as packages, so they
# are not installed: their .debs (and any missing library) are fetched with apt-get download,
# unpacked with dpkg -x into the work folder and run from there with a config of our own.
# Only their system users are added (useradd) if missing. Uses only addresses inside the
# namespaces it creates (10.78.0.0/24 and 10.78.1.0/24). See README.md beside this file.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/netns.sh
. "$HERE/../lib/netns.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/relay.sh
. "$HERE/../lib/relay.sh"
LOG_TAG="senders"
capture_script_args "$@"

NS_C=swsnd-client
NS_M=swsnd-mid
NS_S=swsnd-server
C_IP=10.78.0.1      # the sender: Exim or OpenSMTPD (swsnd-client)
S_IP=10.78.0.2      # the server address S the sender relays to (proxy on swsnd-mid)
M_IP=10.78.1.1      # swsnd-mid, server-facing side
R_IP=10.78.1.2      # the real receiving Postfix (swsnd-server)
VETH=sws
CAPTURE_SOURCE=scripts/sender-captures/make.sh
FAILURE_LOGS="sender/* server/maillog proxy.log proxy.out tcpdump.err"
DEB_CACHE=/var/cache/stripwatch-sender-debs
SENDER_DEBS="exim4-daemon-light exim4-base opensmtpd"
# the libraries the two daemons link (their Depends); any that is not installed is unpacked too
SENDER_LIBS="libgnutls-dane0 libgnutls30 libidn12 libidn2-0 libnsl2 libpcre2-8-0 libdb5.3 libcrypt1
    libevent-2.1-7 libpam0g libssl3 zlib1g"
PKG=""              # the unpacked packages ($W/pkg)
LIBDIR=""
EXIM=""
SMTPD=""
SMTPCTL=""

ensure_packages() {
    need_base
    need_cmd unshare util-linux
    need_cmd nsenter util-linux
    install_needed
}

# ---------------------------------------------------------------- cleanup (called by on_exit)

teardown() {
    stop_sender
    postfix_abort server
    netns_delete $NS_C $NS_M $NS_S
}

keep_logs() {
    cp -r "$W"/sender "$1/" 2>/dev/null
    cp "$W"/server/maillog "$1/server.maillog" 2>/dev/null
    cp "$W"/proxy.log "$1/proxy.log" 2>/dev/null
    cp "$W"/proxy.out "$1/proxy.out" 2>/dev/null
}

remove_partial() { rm -f "$OUT"/.real-*.tmp 2>/dev/null; }

# ---------------------------------------------------------------- the packages, unpacked

deb_cached() { compgen -G "$DEB_CACHE/${1}_*.deb" >/dev/null; }

fetch_debs() { # fetch_debs PKG...: into $DEB_CACHE, unless there already
    local missing=() p
    for p in "$@"; do deb_cached "$p" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "downloading ${missing[*]}"
    mkdir -p "$DEB_CACHE"
    chown _apt "$DEB_CACHE" 2>/dev/null || true
    if ! (cd "$DEB_CACHE" && apt-get download -q "${missing[@]}" >/dev/null); then
        log "apt-get download failed once; updating the index and retrying"
        apt-get update -q >/dev/null || true
        (cd "$DEB_CACHE" && apt-get download -q "${missing[@]}" >/dev/null) \
            || die "apt-get download ${missing[*]} failed"
    fi
}

unpack_senders() {
    local p libs=() deb
    for p in $SENDER_LIBS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || libs+=("$p")
    done
    # shellcheck disable=SC2086 # one package a word
    fetch_debs $SENDER_DEBS "${libs[@]}"
    PKG=$W/pkg
    mkdir -p "$PKG"
    for p in $SENDER_DEBS "${libs[@]}"; do
        for deb in "$DEB_CACHE/${p}"_*.deb; do dpkg -x "$deb" "$PKG"; done
    done
    LIBDIR=$PKG/usr/lib/x86_64-linux-gnu
    # no set-id bits on the private copies: the dynamic loader would ignore LD_LIBRARY_PATH
    # when Exim re-executes itself for the delivery (the caller is root anyway)
    find "$PKG" -type f -perm /6000 -exec chmod ug-s {} +
    EXIM=$PKG/usr/sbin/exim4
    SMTPD=$PKG/usr/sbin/smtpd
    SMTPCTL=$PKG/usr/sbin/smtpctl
    for p in "$EXIM" "$SMTPD"; do
        if LD_LIBRARY_PATH=$LIBDIR ldd "$p" | grep -q "not found"; then
            LD_LIBRARY_PATH=$LIBDIR ldd "$p" | grep "not found" >&2
            die "$p: libraries missing"
        fi
    done
    log "unpacked: $(LD_LIBRARY_PATH=$LIBDIR "$SMTPD" -h 2>&1 | grep -m1 version), exim $(dpkg-deb -f "$DEB_CACHE"/exim4-daemon-light_*.deb Version)"
}

add_user() { # add_user NAME HOME: a system user with a group of its own, unless there
    getent group "$1" >/dev/null || groupadd --system "$1" || return 1
    getent passwd "$1" >/dev/null \
        || useradd --system --gid "$1" --home-dir "$2" --no-create-home --shell /usr/sbin/nologin "$1"
}

ensure_users() { # the accounts the packages' maintainer scripts would have made
    local u
    for u in "Debian-exim /var/spool/exim4" "opensmtpd /var/lib/opensmtpd/empty" \
        "opensmtpq /var/lib/opensmtpd/empty"; do
        # shellcheck disable=SC2086 # name and home
        # /etc/passwd may be locked for a moment by a package install of another capture script
        add_user $u || { sleep 2; add_user $u; } || die "cannot add the user ${u%% *}"
    done
}

# ---------------------------------------------------------------- the senders
# A fresh instance for every capture (its own spool, log and retry data in $W/sender/N), so
# that a message one mode never delivered is not retried in the next capture.

SENDER=""           # exim | opensmtpd
SD=""               # the current instance's folder
SMTPD_PID=""
N_INST=0

new_instance() {
    N_INST=$((N_INST + 1))
    SD=$W/sender/$N_INST-$SENDER
    mkdir -p "$SD"
    case $SENDER in
        exim) exim_instance ;;
        opensmtpd) opensmtpd_instance ;;
    esac
}

exim_instance() {
    mkdir -p "$SD/spool" "$SD/log"
    chown Debian-exim:Debian-exim "$SD/spool" "$SD/log"
    # Opportunistic TLS is Exim's default (STARTTLS whenever offered); the TLS settings are
    # left at their defaults, so tls_tempfail_tryclear = true. Fast retries so that a
    # deferred message is tried again within seconds.
    cat > "$SD/exim.conf" <<EOF
exim_path = $EXIM
spool_directory = $SD/spool
log_file_path = $SD/log/%slog
primary_hostname = client.swcap.test
qualify_domain = client.swcap.test
exim_user = Debian-exim
exim_group = Debian-exim
trusted_users = root
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
keep_environment = LD_LIBRARY_PATH
log_selector = +smtp_connection +tls_peerdn +tls_certificate_verified +outgoing_port
begin routers
smarthost:
  driver = manualroute
  domains = *
  route_list = * $S_IP
  transport = remote_smtp
  no_more
begin transports
remote_smtp:
  driver = smtp
  interface = $C_IP
  helo_data = client.swcap.test
  hosts_try_dane =
begin retry
* * F,10m,1s
EOF
    chmod 644 "$SD/exim.conf"
}

opensmtpd_instance() {
    # smtpd's spool, chroot folder and control socket are compiled in (/var/spool/smtpd,
    # /var/lib/opensmtpd/empty, /run/smtpd.sock): it runs in a mount namespace of its own in
    # which private folders are bound over /var/spool, /var/lib and /run.
    mkdir -p "$SD/spool" "$SD/lib/opensmtpd/empty" "$SD/run"
    chmod 755 "$SD/spool" "$SD/lib" "$SD/lib/opensmtpd" "$SD/lib/opensmtpd/empty" "$SD/run"
    # smtp:// relays with opportunistic STARTTLS (no verification), the default
    cat > "$SD/smtpd.conf" <<EOF
listen on lo port 25 hostname client.swcap.test
action "relay" relay host smtp://$S_IP:25 helo client.swcap.test src $C_IP
match from local for any action "relay"
EOF
    chmod 644 "$SD/smtpd.conf"
    # setsid: smtpd signals its whole process group when it stops, which must not be ours;
    # ip netns exec, setsid, unshare, sh and env all exec, so $! is smtpd's pid
    # shellcheck disable=SC2016 # expanded by that sh
    ip netns exec $NS_C setsid unshare --mount --propagation private sh -c '
        mount --bind "$1/spool" /var/spool && mount --bind "$1/lib" /var/lib &&
        mount --bind "$1/run" /run && exec env LD_LIBRARY_PATH="$3" "$2" -d -v -f "$1/smtpd.conf"' \
        sh "$SD" "$SMTPD" "$LIBDIR" > "$SD/smtpd.log" 2>&1 &
    SMTPD_PID=$!
    wait_for 10 "smtpd listening" smtpd_listening
}
smtpd_listening() { nsx $NS_C ss -Hltn "sport = :25" | grep -q "127.0.0.1:25"; }

stop_sender() {
    if [ -n "$SMTPD_PID" ]; then
        stop_pid "$SMTPD_PID" TERM 10
        SMTPD_PID=""
        # its children end a moment after the parent; the next instance needs the port
        poll_for 10 smtpd_gone || die "smtpd's processes did not end"
    fi
}
smtpd_gone() { [ -z "$(nsx $NS_C ss -Hltn "sport = :25")" ]; }

smtpctl() { nsenter -t "$SMTPD_PID" -m -n env LD_LIBRARY_PATH="$LIBDIR" "$SMTPCTL" "$@"; }

N_MSG=0
message() {
    cat <<EOF
From: Alice Example <alice@client.swcap.test>
To: Bob Example <bob@swcap.test>
Subject: stripwatch capture test $N_MSG ($SENDER, $1)
Message-ID: <swsnd-$N_MSG-$$@client.swcap.test>

Hello Bob,

this is test message number $N_MSG for the stripwatch captures.
It contains nothing of interest.

Alice
EOF
}

submit() { # submit MODE: hand one message to the sender
    case $SENDER in
        exim)
            # -odi: the delivery attempt runs before exim returns (bounded by timeout)
            message "$1" | nsx $NS_C timeout 90 env LD_LIBRARY_PATH="$LIBDIR" "$EXIM" -C "$SD/exim.conf" \
                -odi -oi -f alice@client.swcap.test bob@swcap.test \
                || log "exim returned $? (see $SD/log/mainlog)" ;;
        opensmtpd)
            message "$1" | nsx $NS_C /usr/bin/python3 -c '
import smtplib, sys
with smtplib.SMTP("127.0.0.1", 25, "localhost", timeout=30) as s:
    s.sendmail("alice@client.swcap.test", ["bob@swcap.test"], sys.stdin.read())' ;;
    esac
}

# outcome: delivered | bounced | deferred | pending (nothing final logged yet) | smtpd-exited
# (the daemon is gone, the message with it)
outcome() {
    case $SENDER in
        exim)
            if grep -q ' => bob@swcap.test' "$SD/log/mainlog" 2>/dev/null; then echo delivered
            elif grep -q ' \*\* bob@swcap.test' "$SD/log/mainlog" 2>/dev/null; then echo bounced
            elif grep -q ' == bob@swcap.test' "$SD/log/mainlog" 2>/dev/null; then echo deferred
            else echo pending; fi ;;
        opensmtpd)
            if grep -q 'result="Ok"' "$SD/smtpd.log"; then echo delivered
            elif grep -q 'result="PermFail"' "$SD/smtpd.log"; then echo bounced
            elif ! kill -0 "$SMTPD_PID" 2>/dev/null; then echo "smtpd-exited"
            elif grep -qE 'result="TempFail"|mta error' "$SD/smtpd.log"; then echo deferred
            else echo pending; fi ;;
    esac
}
final() { case $(outcome) in delivered|bounced|smtpd-exited) return 0 ;; *) return 1 ;; esac; }
attempted() { [ "$(outcome)" != pending ]; }

retry_now() {
    case $SENDER in
        exim) nsx $NS_C timeout 90 env LD_LIBRARY_PATH="$LIBDIR" "$EXIM" -C "$SD/exim.conf" -qff \
                  || log "exim -qff returned $?" ;;
        opensmtpd) smtpctl schedule all >>"$SD/smtpctl.log" 2>&1 || true ;;
    esac
}

RETRIES=2           # forced retries of a deferred message before the capture ends
deliver() { # deliver MODE: one message through the proxy in MODE; bounded waits
    local mode=$1 i result
    N_MSG=$((N_MSG + 1))
    start_proxy "$mode"
    log "delivery $N_MSG ($SENDER) through the proxy in mode '$mode'"
    submit "$mode"
    poll_for 30 attempted || log "no delivery attempt logged within 30 s"
    for ((i = 0; i < RETRIES; i++)); do
        final && break
        sleep 1.1   # past the 1 s retry interval
        log "    $(outcome); forcing a retry"
        retry_now
        poll_for 10 final || true
    done
    poll_for 15 proxy_idle || log "the proxy's connections did not all close within 15 s"
    stop_proxy
    stop_sender     # the next capture has an instance of its own, with an empty queue
    result=$(outcome)
    log "    $SENDER, $mode: $result"
    if [ "$result" = smtpd-exited ]; then
        grep -m1 -E 'free\(\)|fatal|abort' "$SD/smtpd.log" | sed 's/^/    smtpd: /' >&2 || true
    fi
    echo "$SENDER $mode $result" >> "$W/outcomes"
}

sender_done() { [ -z "$SMTPD_PID" ]; }

# ---------------------------------------------------------------- main

run_start /run/swsnd-make.lock /tmp/swsnd-make
: > "$W/proxy.log"
: > "$W/outcomes"

ensure_users
unpack_senders
rig_network
make_cert
start_receiver

capture_sender() { # capture_sender SENDER MODE DESCRIPTION WANT
    SENDER=$1
    new_instance
    capture "real-$1-${2/reject-starttls/reject}" "$3" "$4" "$2"
}

VIA="sending to Postfix 3.7 through an on-path proxy that"
OVERWRITE="overwrites the STARTTLS capability in the EHLO reply with XXXXXXXA (like Cisco ASA)"
DELETE="deletes the STARTTLS line from the EHLO reply"
REJECT="answers the client's STARTTLS with 454 4.7.0 itself"
BREAK="passes STARTTLS and its 220 but answers the TLS ClientHello with a TCP reset"
GARBAGE="appends its own cleartext line '250 injected by the path' to the 220 reply to STARTTLS, in the same segment, then drops the server's TLS bytes and closes a second after the client's next bytes"
ANSWER="passes STARTTLS and its 220, then answers the ClientHello with a cleartext '421 4.7.0 TLS not available' and closes (a failed handshake, not cleartext in the upgrade window)"

# SWSND_SENDERS (default: both) limits a run to some of them, while working on this script
for s in ${SWSND_SENDERS:-exim opensmtpd}; do
    case $s in
    exim)
        W_="Exim 4.96 $VIA"
        capture_sender exim overwrite "$W_ $OVERWRITE; Exim sends the mail in plaintext (MAIL, RCPT, BDAT pipelined)." \
            "starttls-stripped"
        capture_sender exim delete "$W_ $DELETE; Exim sends the mail in plaintext." \
            "starttls-not-supported"
        capture_sender exim reject-starttls "$W_ $REJECT; Exim goes on in the same connection without a new EHLO and sends the mail in plaintext." \
            "plaintext-fallback"
        capture_sender exim break-tls "$W_ $BREAK; Exim ('Error in the pull function') reconnects at once, does not send STARTTLS again and delivers in plaintext." \
            "tls-handshake-failed plaintext-fallback"
        capture_sender exim garbage-after-220 "$W_ $GARBAGE; Exim does not hand the injected line to GnuTLS, waits for a ServerHello until the close ('non-properly terminated'), then reconnects and delivers in plaintext." \
            "cleartext-after-starttls plaintext-fallback"
        capture_sender exim answer-clienthello-421 "$W_ $ANSWER; GnuTLS reads the 421 as a bad record ('An unexpected TLS packet was received'), Exim reconnects at once and delivers in plaintext." \
            "tls-handshake-failed plaintext-fallback"
        ;;
    opensmtpd)
        W_="OpenSMTPD 6.8 $VIA"
        capture_sender opensmtpd overwrite "$W_ $OVERWRITE; OpenSMTPD sends the mail in plaintext." \
            "starttls-stripped"
        capture_sender opensmtpd delete "$W_ $DELETE; OpenSMTPD sends the mail in plaintext." \
            "starttls-not-supported"
        capture_sender opensmtpd reject-starttls "$W_ $REJECT; OpenSMTPD goes on in the same connection without a new EHLO and sends the mail in plaintext." \
            "plaintext-fallback"
        capture_sender opensmtpd break-tls "$W_ $BREAK; OpenSMTPD ('opportunistic TLS failed, downgrading to plain') reconnects at once without STARTTLS and delivers in plaintext." \
            "tls-handshake-failed plaintext-fallback"
        capture_sender opensmtpd garbage-after-220 "$W_ $GARBAGE; OpenSMTPD sees data after the 220 ('Remote host sent too much data'), sends no ClientHello and closes; then smtpd itself aborts ('free(): double free detected in tcache 2') and the message is not delivered." \
            "cleartext-after-starttls( cleartext-after-starttls)*"
        capture_sender opensmtpd answer-clienthello-421 "$W_ $ANSWER; OpenSMTPD ('opportunistic TLS failed, downgrading to plain') reconnects at once without STARTTLS and delivers in plaintext." \
            "tls-handshake-failed plaintext-fallback"
        ;;
    esac
done

log "outcomes (sender, mode, what became of the message):"
sed 's/^/    /' "$W/outcomes" >&2
log "all captures written to $OUT"
