#!/usr/bin/env bash
# The Rust `etcd-client` crate's own test suite (crates.io, unchanged) run
# against a real etcd 3.4 and then against keel, one at a time on
# 127.0.0.1:2379 (the suite's address is fixed: localhost:2379), and the
# two outcomes side by side: which tests pass on both, and where they
# differ.
#
#   scripts/etcd-client-suite.sh           prints the table; exits 1 when a
#                                          test passes against etcd and not
#                                          against keel, unless
#                                          docs/etcd.md lists it as a known
#                                          difference
#
# Not part of the README's test command: etcd-client builds its .proto
# files with protoc, which this script installs (Debian's
# protobuf-compiler), with etcd 3.4 (etcd-server, etcd-client), when
# missing. Port 2379 and 2380 must be free. Settings from the environment:
# ETCD_CLIENT_VERSION (default 0.21.1), KEEL_BIN (a keel binary to use
# instead of building one), ETCD_CLIENT_SUITE_DIR (where the crate is
# unpacked and built, default ~/.cache/keel/etcd-client-suite).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
version="${ETCD_CLIENT_VERSION:-0.21.1}"
# Outside keel's tree: cargo would take the crates for workspace members.
work="${ETCD_CLIENT_SUITE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keel/etcd-client-suite}"
mkdir -p "$work"

missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

# keel's cores listen for peers on 2380, 2381, ... (one port each).
for port in 2379 $(seq 2380 $((2380 + $(nproc) - 1))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "127.0.0.1:$port is taken; the suite needs it (its address is fixed)" >&2
    exit 1
  fi
done

# The crate's source as published, through cargo's own download.
src="$work/etcd-client-$version"
if [ ! -d "$src" ]; then
  echo "== fetching etcd-client $version"
  probe="$work/probe"
  rm -rf "$probe"
  mkdir -p "$probe/src"
  printf '[workspace]\n[package]\nname = "probe"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\netcd-client = "=%s"\n' \
    "$version" >"$probe/Cargo.toml"
  touch "$probe/src/lib.rs"
  (cd "$probe" && cargo fetch -q)
  registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
  found=$(find "$registry" -maxdepth 2 -type d -name "etcd-client-$version" | head -n 1)
  [ -n "$found" ] || { echo "etcd-client $version was not fetched" >&2; exit 1; }
  cp -r "$found" "$src"
fi

echo "== building etcd-client $version's tests"
(cd "$src" && CARGO_TARGET_DIR="$work/target" cargo test --tests --no-run -q 2>&1 | tail -n 3)

if [ -z "${KEEL_BIN:-}" ]; then
  (cd "$root" && cargo build --release -q --bin keel)
  KEEL_BIN="$root/target/release/keel"
fi

data="$(mktemp -d)"
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap 'stop_server; rm -rf "$data"' EXIT

wait_for_2379() {
  for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 endpoint health >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "nothing healthy on 127.0.0.1:2379" >&2
  exit 1
}

# Runs the suite against what listens on 2379; its per-test outcomes go to $1.
run_suite() {
  local outcomes=$1 log=$2
  (cd "$src" && CARGO_TARGET_DIR="$work/target" timeout 600 cargo test --tests --no-fail-fast -- --color never 2>&1) >"$log" || true
  { grep -E '^test [^ ]+ \.\.\. ' "$log" || true; } | sed -E 's/^test ([^ ]+) \.\.\. ([A-Za-z]+).*/\1 \2/' | sort >"$outcomes"
}

echo "== etcd $(etcd --version 2>/dev/null | head -n 1 | awk '{print $3}')"
mkdir -p "$data/etcd"
etcd --name suite --data-dir "$data/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster suite=http://127.0.0.1:2380 >"$work/etcd.log" 2>&1 &
server_pid=$!
wait_for_2379
# As the suite's own set-up does: a root user for its auth tests.
ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 user add root:rootpwd >/dev/null
ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 user grant-role root root >/dev/null
run_suite "$work/etcd.outcomes" "$work/etcd.tests.log"
stop_server

echo "== keel $("$KEEL_BIN" --version 2>/dev/null)"
mkdir -p "$data/keel"
# A cluster of one with a peer address, as an etcd member is.
"$KEEL_BIN" --data-dir "$data/keel" --listen-peer 127.0.0.1:2380 \
  --initial-cluster default=127.0.0.1:2380 >"$work/keel.log" 2>&1 &
server_pid=$!
wait_for_2379
# The suite's root user: refused while keel has no users (docs/etcd.md).
ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 user add root:rootpwd >/dev/null 2>&1 || true
run_suite "$work/keel.outcomes" "$work/keel.tests.log"
stop_server

echo
printf '%-55s %-8s %-8s\n' "test" "etcd" "keel"
join -a 1 -a 2 -e missing -o 0,1.2,2.2 "$work/etcd.outcomes" "$work/keel.outcomes" |
  while read -r name etcd keel; do printf '%-55s %-8s %-8s\n' "$name" "$etcd" "$keel"; done
echo
passed_etcd=$(grep -c ' ok$' "$work/etcd.outcomes" || true)
passed_keel=$(grep -c ' ok$' "$work/keel.outcomes" || true)
echo "passed: etcd $passed_etcd, keel $passed_keel (logs: $work/etcd.tests.log, $work/keel.tests.log)"

# A test that passes against etcd and fails against keel (or has no
# outcome against keel: the run hung or died) is a regression unless
# docs/etcd.md names it in its section on this suite.
known=$(awk '/^## etcd-client.s test suite/ {on = 1; next} /^## / {on = 0} on' "$root/docs/etcd.md")
status=0
if [ "$(wc -l <"$work/keel.outcomes")" -lt "$(wc -l <"$work/etcd.outcomes")" ]; then
  echo "keel's run reported fewer tests than etcd's (see $work/keel.tests.log)" >&2
  status=1
fi
while read -r name; do
  if grep -q "\`$name\`" <<<"$known"; then
    echo "known difference: $name (docs/etcd.md)"
  else
    echo "DIFFERS: $name passes against etcd, not against keel" >&2
    status=1
  fi
done < <(join -a 1 -e missing -o 0,1.2,2.2 "$work/etcd.outcomes" "$work/keel.outcomes" | awk '$2 == "ok" && $3 != "ok" {print $1}')
exit $status
