#!/usr/bin/env bash
# keel and etcd side by side on this machine: the standard suite of `bench`
# against each, every workload repeated, then RESULTS.md with one table per
# workload (each system's median and range over the repeats, and the ratio
# of the medians) and a latency plot per workload.
#
#   bench/compare.sh              full run (about 21 minutes on 2 cores),
#                                 writes bench/RESULTS.md and bench/plots/
#   bench/compare.sh --smoke      a second or so per workload, once, into a
#                                 temporary directory (what CI runs)
#   bench/compare.sh --repeats N  runs of each workload per system (default
#                                 3; 1 with --smoke)
#   bench/compare.sh --out DIR    write RESULTS.md, plots/ and runs/ to DIR
#   bench/compare.sh --only REGEX the workloads whose names match (as
#                                 05-max-writes-512|07-max-reads-512)
#
# Every run starts its server anew on an empty data directory and stops it
# afterwards, so that no run inherits another's keys, leases, compaction
# or caches (the kernel's page cache aside). Repeats alternate which system
# goes first: keel in odd repeats, etcd in even ones. Each run gives bench
# its server's pid, so the report has the server's CPU time per request
# over the measured window.
#
# Both servers listen on 127.0.0.1 only and both sync to disk before they
# acknowledge a write: etcd always fsyncs its WAL, keel always syncs its
# WAL batch. Installs etcd (Debian's etcd-server) when it is missing.
# Workloads 05 and 07 also run over TLS (client certificates required,
# both servers given the same ECDSA certificates, made with openssl), and
# keel over TLS with auth on, driven by a user who is not root (each of its
# requests checked against its permissions): what security costs each.
# Settings from the environment: KEEL_BIN, KEELCTL_BIN and BENCH_BIN
# (binaries to use instead of building them), KEEL_BENCH_DIR (where the data directories go,
# default the output directory), COMPARE_PORT_BASE (default 24300: keel on
# +79 and its cores from +90, etcd on +179 and +180).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
parse_suite_args "$root/bench" "$@"

ensure_etcd
build_binaries "$root"

# Named before this script writes its outputs, which may be in the tree.
keel_commit="$(cd "$root" && git describe --always --dirty 2>/dev/null || echo unknown)"

base="${COMPARE_PORT_BASE:-24300}"
keel_port=$((base + 79)); keel_cores=$((base + 90))
etcd_port=$((base + 179)); etcd_peer=$((base + 180))
data="${KEEL_BENCH_DIR:-$out}/compare-data"
rm -rf "$data" "$out/runs" "$out/plots"
mkdir -p "$data" "$out/runs" "$out/plots"
# Certificates for the runs over TLS.
certs="$data/certs"
make_certs "$certs"
secure=0

# The server of the run under way, if any.
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    # A server that has not stopped 10 s after SIGTERM is killed.
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
  rm -rf "$data/server"
}
trap 'stop_server; rm -rf "$data"' EXIT

cores=$(nproc)
ports_of() {
  if [ "$1" = keel ]; then
    echo "$keel_port"
    for core in $(seq 0 $((cores - 1))); do echo $((keel_cores + core)); done
  else
    echo "$etcd_port" "$etcd_peer"
  fi
}

# Starts `system` on an empty data directory, logging to `log`; sets
# server_pid and port. bench itself waits until the server answers a read
# (etcd listens before it has elected itself leader).
start_server() {
  local system=$1 log=$2
  for p in $(ports_of "$system"); do
    if port_taken "$p"; then
      echo "127.0.0.1:$p is already taken (a server left from another run?); set COMPARE_PORT_BASE" >&2
      exit 1
    fi
  done
  rm -rf "$data/server"
  mkdir -p "$data/server"
  # With TLS (a -tls system): the same certificates and etcd's flags for
  # both servers, client certificates required.
  local tls=() scheme=http
  if [ "$secure" = 1 ]; then
    tls=(--cert-file "$certs/server.pem" --key-file "$certs/server-key.pem"
      --trusted-ca-file "$certs/ca.pem" --client-cert-auth)
    scheme=https
  fi
  if [ "$system" = keel ]; then
    port=$keel_port
    "$KEEL_BIN" --data-dir "$data/server" --listen-client "127.0.0.1:$keel_port" \
      --core-port-base "$keel_cores" "${tls[@]}" >"$log" 2>&1 &
  else
    port=$etcd_port
    etcd --name compare --data-dir "$data/server" "${tls[@]}" \
      --listen-client-urls "$scheme://127.0.0.1:$etcd_port" --advertise-client-urls "$scheme://127.0.0.1:$etcd_port" \
      --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
      --initial-cluster "compare=http://127.0.0.1:$etcd_peer" --quota-backend-bytes $((8 << 30)) \
      >"$log" 2>&1 &
  fi
  server_pid=$!
  if [ "$system" = keel ]; then
    # Its cores' own ports too: a client that found one closed would send
    # that core's requests through the client port for a while.
    for p in $(ports_of keel); do wait_for_port "$p" "$server_pid" "$log"; done
  else
    wait_for_port "$port" "$server_pid" "$log"
  fi
}

