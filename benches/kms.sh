#!/usr/bin/env bash
# Whole-command benchmark of atrest with KMS v2, against a throwaway etcd on loopback and the
# test KMS plugin (examples/kms_plugin.rs) on a unix socket.
#
#   benches/kms.sh [N ...]        # default: 50000
#
# For each N: loads N Secrets of about 2 KiB (examples/bench_load.rs) and rewrites them all to
# aescbc key2 (config A), compacts and defragments, then measures
#   - `atrest audit` with A (N aescbc Secrets, all current): best of RUNS after one warm-up;
#   - `atrest rewrite` aescbc key2 -> aescbc key3 (config B) and aescbc key3 -> KMS v2 (config
#     K), each on N entries from a compacted, defragmented database (best of WRITE_RUNS; between
#     runs the entries are rewritten back to key2, unmeasured);
#   - `atrest audit` with K (N KMS v2 Secrets in seed mode, one DEK per rewrite run): best of RUNS;
#   - the plugin's Decrypt and Encrypt calls during each measured command.
# It prints markdown to stdout and writes nothing into the tree.
#
# Environment: RUNS (3), WRITE_RUNS (2), CONCURRENCY (64). Needs etcd, etcdctl, jq, python3,
# GNU time at /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(50000)
runs=${RUNS:-3}
write_runs=${WRITE_RUNS:-2}
concurrency=${CONCURRENCY:-64}

for tool in etcd etcdctl jq python3; do
  command -v "$tool" >/dev/null || { echo "benches/kms.sh needs $tool" >&2; exit 2; }
