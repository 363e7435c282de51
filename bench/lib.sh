# Shell helpers of bench/compare.sh and bench/compare-cluster.sh (sourced).

# Reads the suites' options ([--smoke] [--repeats N] [--out DIR]
# [--only REGEX]) from the arguments after the first, $1 being the default
# output directory of a full run; sets mode (full or smoke), repeats
# (default 3, 1 with --smoke), out (made, and absolute; a temporary
# directory with --smoke or --only without --out) and only (an extended
# regular expression the workloads' names must match; empty: every
# workload).
parse_suite_args() {
  local usage="usage: $0 [--smoke] [--repeats N] [--out DIR] [--only REGEX]"
  mode=full
  local default_out="$1"
  out="$1"
  repeats=""
  only=""
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --smoke) mode=smoke; out="" ;;
      --out) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; out="$2"; shift ;;
      --repeats) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; repeats="$2"; shift ;;
      --only) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; only="$2"; shift ;;
      *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
  done
  if [ -z "$repeats" ]; then
    if [ "$mode" = smoke ]; then repeats=1; else repeats=3; fi
  fi
  case "$repeats" in
    ''|*[!0-9]*|0) echo "--repeats takes a number of runs, at least 1, not '$repeats'" >&2; exit 2 ;;
  esac
  # Some workloads alone write somewhere else than the full results,
  # unless told where.
  if [ -n "$only" ] && [ "$out" = "$default_out" ]; then out=""; fi
  if [ -z "$out" ]; then out="$(mktemp -d -t keel-compare.XXXXXX)"; fi
  mkdir -p "$out"
  out="$(cd "$out" && pwd)"
}

# Installs etcd (Debian's etcd-server) when it is missing.
ensure_etcd() {
  if ! command -v etcd >/dev/null; then
    echo "== installing etcd (Debian's etcd-server)"
    if [ "$(id -u)" != 0 ]; then echo "etcd is missing and this is not root: apt-get install etcd-server" >&2; exit 1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null; }
  fi
}

# Writes a certificate authority and, signed by it, a server certificate
# for 127.0.0.1 and a client certificate (ECDSA P-256, valid 30 days) into
# $1: ca.pem, server.pem, server-key.pem, client.pem, client-key.pem.
# Installs openssl when it is missing.
make_certs() {
  local dir=$1
  if ! command -v openssl >/dev/null; then
    if [ "$(id -u)" != 0 ]; then echo "openssl is missing and this is not root: apt-get install openssl" >&2; exit 1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >/dev/null; }
  fi
  mkdir -p "$dir"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -days 30 \
    -subj "/CN=bench CA" 2>/dev/null
  local name
  for name in server client; do
    openssl req "${ec[@]}" -keyout "$dir/$name-key.pem" -out "$dir/$name.csr" \
      -subj "/CN=$name" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$dir/$name.ext"
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
      -CAcreateserial -days 30 -extfile "$dir/$name.ext" -out "$dir/$name.pem" 2>/dev/null
  done
}

# Sets KEEL_BIN, KEELCTL_BIN and BENCH_BIN to absolute paths, building them (release)
# in the tree at $1 unless both are given.
build_binaries() {
  local root=$1
  if [ -z "${KEEL_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ] || [ -z "${KEELCTL_BIN:-}" ]; then
    echo "== building keel, keelctl and bench (release)"
    (cd "$root" && cargo build --release -q -p keel-net --bin keel --bin keelctl -p keel-load --bin bench)
    KEEL_BIN="${KEEL_BIN:-$root/target/release/keel}"
    KEELCTL_BIN="${KEELCTL_BIN:-$root/target/release/keelctl}"
    BENCH_BIN="${BENCH_BIN:-$root/target/release/bench}"
  fi
  # The suites run from their output directory.
  KEEL_BIN="$(realpath "$KEEL_BIN")"
  KEELCTL_BIN="$(realpath "$KEELCTL_BIN")"
  BENCH_BIN="$(realpath "$BENCH_BIN")"
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

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

# "etcd VERSION (built with GO)", as far as etcd says.
etcd_description() {
  local version go
  version="$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p')"
  go="$(etcd --version 2>/dev/null | sed -n 's/^Go Version: //p')"
  echo "etcd ${version:-(version unknown)}${go:+ (built with $go)}"
}

# Markdown lines on the machine: CPUs, memory, kernel, and the disk under
# directory $1.
describe_machine() {
  local dir=$1 cpu_model memory filesystem device disk rotational
  cpu_model="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  memory="$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  mkdir -p "$dir"
  filesystem="$(df -T "$dir" | awk 'NR==2 {print $2}')"
  device="$(df "$dir" | awk 'NR==2 {print $1}')"
  disk="$filesystem on $device"
  if command -v lsblk >/dev/null && rotational="$(lsblk -ndo ROTA "$device" 2>/dev/null)"; then
    case "$rotational" in
      0) disk="$disk, not rotational (an SSD, or a virtual disk)" ;;
      1) disk="$disk, rotational" ;;
    esac
  fi
  echo "- CPU: $(nproc) cores ($cpu_model); $memory of memory; Linux $(uname -r)"
  echo "- disk: the data directories on $disk"
}
