#!/usr/bin/env bash
# keel and etcd side by side on this machine: the standard suite of `bench`
# against each in turn, then RESULTS.md with one table per workload (keel,
# etcd, the ratio) and a latency plot per workload.
#
#   bench/compare.sh              full run (about 6 minutes on 2 cores),
#                                 writes bench/RESULTS.md and bench/plots/
#   bench/compare.sh --smoke      a second or so per workload, into a
#                                 temporary directory (what CI runs)
#   bench/compare.sh --out DIR    write RESULTS.md, plots/ and runs/ to DIR
#
# Both servers listen on 127.0.0.1 only and both sync to disk before they
# acknowledge a write: etcd always fsyncs its WAL, keel always syncs its
# WAL batch. Installs etcd (Debian's etcd-server) when it is missing.
# Settings from the environment: KEEL_BIN and BENCH_BIN (binaries to use
# instead of building them), KEEL_BENCH_DIR (where the data directories go,
# default the output directory), COMPARE_PORT_BASE (default 24300: keel on
# +79 and its cores from +90, etcd on +179 and +180).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
mode=full
out="$root/bench"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) mode=smoke; out="" ;;
    --out) out="$2"; shift ;;
    *) echo "usage: $0 [--smoke] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$out" ]; then out="$(mktemp -d -t keel-compare.XXXXXX)"; fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if ! command -v etcd >/dev/null; then
  echo "== installing etcd (Debian's etcd-server)"
  if [ "$(id -u)" != 0 ]; then echo "etcd is missing and this is not root: apt-get install etcd-server" >&2; exit 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null; }
fi

if [ -z "${KEEL_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
  echo "== building keel and bench (release)"
  (cd "$root" && cargo build --release -q -p keel-net --bin keel -p keel-load --bin bench)
  KEEL_BIN="${KEEL_BIN:-$root/target/release/keel}"
  BENCH_BIN="${BENCH_BIN:-$root/target/release/bench}"
fi
# The suite runs from the output directory.
KEEL_BIN="$(realpath "$KEEL_BIN")"
BENCH_BIN="$(realpath "$BENCH_BIN")"

# Named before this script writes its outputs, which may be in the tree.
keel_commit="$(cd "$root" && git describe --always --dirty 2>/dev/null || echo unknown)"

base="${COMPARE_PORT_BASE:-24300}"
keel_port=$((base + 79)); keel_cores=$((base + 90))
etcd_port=$((base + 179)); etcd_peer=$((base + 180))
data="${KEEL_BENCH_DIR:-$out}/compare-data"
rm -rf "$data" "$out/runs" "$out/plots"
mkdir -p "$data" "$out/runs" "$out/plots"

pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    # A server that has not stopped 10 s after SIGTERM is killed.
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$data"
}
trap stop_servers EXIT

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in "$keel_port" "$keel_cores" $((keel_cores + 1)) "$etcd_port" "$etcd_peer"; do
  if port_taken "$port"; then
    echo "127.0.0.1:$port is already taken (a server left from another run?); set COMPARE_PORT_BASE" >&2
    exit 1
  fi
done

# Waits until server `pid` listens on `port`; fails if it exits first.
wait_for_port() {
  local port=$1 pid=$2 log=$3
  for _ in $(seq 1 200); do
    if ! kill -0 "$pid" 2>/dev/null; then echo "the server stopped; see $log" >&2; exit 1; fi
    if port_taken "$port"; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on 127.0.0.1:$port after 10 s; see $log" >&2
  exit 1
}

echo "== starting keel on 127.0.0.1:$keel_port and etcd on 127.0.0.1:$etcd_port"
"$KEEL_BIN" --data-dir "$data/keel" --listen-client "127.0.0.1:$keel_port" \
  --core-port-base "$keel_cores" >"$out/runs/keel.log" 2>&1 &
keel_pid=$!
pids+=("$keel_pid")
etcd --name compare --data-dir "$data/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "compare=http://127.0.0.1:$etcd_peer" --quota-backend-bytes $((8 << 30)) \
  >"$out/runs/etcd.log" 2>&1 &
etcd_pid=$!
pids+=("$etcd_pid")
wait_for_port "$keel_port" "$keel_pid" "$out/runs/keel.log"
wait_for_port "$etcd_port" "$etcd_pid" "$out/runs/etcd.log"

