#!/usr/bin/env bash
# A three-member keel beside a three-member etcd, all six servers on this
# machine: durable writes at concurrency 512 and linearizable reads at
# concurrency 512, each repeated, then RESULTS.md with one table per
# workload (each system's median and range over the repeats, and the ratio
# of the medians).
#
#   bench/compare-cluster.sh              full run (about 4 minutes), writes
#                                         bench/cluster/RESULTS.md, runs/, plots/
#   bench/compare-cluster.sh --smoke      a second per workload, once, into a
#                                         temporary directory
#   bench/compare-cluster.sh --repeats N  runs of each workload per system
#                                         (default 3; 1 with --smoke)
#   bench/compare-cluster.sh --out DIR    write RESULTS.md, plots/ and runs/ to DIR
#
# Every run starts its three members anew on empty data directories and
# stops them afterwards (SIGTERM by pid, SIGKILL 10 s later). Repeats
# alternate which system goes first. bench is given every member's
# endpoint: keel's client sends each request to its shard's leader; etcd's
# connections go to the members in turn (as etcd's Go client balances its
# endpoints), and a member that does not lead passes the request to the
# leader. bench is given every member's pid, and reports their CPU time
# together.
#
# Each keel member runs one core with three shards (KEEL_CLUSTER_CORES and
# KEEL_CLUSTER_SHARDS change that), so each leads one shard once leadership
# has spread; each etcd member leads or follows its one Raft group.
# Settings from the environment: KEEL_BIN and BENCH_BIN (binaries to use
# instead of building them), KEEL_BENCH_DIR (where the data directories go,
# default the output directory), COMPARE_PORT_BASE (default 25300).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
parse_suite_args "$root/bench/cluster" "$@"

ensure_etcd
build_binaries "$root"
keel_commit="$(cd "$root" && git describe --always --dirty 2>/dev/null || echo unknown)"
member_cores="${KEEL_CLUSTER_CORES:-1}"
member_shards="${KEEL_CLUSTER_SHARDS:-3}"

base="${COMPARE_PORT_BASE:-25300}"
# Member i: keel's client port base+100+40i, its cores from +1, its peer
# ports from +20 (so up to 19 cores); etcd's client port base+300+10i,
# peer +1.
keel_client_port() { echo $((base + 100 + 40 * $1)); }
keel_core_base() { echo $((base + 101 + 40 * $1)); }
keel_peer_port() { echo $((base + 120 + 40 * $1)); }
etcd_client_port() { echo $((base + 300 + 10 * $1)); }
etcd_peer_port() { echo $((base + 301 + 10 * $1)); }
if [ "$member_cores" -gt 19 ]; then echo "KEEL_CLUSTER_CORES above 19 would overlap the ports" >&2; exit 2; fi

data="${KEEL_BENCH_DIR:-$out}/compare-cluster-data"
rm -rf "$data" "$out/runs" "$out/plots"
mkdir -p "$data" "$out/runs" "$out/plots"

# The members of the run under way.
pids=()
stop_cluster() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
  rm -rf "$data/members"
}
trap 'stop_cluster; rm -rf "$data"' EXIT

ports_of() {
  local i c
  for i in 0 1 2; do
    if [ "$1" = keel ]; then
      keel_client_port "$i"
      for c in $(seq 0 $((member_cores - 1))); do
        echo $(($(keel_core_base "$i") + c)) $(($(keel_peer_port "$i") + c))
      done
    else
      etcd_client_port "$i"; etcd_peer_port "$i"
    fi
  done
}

# Starts `system`'s three members on empty data directories, logging to
# `log`.N; sets pids and endpoints.
start_cluster() {
  local system=$1 log=$2 i p initial
  for p in $(ports_of "$system"); do
    if port_taken "$p"; then
      echo "127.0.0.1:$p is already taken (a server left from another run?); set COMPARE_PORT_BASE" >&2
      exit 1
    fi
  done
  rm -rf "$data/members"
  mkdir -p "$data/members"
  endpoints=""
  if [ "$system" = keel ]; then
    initial="m0=127.0.0.1:$(keel_peer_port 0),m1=127.0.0.1:$(keel_peer_port 1),m2=127.0.0.1:$(keel_peer_port 2)"
    for i in 0 1 2; do
      "$KEEL_BIN" --name "m$i" --data-dir "$data/members/m$i" \
        --listen-client "127.0.0.1:$(keel_client_port "$i")" --core-port-base "$(keel_core_base "$i")" \
        --listen-peer "127.0.0.1:$(keel_peer_port "$i")" --initial-cluster "$initial" \
        --cores "$member_cores" --shards "$member_shards" --no-pin >"$log.$i" 2>&1 &
      pids+=($!)
      endpoints="$endpoints${endpoints:+,}127.0.0.1:$(keel_client_port "$i")"
    done
  else
    initial="e0=http://127.0.0.1:$(etcd_peer_port 0),e1=http://127.0.0.1:$(etcd_peer_port 1),e2=http://127.0.0.1:$(etcd_peer_port 2)"
    for i in 0 1 2; do
      etcd --name "e$i" --data-dir "$data/members/e$i" \
        --listen-client-urls "http://127.0.0.1:$(etcd_client_port "$i")" \
        --advertise-client-urls "http://127.0.0.1:$(etcd_client_port "$i")" \
        --listen-peer-urls "http://127.0.0.1:$(etcd_peer_port "$i")" \
        --initial-advertise-peer-urls "http://127.0.0.1:$(etcd_peer_port "$i")" \
        --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token compare \
        --quota-backend-bytes $((8 << 30)) >"$log.$i" 2>&1 &
      pids+=($!)
      endpoints="$endpoints${endpoints:+,}127.0.0.1:$(etcd_client_port "$i")"
    done
  fi
  for i in 0 1 2; do
    if [ "$system" = keel ]; then p=$(keel_client_port "$i"); else p=$(etcd_client_port "$i"); fi
    wait_for_port "$p" "${pids[$i]}" "$log.$i"
  done
  # Leaders elected, and (keel) handed to where they are spread: bench
  # itself waits for a read to answer, not for that.
  sleep 3
}

