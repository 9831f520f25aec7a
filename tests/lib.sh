# tests/lib.sh - shared helpers for the shell tests (sourced, not run).
#
# Every shell test prints TAP lines ("ok N - what", "not ok N - what") and
# tests/run.sh adds them up.  Under CI=true a missing peer is a failure, not a
# skip: a green CI must have run the real peers.

TAP_N=0
ok()     { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $*"; }
not_ok() { TAP_N=$((TAP_N + 1)); echo "not ok $TAP_N - $*"; }
# check "description" command...: ok if the command succeeds
check()  { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
skip()   { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $* # SKIP"; }

# need_cmd CMD "what for": returns 1 (after printing a skip, or a failure under
# CI=true) when CMD is not installed.
need_cmd() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "${CI:-}" = true ]; then not_ok "$2: $1 not installed (CI=true: a missing peer is a failure)"
    else skip "$2: $1 not installed"; fi
    return 1
}

# Where the binary under test is (run from the top of the tree).
VX=${VX:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/vhost-xdp}
TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# wait_for "what" SECONDS command...: poll every 0.1 s until the command succeeds.
wait_for() {
    local what=$1 secs=$2; shift 2
    local i
    for ((i = 0; i < secs * 10; i++)); do "$@" && return 0; sleep 0.1; done
    echo "# timed out after ${secs}s waiting for $what" >&2
    return 1
}

# stop_pid PID: SIGTERM what we started, SIGKILL if it lingers; never by name.
stop_pid() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    return 0
}
