#!/usr/bin/env bash
# make bench: corral and etcd side by side on this machine, 3 members each on loopback, the
# same workloads against each in alternation; writes BENCHMARKS.md. Loopback only, bounded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCALE="${BENCH_SCALE:-1}"   # multiply request counts (1 = the recorded run)
OUT="${BENCH_OUT:-BENCHMARKS.md}"

echo "== build (release)"
cargo build --release --locked --bin corral
CORRAL="$PWD/target/release/corral"

if ! command -v etcd >/dev/null; then
  echo "== installing etcd-server (Debian)"
  (apt-get update -qq || apt-get update -qq) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
ETCD="$(command -v etcd)"
ETCDCTL="$(command -v etcdctl || true)"

WORK="$(mktemp -d /tmp/corral-bench.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# Ports: corral 421x9/422x9, etcd 431x9/432x9 (x = member).
corral_cluster="c1=http://127.0.0.1:42180,c2=http://127.0.0.1:42280,c3=http://127.0.0.1:42380"
etcd_cluster="e1=http://127.0.0.1:43180,e2=http://127.0.0.1:43280,e3=http://127.0.0.1:43380"
declare -A PID

start_corral() {
  local i=$1
  "$CORRAL" serve --name "c$i" --data-dir "$WORK/c$i" \
    --listen-client-urls "http://127.0.0.1:421${i}9" --advertise-client-urls "http://127.0.0.1:421${i}9" \
    --listen-peer-urls "http://127.0.0.1:42${i}80" --initial-advertise-peer-urls "http://127.0.0.1:42${i}80" \
    --listen-metrics-urls "" --initial-cluster "$corral_cluster" 2>"$WORK/c$i.log" &
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

C_EPS="127.0.0.1:42119,127.0.0.1:42129,127.0.0.1:42139"
E_EPS="127.0.0.1:43119,127.0.0.1:43129,127.0.0.1:43139"
for i in 1 2 3; do start_corral $i; start_etcd $i; done
wait_ready ${C_EPS//,/ }
wait_ready ${E_EPS//,/ }

RESULTS="$WORK/results.jsonl"
run() { # name target args...
  local name=$1 target=$2; shift 2
  local eps; [ "$target" = corral ] && eps=$C_EPS || eps=$E_EPS
  local line
  line=$("$CORRAL" bench --json --endpoints "$eps" "$@")
  echo "{\"case\":\"$name\",\"target\":\"$target\",\"report\":$line}" >> "$RESULTS"
  echo "$name $target: $line"
}
n() { echo $(( $1 * SCALE )); }

echo "== workloads"
for t in corral etcd; do run "put, 64 clients / 8 conns" $t --workload put --clients 64 --conns 8 --total "$(n 40000)"; done
for t in etcd corral; do run "put, 1 client" $t --workload put --clients 1 --conns 1 --total "$(n 2000)"; done
for t in corral etcd; do run "range (linearizable), 64 clients" $t --workload range --clients 64 --conns 8 --total "$(n 40000)"; done
for t in etcd corral; do run "range (serializable), 64 clients" $t --workload range-serializable --clients 64 --conns 8 --total "$(n 40000)"; done
for t in corral etcd; do run "txn, 64 clients" $t --workload txn --clients 64 --conns 8 --total "$(n 20000)"; done
for t in etcd corral; do run "watch latency, 8 clients" $t --workload watch-latency --clients 8 --conns 8 --total "$(n 4000)"; done
for t in corral etcd; do run "lease keep-alive, 16 clients" $t --workload lease-keepalive --clients 16 --conns 4 --total "$(n 20000)"; done
run "znode create, 64 clients" corral --workload znode-create --clients 64 --conns 8 --total "$(n 20000)"
run "znode get, 64 clients" corral --workload znode-get --clients 64 --conns 8 --total "$(n 40000)"
run "znode set, 64 clients" corral --workload znode-set --clients 64 --conns 8 --total "$(n 20000)"
run "znode children, 64 clients" corral --workload znode-children --clients 64 --conns 8 --total "$(n 20000)"

echo "== peak RSS"
declare -A RSS
for m in c1 c2 c3 e1 e2 e3; do
  RSS[$m]=$(awk '/VmHWM/ {print $2}' "/proc/${PID[$m]}/status" 2>/dev/null || echo 0)
done

echo "== restart time with the log of the run"
restart() { # member start-fn index endpoint
  local m=$1 fn=$2 i=$3 ep=$4
  kill -TERM "${PID[$m]}"; wait "${PID[$m]}" 2>/dev/null || true
  local t0; t0=$(date +%s.%N)
  $fn "$i"
  wait_ready "$ep"
  echo "$(date +%s.%N) - $t0" | bc
}
R_CORRAL=$(restart c2 start_corral 2 127.0.0.1:42129)
R_ETCD=$(restart e2 start_etcd 2 127.0.0.1:43129)
C_SIZE=$(du -sh "$WORK/c2" | cut -f1); E_SIZE=$(du -sh "$WORK/e2" | cut -f1)

python3 - "$RESULTS" "$OUT" <<PY
import json, sys, subprocess, platform, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["case"], {})[r["target"]] = r["report"]
def cell(rep):
    return f'{rep["throughput"]:.0f}/s, p50 {rep["p50_ms"]:.2f} ms, p99 {rep["p99_ms"]:.2f} ms, p99.9 {rep["p999_ms"]:.2f} ms, max {rep["max_ms"]:.1f} ms, err {rep["errors"]}'
out = []
out.append("# Benchmarks\n")
out.append(f"Recorded by \`make bench\` ({datetime.date.today()}); scale {${SCALE}}. Same machine, same run, "
           "3 members each on loopback, load generator \`corral bench\` (etcd v3 API) on the same cores, "
           "8-byte keys, 256-byte values.\n")
cpu = subprocess.run(["sh","-c","grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
etcdv = subprocess.run(["$ETCD","--version"], capture_output=True, text=True).stdout.splitlines()[0]
corralv = subprocess.run(["$CORRAL","--version"], capture_output=True, text=True).stdout.strip()
out.append(f"- machine: {platform.machine()}, {cpu}, $(nproc) cores, {round(int(open('/proc/meminfo').readline().split()[1])/1048576)} GiB")
out.append(f"- {corralv} (release build); {etcdv} (Debian etcd-server)\n")
out.append("| workload | corral | etcd | throughput ratio | p99 ratio |")
out.append("|---|---|---|---|---|")
for case, t in by.items():
    c, e = t.get("corral"), t.get("etcd")
    ratio = f'{c["throughput"]/e["throughput"]:.2f}x' if c and e and e["throughput"] else "-"
    p99 = f'{c["p99_ms"]/e["p99_ms"]:.2f}' if c and e and e["p99_ms"] else "-"
    out.append(f"| {case} | {cell(c) if c else '-'} | {cell(e) if e else '-'} | {ratio} | {p99} |")
out.append("")
out.append("Peak RSS per member after the run (VmHWM): corral ${RSS[c1]} / ${RSS[c2]} / ${RSS[c3]} KiB; "
           "etcd ${RSS[e1]} / ${RSS[e2]} / ${RSS[e3]} KiB.\n")
out.append(f"Restart of one member (SIGTERM, start, first successful read) with the run's data: corral {float('${R_CORRAL}'):.2f} s (data dir ${C_SIZE}); etcd {float('${R_ETCD}'):.2f} s (data dir ${E_SIZE}).\n")
out.append("Commands: \`make bench\` runs \`scripts/bench.sh\`; each row is "
           "\`corral bench --json --endpoints <3 members> --workload W --clients C --conns K --total N\`.")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
echo "== wrote $OUT"
