#!/usr/bin/env bash
# A local three-member keel cluster on 127.0.0.1, for trying keel out and
# for tests by hand (docs/cluster.md, "A local cluster").
#
#   scripts/cluster.sh start    build keel (release) and start m0, m1, m2
#   scripts/cluster.sh status   every member's view of every shard
#   scripts/cluster.sh stop     stop them (SIGTERM, by pid), keep the data
#   scripts/cluster.sh clean    stop them and delete the data
#
# Member i (0, 1, 2) serves clients on 127.0.0.1:<B>2379, its cores on
# <B>2390 + core, and peers on <B>2380 + core, where B is "", "2", "3" as in
# etcd's Procfile. Data and logs go to $KEEL_CLUSTER_DIR (./keel-cluster).
# KEEL_CLUSTER_CORES (default 2) sets each member's cores and shards.
set -euo pipefail

dir=${KEEL_CLUSTER_DIR:-keel-cluster}
cores=${KEEL_CLUSTER_CORES:-2}
prefixes=("" "2" "3")
root=$(cd "$(dirname "$0")/.." && pwd)
keel="$root/target/release/keel"
keelctl="$root/target/release/keelctl"

initial_cluster() {
  local parts=()
  for i in 0 1 2; do parts+=("m$i=127.0.0.1:${prefixes[$i]}2380"); done
  (IFS=,; echo "${parts[*]}")
}

endpoints() {
  local parts=()
  for i in 0 1 2; do parts+=("127.0.0.1:${prefixes[$i]}2379"); done
  (IFS=,; echo "${parts[*]}")
}

running() { [[ -f "$dir/m$1.pid" ]] && kill -0 "$(cat "$dir/m$1.pid")" 2>/dev/null; }

start() {
  (cd "$root" && cargo build --release -q -p keel-net --bin keel --bin keelctl)
  mkdir -p "$dir"
  local cluster
  cluster=$(initial_cluster)
  for i in 0 1 2; do
    if running "$i"; then echo "m$i already runs (pid $(cat "$dir/m$i.pid"))"; continue; fi
    local p=${prefixes[$i]}
    "$keel" --name "m$i" --data-dir "$dir/m$i" \
      --listen-client "127.0.0.1:${p}2379" --core-port-base "${p}2390" \
      --listen-peer "127.0.0.1:${p}2380" --initial-cluster "$cluster" \
      --cores "$cores" --shards "$cores" --no-pin \
      >"$dir/m$i.out" 2>"$dir/m$i.log" &
    echo $! >"$dir/m$i.pid"
  done
  for i in 0 1 2; do
    for _ in $(seq 100); do
      grep -q listening "$dir/m$i.out" 2>/dev/null && break
      running "$i" || { echo "m$i exited:"; tail -5 "$dir/m$i.log"; exit 1; }
      sleep 0.1
    done
    echo "m$i: $(cat "$dir/m$i.out") pid $(cat "$dir/m$i.pid")"
  done
  echo "endpoints: $(endpoints)"
}

status() {
  "$keelctl" --endpoints "$(endpoints)" endpoint status --cluster -w table
}

stop() {
  for i in 0 1 2; do
    if running "$i"; then
      local pid
      pid=$(cat "$dir/m$i.pid")
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      echo "m$i stopped"
    fi
    rm -f "$dir/m$i.pid"
  done
}

case "${1:-}" in
  start) start ;;
  status) status ;;
  stop) stop ;;
  clean) stop; rm -rf "$dir" ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
