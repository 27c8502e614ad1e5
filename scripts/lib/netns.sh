# shellcheck shell=bash
# What the three capture scripts (scripts/real-captures, tls-captures and dns-captures, each
# make.sh) share: a command line, the packages they install, a lock, namespaces made and torn
# down, an exit trap that tidies up after a failure, small helpers, and the Postfix boilerplate
# of an unchrooted instance in a temporary folder. Sourced, not run:
#
#   HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   # shellcheck source=../lib/netns.sh
#   . "$HERE/../lib/netns.sh"
#
# The caller sets LOG_TAG (the prefix of its log lines) and FAILURE_LOGS (space-separated paths
# under $W, globs allowed, whose last lines a failed run prints), and defines the functions
# this file calls back:
#   ensure_packages       need_cmd/need_exe/need_base for what it uses, then install_needed
#   teardown              stop what it started and delete its namespaces (postfix_abort,
#                         netns_delete); also run first, for the leftovers of a killed run
#   keep_logs DIR         copy from $W into DIR what --keep-logs DIR should keep
#   remove_partial        delete its own half-written files in $OUT
#   on_exit_first         (optional) run first when the script ends, e.g. to stop tcpdump
#
# The functions, in the order a script uses them:
#   capture_script_args "$@"   parse --out DIR (default <repo>/pcaps), --keep-logs DIR,
#                              --install-only and --help (prints the script's header comment);
#                              then insist on root (namespaces, apt)
#   log MESSAGE... / die       a line on stderr with the seconds since start; die exits 1
#   need_base                  what every capture script runs: tcpdump, openssl, python3, ip,
#                              ss, ethtool, Postfix
#   need_cmd CMD PKG / need_exe PATH PKG
#                              add PKG to NEED unless the command or executable is there
#   install_needed             install NEED with apt, retried once after 3 s (mirrors and the
#                              index fail transiently); Postfix is preseeded to "No
#                              configuration" and wireshark-common not to ask, so nothing
#                              waits for an answer. With NO_SERVICE_START=1, packages such as
#                              unbound and nsd do not start services on the host (a
#                              temporary /usr/sbin/policy-rc.d): the scripts run their own
#                              instances inside the namespaces only
#   run_start LOCKFILE TMP_PREFIX
#                              take the lock (one run at a time: the namespace names are
#                              fixed), ensure_packages, stop here for --install-only, set the
#                              exit trap, clear leftovers of a killed run, make $OUT absolute
#                              and create the work folder $W (TMP_PREFIX.XXXXXX)
#   netns_add HOSTS NS...      create namespaces with loopback up and a private resolv.conf
#                              (nameserver 127.0.0.1: no lookup leaves the namespace) and
#                              /etc/hosts (HOSTS, one entry a line), both bind-mounted by
#                              "ip netns exec"
#   no_offload NS DEV          switch checksum offload off, so that captures hold real checksums
#   nsx NS CMD...              run CMD inside namespace NS
#   wait_for SECS WHAT CMD...  poll CMD every 0.1 s; die after SECS
#   poll_for SECS CMD...       poll CMD every 0.1 s; false (not fatal) after SECS
#   stop_pid PID SIG SECS      signal a child of this shell, wait (bounded) for it to end, reap it
#   count_in FILE REGEX        lines matching (0 if there is no file)
#   postfix_services           the master.cf lines every instance shares (all unchrooted)
#   postfix_main_cf INSTDIR    the main.cf lines every instance shares (queue, data and log
#                              under INSTDIR, no aliases, no lookups of peer names)
#   publish TMP DEST...        move finished outputs into place, world-readable, owned like $OUT
#                              (tcpdump writes as user tcpdump)
#   postfix_abort INSTANCE...  stop the Postfix instances under $W that are running
#   netns_delete NS...         end every process in the namespaces, then delete them and their
#                              /etc/netns folders

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
T0=$(date +%s)
OUT="$REPO/pcaps"
KEEP_LOGS=""
INSTALL_ONLY=""
NEED=()
POLICY_RC_MADE=""

log() { printf '[%s %3ss] %s\n' "$LOG_TAG" "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

capture_script_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --out) OUT="$2"; shift 2 ;;
            --out=*) OUT="${1#--out=}"; shift ;;
            --keep-logs) KEEP_LOGS="$2"; shift 2 ;;
            --install-only) INSTALL_ONLY=1; shift ;;
            -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
            *) echo "unknown argument: $1" >&2; exit 2 ;;
        esac
    done
    [ "$(id -u)" = 0 ] || { echo "make.sh: must run as root" >&2; exit 1; }
}

# ---------------------------------------------------------------- install

need_cmd() { command -v "$1" >/dev/null || NEED+=("$2"); }
need_exe() { [ -x "$1" ] || NEED+=("$2"); }

need_base() {
    need_cmd tcpdump tcpdump
    need_cmd openssl openssl
    need_exe /usr/bin/python3 python3
    need_cmd ip iproute2
    need_cmd ss iproute2
    need_cmd ethtool ethtool
    need_exe /usr/sbin/postfix postfix
}

