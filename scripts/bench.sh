#!/usr/bin/env bash
# make bench: corral and etcd side by side on this machine, 3 members each on loopback, the
# same workloads against each in alternation; writes the measured part of BENCHMARKS.md.
# Loopback only, bounded (about 6 minutes after the build on 2 cores).
#
# BENCHMARKS.md is regenerated down to the line `<!-- hand-written -->`; everything from that
# line on (the analysis) is kept as it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCALE="${BENCH_SCALE:-1}"   # multiply request counts (1 = the recorded run)
OUT="${BENCH_OUT:-BENCHMARKS.md}"
MARKER='<!-- hand-written -->'

echo "== build (release)"
cargo build --release --locked --bin corral
CORRAL="$PWD/target/release/corral"

if ! command -v etcd >/dev/null; then
  echo "== installing etcd-server (Debian)"
  (apt-get update -qq || apt-get update -qq) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
ETCD="$(command -v etcd)"

WORK="$(mktemp -d /tmp/corral-bench.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# Ports: corral 421x9/42x80, etcd 431x9/43x80 (x = member).
corral_cluster="c1=http://127.0.0.1:42180,c2=http://127.0.0.1:42280,c3=http://127.0.0.1:42380"
etcd_cluster="e1=http://127.0.0.1:43180,e2=http://127.0.0.1:43280,e3=http://127.0.0.1:43380"
declare -A PID

start_corral() {
  local i=$1
  "$CORRAL" serve --name "c$i" --data-dir "$WORK/c$i" \
    --listen-client-urls "http://127.0.0.1:421${i}9" --advertise-client-urls "http://127.0.0.1:421${i}9" \
    --listen-peer-urls "http://127.0.0.1:42${i}80" --initial-advertise-peer-urls "http://127.0.0.1:42${i}80" \
    --listen-metrics-urls "" --initial-cluster "$corral_cluster" >"$WORK/c$i.log" 2>&1 &
  PID[c$i]=$!; PIDS+=($!)
}
start_etcd() {
  local i=$1
  "$ETCD" --name "e$i" --data-dir "$WORK/e$i" \
    --listen-client-urls "http://127.0.0.1:431${i}9" --advertise-client-urls "http://127.0.0.1:431${i}9" \
    --listen-peer-urls "http://127.0.0.1:43${i}80" --initial-advertise-peer-urls "http://127.0.0.1:43${i}80" \
    --initial-cluster "$etcd_cluster" --initial-cluster-state new --initial-cluster-token bench \
    --logger zap --log-level error >"$WORK/e$i.log" 2>&1 &
  PID[e$i]=$!; PIDS+=($!)
}
wait_ready() { # endpoints...
  local deadline=$((SECONDS + 60))
  for ep in "$@"; do
    until "$CORRAL" bench --workload range-serializable --endpoints "$ep" --total 1 --json >/dev/null 2>&1; do
      [ $SECONDS -lt $deadline ] || { echo "$ep not ready"; exit 1; }
      sleep 0.2
    done
  done
}
# The leader's and one follower's client endpoint (Maintenance.Status, which etcd serves too).
roles() { # endpoints(comma-separated) -> "leader follower"
  local st
  st=$("$CORRAL" endpoint status --endpoints "$1" 2>/dev/null)
  echo "$(echo "$st" | awk -F', ' '$5=="true"{print $1; exit}') $(echo "$st" | awk -F', ' '$5=="false"{print $1; exit}')"
}