# Turns auth on in the keel just started (over TLS with the flags given):
# root, and a user `bench` who may read and write every key under bench/
# (not root: each of its requests is checked against its permissions).
enable_auth() {
  local ctl=("$KEELCTL_BIN" --endpoints "https://127.0.0.1:$port" "$@")
  for p in $(ports_of keel); do wait_for_port "$p" "$server_pid" /dev/null; done
  "${ctl[@]}" user add root:root-password >/dev/null
  "${ctl[@]}" user grant-role root root >/dev/null
  "${ctl[@]}" user add bench:bench-password >/dev/null
  "${ctl[@]}" role add bench >/dev/null
  "${ctl[@]}" role grant-permission bench readwrite bench/ --prefix >/dev/null
  "${ctl[@]}" user grant-role bench bench >/dev/null
  "${ctl[@]}" auth enable >/dev/null
}

# The standard suite: file name | bench options.
if [ "$mode" = smoke ]; then
  timing=(--duration 1s --warmup 200ms); keys=1000; measured="1 s after a 0.2 s warm-up"
  watchers=20; leases=200; ttl=2s; grants=50/s; churn_ttl=2s
else
  timing=(--duration 10s --warmup 2s); keys=10000; measured="10 s after a 2 s warm-up"
  watchers=1000; leases=10000; ttl=10s; grants=500/s; churn_ttl=3s
fi
connections=8
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
  "12-watch-fan-out-shared|--workload watch --watchers $watchers --writes 100/s --watch-streams per-connection"
  "13-lease-burst|--workload lease --leases $leases --lease-ttl $ttl"
  "14-lease-churn|--workload lease-churn --grants $grants --lease-ttl $churn_ttl --revoke-percent 50"
  "15-range-1000|--max ranges --range-size 1000 --concurrency 16"
)