# The standard suite: file name | bench options.
if [ "$mode" = smoke ]; then
  timing=(--duration 1s --warmup 200ms); keys=1000; measured="1 s after a 0.2 s warm-up"
  watchers=20; leases=200; ttl=2s
else
  timing=(--duration 10s --warmup 2s); keys=10000; measured="10 s after a 2 s warm-up"
  watchers=1000; leases=10000; ttl=10s
fi
suite=(
  "01-reads-2000|--reads 2000/s"
  "02-writes-2000|--writes 2000/s"
  "03-max-writes-1|--max writes --concurrency 1"
  "04-max-writes-64|--max writes --concurrency 64"
  "05-max-writes-512|--max writes --concurrency 512"
  "06-max-reads-64|--max reads --concurrency 64"
  "07-max-reads-512|--max reads --concurrency 512"
  "08-max-serializable-reads-64|--max reads --serializable --concurrency 64"
  "09-max-serializable-reads-512|--max reads --serializable --concurrency 512"
  "10-mix-90-10|--max mix --read-percent 90 --concurrency 64"
  "11-watch-fan-out|--workload watch --watchers $watchers --writes 100/s"
  "12-lease-churn|--workload lease --leases $leases --lease-ttl $ttl"
  "13-range-1000|--max ranges --range-size 1000 --concurrency 16"
)

started=$(date +%s)
cd "$out"
for entry in "${suite[@]}"; do
  file="${entry%%|*}"
  read -r -a options <<<"${entry#*|}"
  case "$file" in
    *range-1000) extra=("${timing[@]}" --keys 1000) ;;
    *lease-churn) extra=() ;;
    *) extra=("${timing[@]}" --keys "$keys") ;;
  esac
  for system in keel etcd; do
    if [ "$system" = keel ]; then port=$keel_port; else port=$etcd_port; fi
    echo "== $file: $system"
    "$BENCH_BIN" --target "$system://127.0.0.1:$port" "${options[@]}" "${extra[@]}" \
      --json --plot "plots/$file.svg" >"runs/$file.$system.json"
  done
done
elapsed=$(( $(date +%s) - started ))

{
  echo "# keel beside etcd"
  echo
  echo "Written by \`bench/compare.sh$( [ "$mode" = smoke ] && echo " --smoke")\` on $(date -u +%Y-%m-%d) in ${elapsed} s."
  echo "Every figure below comes from that one run: both servers were up on the same machine,"
  echo "and the suite ran against keel, then etcd, workload by workload."
  echo
  echo "## The machine"
  echo
  echo "- $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) of memory, Linux $(uname -r)"
  echo "- data on $(df -T "$data" | awk 'NR==2 {print $2}') ($(df -h "$data" | awk 'NR==2 {print $1}'))"
  echo "- keel $keel_commit: $("$KEEL_BIN" --version 2>/dev/null), default settings (a shard per core, every write synced before it is answered)"
  echo "- etcd $(etcd --version 2>/dev/null | head -1 | awk '{print $3}'), single member, default settings (its WAL fsynced before every answer) but an 8 GiB quota"
  echo "- the load generator: \`bench\` (bench/load), on the same $(nproc) CPUs, 8 connections; kv runs $measured,"
  echo "  over $keys keys (1,000 for the ranges) of 16 bytes with 256-byte values, uniform; the lease run has no warm-up"
  echo
  echo "Latencies are timed from each request's due time (open loop), its send time (closed loop),"
  echo "the put's answer (watch events; an event that beats the answer counts as 0) or the lease's deadline (expiry)."
  echo "\"keel vs etcd\" says how keel's rate and latencies compare with etcd's in the same workload."
  echo
  echo "## Results"
  echo
  ordered=()
  for entry in "${suite[@]}"; do ordered+=("runs/${entry%%|*}.keel.json" "runs/${entry%%|*}.etcd.json"); done
  "$BENCH_BIN" report "${ordered[@]}"
} >RESULTS.md.new
# Replaced whole, so a failed run leaves the last results as they were.
mv RESULTS.md.new RESULTS.md

echo "== wrote $out/RESULTS.md"