install_needed() {
    local attempt
    [ ${#NEED[@]} -eq 0 ] && return 0
    log "installing: ${NEED[*]}"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    if [ -n "${NO_SERVICE_START:-}" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_MADE=1
    fi
    for attempt in 1 2; do
        if apt-get update -q && apt-get install -y -q --no-install-recommends "${NEED[@]}"; then
            drop_policy_rc
            return 0
        fi
        [ "$attempt" = 2 ] || { log "apt failed once, retrying"; sleep 3; }
    done
    drop_policy_rc
    die "apt-get install ${NEED[*]} failed"
}

drop_policy_rc() {
    if [ -n "$POLICY_RC_MADE" ]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_MADE=""; fi
}

# ---------------------------------------------------------------- start and end

run_start() { # run_start LOCKFILE TMP_PREFIX
    exec 9>"$1"
    flock -w 30 9 || die "another $(basename "$(dirname "$0")")/make.sh is running"
    ensure_packages
    [ -n "$INSTALL_ONLY" ] && exit 0
    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    teardown                                  # leftovers of an earlier, killed run
    rm -rf "$2".* 2>/dev/null || true
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)
    W=$(mktemp -d "$2.XXXXXX")
    chmod 755 "$W"
}

on_exit() {
    local rc=$? pattern f
    set +e
    trap - EXIT INT TERM
    drop_policy_rc
    if declare -F on_exit_first >/dev/null; then on_exit_first; fi
    if [ $rc -ne 0 ] && [ -n "${W:-}" ] && [ -d "$W" ]; then
        log "failed (rc=$rc); last log lines:"
        for pattern in $FAILURE_LOGS; do
            # shellcheck disable=SC2086 # the pattern is a glob
            for f in "$W"/$pattern; do
                [ -f "$f" ] && { echo "== $f" >&2; tail -n 15 "$f" >&2; }
            done
        done
    fi
    if [ -n "$KEEP_LOGS" ] && [ -n "${W:-}" ] && [ -d "$W" ]; then
        mkdir -p "$KEEP_LOGS"
        keep_logs "$KEEP_LOGS"
    fi
    teardown
    [ -n "${W:-}" ] && rm -rf "$W"
    remove_partial
    log "done (rc=$rc) in $(( $(date +%s) - T0 ))s"
    exit $rc
}

# ---------------------------------------------------------------- namespaces

netns_add() { # netns_add HOSTS NS...
    local hosts=$1 ns; shift
    for ns in "$@"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        mkdir -p "/etc/netns/$ns"
        echo "nameserver 127.0.0.1" > "/etc/netns/$ns/resolv.conf"
        printf '%s\n' "$hosts" > "/etc/netns/$ns/hosts"
    done
}

no_offload() { nsx "$1" ethtool -K "$2" tx off rx off >/dev/null 2>&1 || true; }

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

kill_ns_pids() {
    local ns=$1 pids
    ip netns list 2>/dev/null | grep -qw "^$ns" || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086 # one pid a word
    kill $pids 2>/dev/null || true
    for _ in $(seq 1 30); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -z "$pids" ] && return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
}

netns_delete() {
    local ns
    for ns in "$@"; do kill_ns_pids "$ns"; done
    for ns in "$@"; do
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    rmdir /etc/netns 2>/dev/null || true
}

# ---------------------------------------------------------------- helpers

wait_for() {
    local secs=$1 what=$2; shift 2
    local end=$(( $(date +%s%N) / 1000000 + secs * 1000 ))
    while ! "$@" >/dev/null 2>&1; do
        [ $(( $(date +%s%N) / 1000000 )) -lt $end ] || die "timeout after ${secs}s waiting for $what"
        sleep 0.1
    done
}

poll_for() {
    local secs=$1; shift
    local end=$(( $(date +%s%N) / 1000000 + secs * 1000 ))
    until "$@" >/dev/null 2>&1; do
        [ $(( $(date +%s%N) / 1000000 )) -lt $end ] || return 1
        sleep 0.1
    done
}

stop_pid() {
    local pid=$1 sig=$2 secs=$3 state i
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || state=""
        if [ -z "$state" ] || [ "$state" = Z ]; then break; fi
        sleep 0.1
    done
    if [ -n "$state" ] && [ "$state" != Z ]; then
        log "pid $pid did not stop on $sig, killing"
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

count_in() {
    local n
    n=$(grep -cE "$2" "$1" 2>/dev/null) || true
    echo "${n:-0}"
}

publish() { # publish TMP DEST [TMP DEST]...
    local dest
    while [ $# -gt 0 ]; do
        dest=$2
        mv "$1" "$dest"
        chmod 644 "$dest"
        chown --reference="$OUT" "$dest"
        shift 2
    done
}

# ---------------------------------------------------------------- Postfix

postfix_services() {
    cat <<'EOF'
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

postfix_main_cf() { # postfix_main_cf INSTANCE_DIR
    cat <<EOF
compatibility_level = 3.6
queue_directory = $1/queue
data_directory = $1/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $1/maillog
maillog_file_prefixes = $W
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
smtpd_peername_lookup = no
smtputf8_enable = no
EOF
}

postfix_abort() { # postfix_abort INSTANCE...: the instances under $W/INSTANCE that are running
    local inst
    [ -n "${W:-}" ] || return 0
    for inst in "$@"; do
        if [ -f "$W/$inst/etc/main.cf" ] && [ -f "$W/$inst/queue/pid/master.pid" ]; then
            timeout 10 postfix -c "$W/$inst/etc" abort >/dev/null 2>&1 || true
        fi
    done
}