started=$(date +%s)
workloads=0
cd "$out"
ordered=()
for entry in "${suite[@]}"; do
  file="${entry%%|*}"
  if [ -n "$only" ] && ! [[ $file =~ $only ]]; then continue; fi
  workloads=$((workloads + 1))
  read -r -a options <<<"${entry#*|}"
  case "$file" in
    *range-1000) extra=("${timing[@]}" --keys 1000) ;;
    *lease-burst) extra=() ;;
    *lease-churn) extra=("${timing[@]}") ;;
    *) extra=("${timing[@]}" --keys "$keys") ;;
  esac
  # The workloads keel also runs through etcd's API (a third column:
  # etcd's own client protocol, gRPC, against keel), and those both
  # systems also run over TLS (what TLS costs each).
  case "$file" in
    05-max-* | 07-max-*) all=(keel keel-tls keel-tls-auth keel-etcd-api etcd-tls etcd) ;;
    0[4-7]-max-*) all=(keel keel-etcd-api etcd) ;;
    *) all=(keel etcd) ;;
  esac
  for repeat in $(seq 1 "$repeats"); do
    if [ $((repeat % 2)) = 1 ]; then systems=("${all[@]}"); else
      systems=(); for ((i = ${#all[@]} - 1; i >= 0; i--)); do systems+=("${all[i]}"); done
    fi
    for system in "${systems[@]}"; do
      run="runs/$file.$system.$repeat"
      # The first repeat's curves make the chart; more would crowd it.
      plot=()
      if [ "$repeat" = 1 ]; then plot=(--plot "plots/$file.svg"); fi
      echo "== $file, run $repeat of $repeats: $system"
      # keel-etcd-api is keel's server driven through etcd's API; a -tls
      # system is its server over TLS; -tls-auth also has auth on, and the
      # load comes from a user who may read and write bench's keys.
      server=${system%-etcd-api}
      server=${server%-auth}
      server=${server%-tls}
      protocol=$server
      label=()
      if [ "$system" = keel-etcd-api ]; then protocol=etcd; label=(--label "keel via etcd API"); fi
      secure=0
      client_tls=()
      if [[ $system == *-tls* ]]; then
        secure=1
        label=(--label "$server over TLS")
        client_tls=(--cacert "$certs/ca.pem" --cert "$certs/client.pem" --key "$certs/client-key.pem")
      fi
      start_server "$server" "$run.log"
      if [[ $system == *-auth ]]; then
        label=(--label "$server over TLS, with auth")
        enable_auth "${client_tls[@]}"
        client_tls+=(--user bench:bench-password)
      fi
      "$BENCH_BIN" --target "$protocol://127.0.0.1:$port" --connections "$connections" \
        --server-pid "$server_pid" "${label[@]}" "${client_tls[@]}" "${options[@]}" "${extra[@]}" \
        --json "${plot[@]}" >"$run.json"
      stop_server
    done
  done
  # Each system's runs in repeat order, keel's first and etcd's last: the
  # report compares each of the others with the last.
  for system in "${all[@]}"; do
    for repeat in $(seq 1 "$repeats"); do ordered+=("runs/$file.$system.$repeat.json"); done
  done
done
if [ "$workloads" = 0 ]; then
  echo "no workload's name matches --only '$only'" >&2
  exit 2
fi
elapsed=$(( $(date +%s) - started ))

runs_word="runs"; [ "$repeats" = 1 ] && runs_word="run"

{
  echo "# keel beside etcd"
  echo
  echo "Written by \`bench/compare.sh$( [ "$mode" = smoke ] && echo " --smoke")\` on $(date -u +%Y-%m-%d):"
  echo "$workloads workloads, $repeats $runs_word of each per system, $((elapsed / 60)) min $((elapsed % 60)) s in all."
  echo "Both servers ran on this machine, one at a time: every run started its server on an empty"
  echo "data directory and stopped it afterwards, and the repeats alternated which system went first"
  echo "(keel in odd repeats, etcd in even ones)."
  if [ "$repeats" -gt 1 ]; then
    echo "Each figure is the median of a system's $repeats runs, with their range (lowest–highest) in brackets."
  fi
  echo
  echo "## The machine and the software"
  echo
  describe_machine "$data"
  echo "- keel $keel_commit: $("$KEEL_BIN" --version 2>/dev/null), default settings (a shard per core, every write synced before it is answered)"
  echo "- $(etcd_description), single member, default settings (its WAL fsynced before every answer) but an 8 GiB quota"
  echo "- the clients: keel was driven through keel-client (net/client), etcd through bench's own"
  echo "  gRPC client (tonic, HTTP/2; bench/load/src/etcd.rs), renewing a connection's leases over one"
  echo "  keep-alive stream as etcd's Go client does. \"keel via etcd API\" (workloads 04 to 07) is keel"
  echo "  driven by that same gRPC client through etcd's API on keel's client port. Each of the $connections \`--connections\` is one"
  echo "  HTTP/2 connection (one socket) to etcd, and a keel-client \`Client\` to keel, with a socket to"
  echo "  the client port and one to each core's port: the tables say how many sockets each system had"
  echo "- security (workloads 05 and 07): \"over TLS\" runs give both servers the same ECDSA P-256 certificates"
  echo "  and require client certificates; \"keel over TLS, with auth\" also has auth on, and its load comes from"
  echo "  a user who is not root (every request checked against its permission on bench/)"
  echo "- the load generator: \`bench\` (bench/load), on the same $cores CPUs as the server; kv runs $measured,"
  echo "  over $keys keys (1,000 for the ranges) of 16 bytes with 256-byte values, uniform; the lease burst has"
  echo "  no warm-up and is measured over its grants and renewals"
  echo
  echo "Latencies are timed from each request's due time (open loop), its send time (closed loop),"
  echo "the put's answer (watch events; an event that beats the answer counts as 0) or the lease's deadline (expiry)."
  echo "\"server CPU/op\" is the server's CPU time (user and system, from /proc/PID/stat) over the measured"
  echo "window, divided by every request of any kind the run completed in that window (a mix's reads and"
  echo "writes together; a watch's puts, with their events)."
  echo "\"keel vs etcd\" (and \"keel via etcd API vs etcd\") says how keel's median rate, CPU and latencies compare with etcd's in the same workload."
  echo
  echo "## Results"
  echo
  "$BENCH_BIN" report "${ordered[@]}"
} >RESULTS.md.new
# Replaced whole, so a failed run leaves the last results as they were.
mv RESULTS.md.new RESULTS.md

echo "== wrote $out/RESULTS.md"
