#!/usr/bin/env bash
# What scraping the metrics endpoint costs keel (docs/metrics.md): durable
# writes at concurrency 512 against one release keel, with the endpoint
# scraped every second (`bench --scrape`) and without, alternating, in the
# same run; through keel's own protocol and through etcd's API (whose
# thread serves the scrapes), each run on a new keel. Prints `bench report`'s tables: each label's
# median and range over the repeats, and its ratio to "not scraped".
#
#   bench/metrics-cost.sh [--repeats N] [--out DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
parse_suite_args "$(mktemp -d -t keel-metrics-cost.XXXXXX)" "$@"
build_binaries "$root"

client_port=25379
metrics_port=25381
core_base=25390
cd "$out"
mkdir -p runs
keel_pid=""
stop_keel() {
  if [ -n "$keel_pid" ]; then
    kill "$keel_pid" 2>/dev/null || true
    wait "$keel_pid" 2>/dev/null || true
    keel_pid=""
  fi
  rm -rf data
}
trap stop_keel EXIT
# Every run gets a new keel on an empty data directory (as compare.sh
# does): the history a run writes is not left for the next.
start_keel() {
  rm -rf data
  "$KEEL_BIN" --data-dir data --listen-client "127.0.0.1:$client_port" \
    --core-port-base "$core_base" --listen-metrics "127.0.0.1:$metrics_port" \
    >keel.out 2>>keel.log &
  keel_pid=$!
  wait_for_port "$client_port" "$keel_pid" keel.log
  wait_for_port "$metrics_port" "$keel_pid" keel.log
  for core in $(seq 0 $(( $(nproc) - 1 ))); do
    wait_for_port $((core_base + core)) "$keel_pid" keel.log
  done
}

files=()
for protocol in keel etcd; do
  for repeat in $(seq 1 "$repeats"); do
    # Alternate which goes first, so that drift of the machine falls on both.
    if [ $((repeat % 2)) = 1 ]; then order=(plain scraped); else order=(scraped plain); fi
    for how in "${order[@]}"; do
      scrape=()
      label="not scraped"
      if [ "$how" = scraped ]; then
        scrape=(--scrape "http://127.0.0.1:$metrics_port/metrics" --scrape-interval 1s)
        label="scraped every 1 s"
      fi
      run="runs/$protocol.$how.$repeat"
      echo "== $protocol, run $repeat of $repeats: $label"
      start_keel
      "$BENCH_BIN" --target "$protocol://127.0.0.1:$client_port" --connections 8 \
        --max writes --concurrency 512 --duration 10s --warmup 2s --keys 10000 \
        --server-pid "$keel_pid" --name "max-writes-512 via $protocol" \
        --label "$label" "${scrape[@]}" --json >"$run.json"
      stop_keel
    done
  done
  for how in scraped plain; do
    for repeat in $(seq 1 "$repeats"); do files+=("runs/$protocol.$how.$repeat.json"); done
  done
done
"$BENCH_BIN" report "${files[@]}" | tee report.md
grep -h '"scraped http' runs/*.scraped.*.json | sed 's/^ *//' || true
echo "(results in $out)"
