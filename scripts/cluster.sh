#!/usr/bin/env bash
# A local 3-member cluster of `corral serve` processes on 127.0.0.1, for trying corral out.
#
#   scripts/cluster.sh start    start the members (or report the ones already running), wait
#                               until every one answers a linearizable read, print endpoints
#   scripts/cluster.sh stop     SIGTERM the members, wait for them to exit; data is kept
#   scripts/cluster.sh status   which members run, and their endpoints
#
# Member i (1..3) listens on 127.0.0.1: clients i2379, peers i2380, ops HTTP i2381 (so n1 has
# 12379/12380/12381). Everything lives under $CLUSTER_DIR (default ./corral.cluster):
# n<i>.data/ (data dir), n<i>.log (stderr), n<i>.pid. A stopped cluster restarts from its
# data; `rm -rf corral.cluster` after `stop` starts over. CORRAL_BIN picks the binary
# (default target/debug/corral, which `make cluster` builds first). CLUSTER_PORTS, nine port
# numbers (client, peer, ops of n1, then n2, then n3), replaces the fixed ports (tests use it).
# The members ignore CORRAL_* variables of the calling shell: the flags below say it all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER_DIR="${CLUSTER_DIR:-corral.cluster}"
CORRAL_BIN="${CORRAL_BIN:-target/debug/corral}"
MEMBERS=(1 2 3)
# Generous: a debug build on a loaded 2-core machine elects a leader in a few seconds.
START_DEADLINE_S=60
STOP_DEADLINE_S=20

if [ -n "${CLUSTER_PORTS:-}" ]; then
    read -r -a PORTS <<<"$CLUSTER_PORTS"
    if [ "${#PORTS[@]}" -ne 9 ]; then
        echo "cluster.sh: CLUSTER_PORTS needs nine ports (client, peer, ops of n1, n2, n3)" >&2
        exit 2
    fi
else
    PORTS=(12379 12380 12381 22379 22380 22381 32379 32380 32381)
fi
# Port of member $1 (1..3), kind $2 (0 client, 1 peer, 2 ops).
port() { echo "${PORTS[$((3 * ($1 - 1) + $2))]}"; }
client_url() { echo "http://127.0.0.1:$(port "$1" 0)"; }
peer_url() { echo "http://127.0.0.1:$(port "$1" 1)"; }
ops_url() { echo "http://127.0.0.1:$(port "$1" 2)"; }
endpoints() {
    local out=() i
    for i in "${MEMBERS[@]}"; do out+=("127.0.0.1:$(port "$i" 0)"); done
    (IFS=,; echo "${out[*]}")
}
initial_cluster() {
    local out=() i
    for i in "${MEMBERS[@]}"; do out+=("n$i=$(peer_url "$i")"); done
    (IFS=,; echo "${out[*]}")
}

# The pid in n<i>.pid if that process is still the member we started (a reused pid is not).
running_pid() {
    local pidfile="$CLUSTER_DIR/n$1.pid" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")" || return 1
    grep -q -- "--name n$1 " <<<"$cmdline" || return 1
    echo "$pid"
}

print_endpoints() {
    local i
    echo "corral cluster ($CLUSTER_DIR):"
    for i in "${MEMBERS[@]}"; do
        local state=stopped pid
        if pid="$(running_pid "$i")"; then state="pid $pid"; fi
        printf '  n%s  client %s  peer %s  ops %s  (%s)\n' \
            "$i" "$(client_url "$i")" "$(peer_url "$i")" "$(ops_url "$i")" "$state"
    done
    echo "  clients:  --endpoints $(endpoints)"
    echo "  e.g.      $CORRAL_BIN --endpoints $(endpoints) kv put greeting hello"
    echo "            etcdctl --endpoints $(endpoints) endpoint status -w table"
}

start() {
    [ -x "$CORRAL_BIN" ] || { echo "cluster.sh: $CORRAL_BIN not found (run make build)" >&2; exit 1; }
    mkdir -p "$CLUSTER_DIR"
    local i started=() unset_env=() var
    # A CORRAL_INITIAL_CLUSTER_STATE=existing or CORRAL_AUTO_LEARNER left in the user's shell
    # would change what the members do; the flags below are the whole configuration.
    for var in $(compgen -e); do
        case "$var" in CORRAL_*) unset_env+=(-u "$var") ;; esac
    done
    for i in "${MEMBERS[@]}"; do
        if running_pid "$i" >/dev/null; then continue; fi
        # setsid: the members outlive this script and the terminal's Ctrl-C. NO_COLOR: the
        # logs are files, to be read with less or grep.
        env "${unset_env[@]}" NO_COLOR=1 setsid "$CORRAL_BIN" serve --name "n$i" \
            --data-dir "$CLUSTER_DIR/n$i.data" \
            --listen-client-urls "$(client_url "$i")" --advertise-client-urls "$(client_url "$i")" \
            --listen-peer-urls "$(peer_url "$i")" --initial-advertise-peer-urls "$(peer_url "$i")" \
            --listen-metrics-urls "$(ops_url "$i")" \
            --initial-cluster "$(initial_cluster)" \
            </dev/null >>"$CLUSTER_DIR/n$i.log" 2>&1 &
        echo $! >"$CLUSTER_DIR/n$i.pid"
        started+=("$i")
    done
    if [ "${#started[@]}" -gt 0 ]; then
        echo "started$(printf ' n%s' "${started[@]}"); waiting for every member to serve reads"
    fi
    local deadline=$((SECONDS + START_DEADLINE_S))
    for i in "${MEMBERS[@]}"; do
        until "$CORRAL_BIN" --endpoints "127.0.0.1:$(port "$i" 0)" --command-timeout 2s \
            endpoint health >/dev/null 2>&1; do
            # kill -0, not running_pid: a member just forked may not have exec'd corral yet.
            if ! kill -0 "$(cat "$CLUSTER_DIR/n$i.pid")" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
                echo "cluster.sh: member n$i is not serving; the end of $CLUSTER_DIR/n$i.log:" >&2
                tail -n 20 "$CLUSTER_DIR/n$i.log" >&2 || true
                # Half a cluster helps nobody: stop what this call started (data is kept).
                local j pid
                for j in "${started[@]}"; do
                    if pid="$(running_pid "$j")"; then kill -TERM "$pid" 2>/dev/null || true; fi
                    rm -f "$CLUSTER_DIR/n$j.pid"
                done
                exit 1
            fi
            sleep 0.2
        done
    done
    print_endpoints
    echo "stop with: make cluster-stop"
}

stop() {
    local i pid pids=()
    for i in "${MEMBERS[@]}"; do
        if pid="$(running_pid "$i")"; then
            kill -TERM "$pid"
            pids+=("$pid")
        fi
        rm -f "$CLUSTER_DIR/n$i.pid"
    done
    local deadline=$((SECONDS + STOP_DEADLINE_S))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "cluster.sh: pid $pid did not stop on SIGTERM within ${STOP_DEADLINE_S}s; killing it" >&2
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    done
    echo "stopped ${#pids[@]} member(s); data kept in $CLUSTER_DIR (rm -rf $CLUSTER_DIR to start over)"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) print_endpoints ;;
*) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