C_EPS="127.0.0.1:42119,127.0.0.1:42129,127.0.0.1:42139"
E_EPS="127.0.0.1:43119,127.0.0.1:43129,127.0.0.1:43139"
for i in 1 2 3; do start_corral $i; start_etcd $i; done
wait_ready ${C_EPS//,/ }
wait_ready ${E_EPS//,/ }
read -r C_LEADER C_FOLLOWER <<<"$(roles "$C_EPS")"
read -r E_LEADER E_FOLLOWER <<<"$(roles "$E_EPS")"
[ -n "$C_LEADER" ] && [ -n "$C_FOLLOWER" ] && [ -n "$E_LEADER" ] && [ -n "$E_FOLLOWER" ] \
  || { echo "could not tell leaders from followers"; exit 1; }

RESULTS="$WORK/results.jsonl"
COMMANDS="$WORK/commands.txt"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
run() { # name round target endpoints args...
  local name=$1 round=$2 target=$3 eps=$4; shift 4
  local line
  line=$("$CORRAL" bench --json --endpoints "$eps" "$@")
  echo "{\"case\":\"$name\",\"round\":$round,\"target\":\"$target\",\"report\":$line}" >> "$RESULTS"
  echo "corral bench --json --endpoints <$target${ROLE:+ $ROLE}: $eps> $*" >> "$COMMANDS"
  echo "$name [$round] $target: $line"
}
both() { # name round first-target args... (first-target runs first; the other right after)
  local name=$1 round=$2 first=$3; shift 3
  local t
  for t in $first $([ "$first" = corral ] && echo etcd || echo corral); do
    if [ "$t" = corral ]; then run "$name" "$round" corral "$C_EPS" "$@"; else run "$name" "$round" etcd "$E_EPS" "$@"; fi
  done
}
one_client() { # name round first-target which(leader|follower)
  local name=$1 round=$2 first=$3 which=$4 t ep
  for t in $first $([ "$first" = corral ] && echo etcd || echo corral); do
    if [ "$t" = corral ]; then [ "$which" = leader ] && ep=$C_LEADER || ep=$C_FOLLOWER
    else [ "$which" = leader ] && ep=$E_LEADER || ep=$E_FOLLOWER; fi
    ROLE=$which run "$name" "$round" "$t" "$ep" --workload put --clients 1 --conns 1 --total "$(n 1500)"
  done
}
n() { echo $(( $1 * SCALE )); }

echo "== workloads"
# The headline workloads run twice, each round starting with the other system, so both see
# the same minutes of a machine that others may be using.
for round in 1 2; do
  [ $round = 1 ] && a=corral b=etcd || a=etcd b=corral
  both "put, 64 clients / 8 conns" $round $a --workload put --clients 64 --conns 8 --total "$(n 30000)"
  one_client "put, 1 client, at the leader" $round $b leader
  one_client "put, 1 client, at a follower" $round $a follower
  both "range (linearizable), 64 clients / 8 conns" $round $b --workload range --clients 64 --conns 8 --total "$(n 30000)"
  both "watch latency (put ack to event), 8 clients" $round $a --workload watch-latency --clients 8 --conns 8 --total "$(n 3000)"
done
both "range (serializable), 64 clients / 8 conns" 1 etcd --workload range-serializable --clients 64 --conns 8 --total "$(n 40000)"
both "txn, 64 clients / 8 conns" 1 corral --workload txn --clients 64 --conns 8 --total "$(n 20000)"
both "lease keep-alive, 16 clients / 4 conns" 1 etcd --workload lease-keepalive --clients 16 --conns 4 --total "$(n 20000)"
run "znode create, 64 clients" 1 corral "$C_EPS" --workload znode-create --clients 64 --conns 8 --total "$(n 20000)"
run "znode get, 64 clients" 1 corral "$C_EPS" --workload znode-get --clients 64 --conns 8 --total "$(n 40000)"
run "znode set, 64 clients" 1 corral "$C_EPS" --workload znode-set --clients 64 --conns 8 --total "$(n 20000)"
run "znode children, 64 clients" 1 corral "$C_EPS" --workload znode-children --clients 64 --conns 8 --total "$(n 20000)"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "== peak RSS"
declare -A RSS
for m in c1 c2 c3 e1 e2 e3; do
  RSS[$m]=$(awk '/VmHWM/ {print $2}' "/proc/${PID[$m]}/status" 2>/dev/null || echo 0)
done

echo "== restart time with the log of the run"
# Not in a command substitution: the restarted member would inherit (and hold open) its pipe.
RESTART_SECONDS=
restart() { # member start-fn index endpoint
  local m=$1 fn=$2 i=$3 ep=$4
  kill -TERM "${PID[$m]}"; wait "${PID[$m]}" 2>/dev/null || true
  local t0; t0=$(date +%s.%N)
  $fn "$i"
  wait_ready "$ep"
  RESTART_SECONDS=$(echo "$(date +%s.%N) - $t0" | bc)
}
restart c2 start_corral 2 127.0.0.1:42129; R_CORRAL=$RESTART_SECONDS
restart e2 start_etcd 2 127.0.0.1:43129; R_ETCD=$RESTART_SECONDS
C_SIZE=$(du -sh "$WORK/c2" | cut -f1); E_SIZE=$(du -sh "$WORK/e2" | cut -f1)

export ETCD CORRAL SCALE LOAD_BEFORE LOAD_AFTER R_CORRAL R_ETCD C_SIZE E_SIZE MARKER
export RSS_C="${RSS[c1]} ${RSS[c2]} ${RSS[c3]}" RSS_E="${RSS[e1]} ${RSS[e2]} ${RSS[e3]}"
python3 - "$RESULTS" "$OUT" "$COMMANDS" <<'PY'
import datetime, json, os, platform, statistics, subprocess, sys

results, out_path, commands_path = sys.argv[1:4]
env = os.environ
rows = [json.loads(l) for l in open(results)]
cases = {}
for r in rows:
    cases.setdefault(r["case"], {}).setdefault(r["target"], []).append(r["report"])

def med(reports, key):
    return statistics.median(r[key] for r in reports)

def cell(reports):
    if not reports:
        return "–"
    parts = []
    for r in reports:
        parts.append(f'{r["throughput"]:.0f}/s; p50 {r["p50_ms"]:.2f}, p99 {r["p99_ms"]:.2f}, '
                     f'p99.9 {r["p999_ms"]:.2f}, max {r["max_ms"]:.1f} ms; {r["errors"]} err')
    return "<br>".join(parts)

def ratio(c, e, key):
    if not c or not e or not med(e, key):
        return "–"
    return f'{med(c, key) / med(e, key):.2f}'

out = ["# Benchmarks", ""]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
etcdv = subprocess.run([env["ETCD"], "--version"], capture_output=True, text=True).stdout.splitlines()[0]
corralv = subprocess.run([env["CORRAL"], "--version"], capture_output=True, text=True).stdout.strip()
mem = round(int(open("/proc/meminfo").readline().split()[1]) / 1048576)
out.append(f"Recorded by `make bench` (`scripts/bench.sh`) on {datetime.date.today()}, scale {env['SCALE']}: "
           "3 corral members and 3 etcd members on loopback, the same workloads against each in "
           "alternation (the headline ones twice, each round starting with the other system), load "
           "generator `corral bench` (etcd v3 API) on the same cores; 8-byte keys, 256-byte values.")
out.append("")
out.append(f"- machine: {platform.machine()}, {cpu}, {os.cpu_count()} cores, {mem} GiB; "
           f"load average before / after the run: {env['LOAD_BEFORE']} / {env['LOAD_AFTER']} "
           "(the machine is shared with other engineers' builds and tests: figures are noisy, "
           "compare corral and etcd within a round)")
out.append(f"- {corralv} (release build); {etcdv} (Debian etcd-server)")
out.append("")
out.append("| workload | corral | etcd | throughput corral/etcd (median) | p50 corral/etcd | p99 corral/etcd |")
out.append("|---|---|---|---|---|---|")
for case, t in cases.items():
    c, e = t.get("corral", []), t.get("etcd", [])
    out.append(f"| {case} | {cell(c)} | {cell(e)} | {ratio(c, e, 'throughput')} | "
               f"{ratio(c, e, 'p50_ms')} | {ratio(c, e, 'p99_ms')} |")
out.append("")
out.append("Watch latency is from the put's acknowledgement to the event's arrival on the same "
           "connection (0 when the event arrives first); its throughput column is the put rate.")
out.append("")
rss_c = [int(x) / 1024 for x in env["RSS_C"].split()]
rss_e = [int(x) / 1024 for x in env["RSS_E"].split()]
out.append("Peak RSS per member after the run (VmHWM): corral "
           + " / ".join(f"{x:.0f}" for x in rss_c) + " MB; etcd "
           + " / ".join(f"{x:.0f}" for x in rss_e) + " MB.")
out.append("")
out.append(f"Restart of one member with the run's data (SIGTERM, start, first successful read): "
           f"corral {float(env['R_CORRAL']):.2f} s (data dir {env['C_SIZE']}); "
           f"etcd {float(env['R_ETCD']):.2f} s (data dir {env['E_SIZE']}).")
out.append("")

def get(case, target):
    return cases.get(case, {}).get(target, [])

def target(name, case, key, want, better_high):
    c, e = get(case, "corral"), get(case, "etcd")
    if not c or not e:
        return f"| {name} | not measured |"
    r = med(c, key) / med(e, key)
    met = r >= want if better_high else r <= want
    unit = "ms" if key.endswith("_ms") else "/s"
    return (f"| {name} | {'**met**' if met else '**not met**'}: corral {med(c, key):.2f} {unit}, "
            f"etcd {med(e, key):.2f} {unit} (ratio {r:.2f}, medians of the rounds) |")

out.append("## Against the targets (issue 6)")
out.append("")
out.append("| target | result |")
out.append("|---|---|")
out.append(target("put throughput, 64 clients / 8 conns: ≥ 2× etcd", "put, 64 clients / 8 conns", "throughput", 2.0, True))
out.append(target("put p99 at that load: ≤ etcd", "put, 64 clients / 8 conns", "p99_ms", 1.0, False))
out.append(target("put p50, 1 client (at the leader): ≤ etcd", "put, 1 client, at the leader", "p50_ms", 1.0, False))
out.append(target("put p50, 1 client (at a follower): ≤ etcd", "put, 1 client, at a follower", "p50_ms", 1.0, False))
out.append(target("linearizable range throughput, 64 clients: ≥ 1.5× etcd", "range (linearizable), 64 clients / 8 conns", "throughput", 1.5, True))
out.append(target("watch event latency p99: ≤ etcd", "watch latency (put ack to event), 8 clients", "p99_ms", 1.0, False))
worst_c, worst_e = max(rss_c), max(rss_e)
out.append(f"| peak RSS per member: ≤ etcd | {'**met**' if worst_c <= worst_e else '**not met**'}: "
           f"corral at most {worst_c:.0f} MB, etcd at most {worst_e:.0f} MB |")
out.append("")
out.append("## Commands")
out.append("")
out.append("`make bench` runs `scripts/bench.sh`, which ran, in this order:")
out.append("")
out.append("```")
out.extend(l.rstrip("\n") for l in open(commands_path))
out.append("```")
out.append("")

# Keep the hand-written part.
kept = [env["MARKER"], "", "(Analysis: add it below this line; `make bench` keeps it.)", ""]
if os.path.exists(out_path):
    text = open(out_path).read()
    at = text.find(env["MARKER"])
    if at >= 0:
        kept = [text[at:].rstrip("\n"), ""]
open(out_path, "w").write("\n".join(out + kept))
PY
echo "== wrote $OUT"