if [ "$mode" = smoke ]; then
  timing=(--duration 1s --warmup 200ms); keys=1000; measured="1 s after a 0.2 s warm-up"
else
  timing=(--duration 10s --warmup 2s); keys=10000; measured="10 s after a 2 s warm-up"
fi
connections=8
suite=(
  "05-max-writes-512|--max writes --concurrency 512"
  "07-max-reads-512|--max reads --concurrency 512"
)

started=$(date +%s)
cd "$out"
ordered=()
for entry in "${suite[@]}"; do
  file="${entry%%|*}"
  read -r -a options <<<"${entry#*|}"
  for repeat in $(seq 1 "$repeats"); do
    if [ $((repeat % 2)) = 1 ]; then systems=(keel etcd); else systems=(etcd keel); fi
    for system in "${systems[@]}"; do
      run="runs/$file.$system.$repeat"
      plot=()
      if [ "$repeat" = 1 ]; then plot=(--plot "plots/$file.svg"); fi
      echo "== $file, run $repeat of $repeats: $system (three members)"
      start_cluster "$system" "$run.log"
      "$BENCH_BIN" --target "$system://$endpoints" --connections "$connections" \
        --server-pid "$(IFS=,; echo "${pids[*]}")" "${options[@]}" "${timing[@]}" --keys "$keys" \
        --json "${plot[@]}" >"$run.json"
      stop_cluster
    done
  done
  for system in keel etcd; do
    for repeat in $(seq 1 "$repeats"); do ordered+=("runs/$file.$system.$repeat.json"); done
  done
done
elapsed=$(( $(date +%s) - started ))
runs_word="runs"; [ "$repeats" = 1 ] && runs_word="run"

{
  echo "# A three-member keel beside a three-member etcd"
  echo
  echo "Written by \`bench/compare-cluster.sh$( [ "$mode" = smoke ] && echo " --smoke")\` on $(date -u +%Y-%m-%d):"
  echo "${#suite[@]} workloads, $repeats $runs_word of each per system, $((elapsed / 60)) min $((elapsed % 60)) s in all."
  echo "Each run started three members of one system on empty data directories and stopped them"
  echo "afterwards; the repeats alternated which system went first."
  if [ "$repeats" -gt 1 ]; then
    echo "Each figure is the median of a system's $repeats runs, with their range (lowest–highest) in brackets."
  fi
  echo
  echo "## What six servers on one machine mean"
  echo
  echo "All three members of a system ran on this one machine ($(nproc) CPUs), with bench beside them:"
  echo "a cluster here replicates every write three times over loopback, with three fsyncs per write on"
  echo "one disk, and its members compete for the same CPUs. The figures compare the two systems' cost"
  echo "per replicated operation on shared hardware; they are not what three machines would give (no"
  echo "network latency between members, but no extra CPUs or disks either). \"server CPU/op\" sums"
  echo "the three members' CPU time."
  echo
  describe_machine "$data"
  echo "- keel $keel_commit: three members, each \`--cores $member_cores --shards $member_shards\`, every write"
  echo "  synced on a majority before it is answered; bench's clients are given every member"
  echo "- $(etcd_description), three members, default settings but an 8 GiB quota"
  echo "- the load: \`bench\` with $connections connections, $measured, over $keys keys of 16 bytes with"
  echo "  256-byte values, uniform; linearizable reads (etcd's default; keel's ReadIndex)"
  echo
  echo "## Results"
  echo
  "$BENCH_BIN" report "${ordered[@]}"
} >RESULTS.md.new
mv RESULTS.md.new RESULTS.md

echo "== wrote $out/RESULTS.md"