done
[[ "$(/usr/bin/time -v true 2>&1)" == *'Maximum resident'* ]] ||
  { echo "benches/kms.sh needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }

log() { printf '%s\n' "$*" >&2; }

log "building release binaries"
cargo build --release --examples --bins --quiet
atrest=$PWD/target/release/atrest
load=$PWD/target/release/examples/bench_load
plugin_bin=$PWD/target/release/examples/kms_plugin

dir=$(mktemp -d)
pid="" plugin_pid=""
stop() {
  for p in "$plugin_pid" "$pid"; do
    if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
  done
  pid="" plugin_pid=""
}
trap 'stop; rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

socket="$dir/kms.sock"
key1=rrbu51iF5Q+RAUNdZZ4HrBOFWTfFZBeOUSsPWYzZGxY=
key2=7d9+9fRVOV06k4tCYRlZgx3EB0XKUbEzNCfAO/j2Cr0=
key3=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
config() { # $1: file; $2: "kms" to put the kms provider first, "kms2" second; rest: key names in order
  local file=$1 kms=$2; shift 2
  {
    echo "apiVersion: apiserver.config.k8s.io/v1"
    echo "kind: EncryptionConfiguration"
    echo "resources:"
    echo "  - resources: [secrets]"
    echo "    providers:"
    local kms_yaml="      - kms: {apiVersion: v2, name: bench, endpoint: 'unix://$socket'}"
    [ "$kms" != kms ] || echo "$kms_yaml"
    echo "      - aescbc:"
    echo "          keys:"
    for k in "$@"; do
      echo "            - {name: $k, secret: '${!k}'}"
    done
    [ "$kms" != kms2 ] || echo "$kms_yaml"
    echo "      - identity: {}"
  } >"$file"
}
config "$dir/A.yaml" none key2 key1          # what bench_load loads with; rewrite -> all key2
config "$dir/B.yaml" none key3 key2 key1     # aescbc -> aescbc (key2 -> key3)
config "$dir/K.yaml" kms key3 key2 key1      # aescbc -> KMS v2 (key3 -> kms)
config "$dir/R.yaml" kms2 key2 key3 key1     # back to key2 between runs (unmeasured)

start() { # $1: data dir
  client="http://127.0.0.1:$(port)"
  peer="http://127.0.0.1:$(port)"
  etcd --name bench --data-dir "$1" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "bench=$peer" --quota-backend-bytes 8589934592 \
    --log-level error >"$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    etcdctl --endpoints "$client" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$plugin_bin" --socket "$socket" --control "$dir/control" 2>/dev/null &
  plugin_pid=$!
  for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
  [ -S "$socket" ] || { log "the KMS plugin did not start"; exit 3; }
}

compact() {
  local rev
  rev=$(etcdctl --endpoints "$client" endpoint status -w json | jq '.[0].Status.header.revision')
  etcdctl --endpoints "$client" compact "$rev" --physical >/dev/null
  etcdctl --endpoints "$client" defrag >/dev/null
}

calls() { awk '$1 == "decrypt" { d = $2 } $1 == "encrypt" { e = $2 } END { print d, e }' "$dir/control/calls"; }

# Runs a command under /usr/bin/time -v; sets secs, rss_kib, rc; aborts on an unexpected exit.
timed() {
  local ok=${ok:-0} t0 t1
  t0=$EPOCHREALTIME
  rc=0
  /usr/bin/time -v -o "$dir/time.txt" "$@" >"$dir/out.json" 2>"$dir/stderr.txt" || rc=$?
  t1=$EPOCHREALTIME
  if ! [[ " $ok " == *" $rc "* ]]; then
    log "command failed (exit $rc): $*"; cat "$dir/stderr.txt" >&2; exit 1
  fi
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  rss_kib=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$dir/time.txt")
}

best() { # $1: variable name prefix; rest: command. Best of $runs after a warm-up.
  local name=$1 b=""
  shift
  timed "$@"
  for _ in $(seq "$runs"); do
    local c0 c1
    c0=$(calls)
    timed "$@"
    c1=$(calls)
    if [ -z "$b" ] || [ "$(awk -v a="$b" -v s="$secs" 'BEGIN { print (s < a) }')" = 1 ]; then b=$secs; fi
    printf -v "${name}_rss" '%s' "$rss_kib"
    printf -v "${name}_calls" '%s' "$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " "); print y[1] - x[1] " Decrypt, " y[2] - x[2] " Encrypt" }')"
  done
  printf -v "${name}_secs" '%s' "$b"
}

rewrite() { # $1: config; sets secs and n (rewritten)
  timed "$atrest" rewrite --endpoints "$client" --config "$1" --concurrency "$concurrency" -o json
  n=$(jq '.rewritten' "$dir/out.json")
  if [ "$(jq '.conflicts + .failed + .skipped' "$dir/out.json")" != 0 ]; then
    log "rewrite left entries behind:"; jq -c 'del(.entries)' "$dir/out.json" >&2; exit 1
  fi
}

echo "# atrest KMS v2 benchmark"
echo
echo "$(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), \
$(etcd --version | awk 'NR == 1 { print "etcd " $3 }'), atrest $(git describe --always --dirty 2>/dev/null || echo '?'), \
test KMS plugin (examples/kms_plugin.rs) on a unix socket."

for total in "${sizes[@]}"; do
  log "== N=$total: loading"
  start "$dir/etcd-$total"
  "$load" load "$client" "$dir/A.yaml" "$total" 64 >&2
  rewrite "$dir/A.yaml" >/dev/null
  compact

  log "== N=$total: audit aescbc"
  ok="0 1" best cbc_audit "$atrest" audit --endpoints "$client" --config "$dir/A.yaml" -o json
  [ "$(jq '.summary.current' "$dir/out.json")" = "$total" ] || { log "not all current"; exit 1; }

  log "== N=$total: rewrites"
  cbc_w="" kms_w="" kms_w_calls=""
  for r in $(seq "$write_runs"); do
    if [ "$r" != 1 ]; then rewrite "$dir/R.yaml"; compact; fi
    rewrite "$dir/B.yaml"
    if [ -z "$cbc_w" ] || [ "$(awk -v a="$cbc_w" -v s="$secs" 'BEGIN { print (s < a) }')" = 1 ]; then
      cbc_w=$secs
    fi
    compact
    c0=$(calls)
    rewrite "$dir/K.yaml"
    c1=$(calls)
    if [ -z "$kms_w" ] || [ "$(awk -v a="$kms_w" -v s="$secs" 'BEGIN { print (s < a) }')" = 1 ]; then
      kms_w=$secs
      kms_w_calls=$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " "); print y[1] - x[1] " Decrypt, " y[2] - x[2] " Encrypt" }')
      kms_w_rss=$rss_kib
    fi
    compact
  done

  log "== N=$total: audit KMS v2"
  ok="0 1" best kms_audit "$atrest" audit --endpoints "$client" --config "$dir/K.yaml" -o json
  [ "$(jq '.summary.current' "$dir/out.json")" = "$total" ] || { log "not all current"; exit 1; }
  stop
  rm -rf "$dir/etcd-$total" "$dir/control"

  cbc_tps=$(awk -v n="$total" -v s="$cbc_w" 'BEGIN { printf "%.0f", n / s }')
  kms_tps=$(awk -v n="$total" -v s="$kms_w" 'BEGIN { printf "%.0f", n / s }')
  audit_ratio=$(awk -v a="$kms_audit_secs" -v b="$cbc_audit_secs" 'BEGIN { printf "%.2f", a / b }')
  write_pct=$(awk -v a="$kms_tps" -v b="$cbc_tps" 'BEGIN { printf "%.0f", 100 * a / b }')
  echo
  echo "## $total Secrets"
  echo
  echo "| command | wall time | peak RSS | plugin calls | result |"
  echo "| --- | --- | --- | --- | --- |"
  echo "| \`atrest audit -o json\`, aescbc (all current) | ${cbc_audit_secs} s | $((cbc_audit_rss / 1024)) MiB | - | $total entries |"
  echo "| \`atrest audit -o json\`, KMS v2 (all current) | ${kms_audit_secs} s | $((kms_audit_rss / 1024)) MiB | ${kms_audit_calls} | ${audit_ratio}× the aescbc audit |"
  echo "| \`atrest rewrite\` aescbc → aescbc, concurrency $concurrency | ${cbc_w} s | - | - | $cbc_tps entries/s |"
  echo "| \`atrest rewrite\` aescbc → KMS v2, concurrency $concurrency | ${kms_w} s | $((kms_w_rss / 1024)) MiB | ${kms_w_calls} | $kms_tps entries/s |"
  echo
  echo "| target | measured | verdict |"
  echo "| --- | --- | --- |"
  echo "| KMS v2 audit ≤ 1.2× the aescbc audit | ${audit_ratio}× | $(awk -v r="$audit_ratio" 'BEGIN { print (r <= 1.2) ? "met" : "**not met**" }') |"
  echo "| rewrite to KMS v2 ≥ 90% of aescbc → aescbc | ${write_pct}% | $(awk -v p="$write_pct" 'BEGIN { print (p >= 90) ? "met" : "**not met**" }') |"
done
