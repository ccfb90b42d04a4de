#!/usr/bin/env bash
# Whole-command benchmark of atrest against a throwaway etcd on loopback.
#
#   benches/etcd.sh [N ...]        # default: 10000 50000
#
# For each N it starts a fresh etcd in a temporary directory (removed, and etcd killed, on
# exit), loads N Secrets of about 2 KiB (1/3 plaintext, 1/3 current, 1/3 stale; see
# examples/bench_load.rs), compacts and defragments, then measures:
#   - `etcdctl get --prefix /registry/secrets/ -w protobuf` (the floor) against
#     `atrest audit --config ... -o json`: best wall time of RUNS after one warm-up, peak RSS;
#   - `atrest audit --snapshot` of an `etcdctl snapshot save` of the same data;
#   - `atrest rewrite --concurrency C` against `bench_load baseline`: the same number of
#     compare(mod_revision)-and-put transactions of same-size values at the same concurrency,
#     each run on freshly reloaded data (best of WRITE_RUNS);
#   - with N other objects beside the Secrets (`bench_load others`), `atrest audit` with the
#     config's providers under `*.*` (every resource) against the Secrets-only audit of the
#     same etcd, in entries per second, and its peak RSS; and `atrest status` of every resource.
# It prints markdown tables to stdout and writes nothing into the tree.
#
#   SCALE=1 benches/etcd.sh [N ...]   # default: 100000 1000000
#
# The scale mode: for each etcd server in ATREST_BENCH_ETCD (paths, space-separated; default
# the `etcd` on PATH) and each N, a fresh etcd loaded with N small Secrets (SIZE bytes, 300 by
# default, over NAMESPACES namespaces, 200; BATCH puts per transaction, 100), compacted and
# defragmented, then, in one run on the same data: `etcdctl get --prefix -w protobuf` of the
# Secrets, `atrest audit -o json`, `atrest status -o json`, `atrest audit --snapshot -o json`
# of an `etcdctl snapshot save`, the prune check of `atrest config rotate --stage prune` (and
# `atrest rewrite` with SCALE_REWRITE=1), each the best wall time of RUNS after one warm-up,
# with its largest peak RSS (GNU time). It prints one table per
# etcd server, writes the figures as TSV to SCALE_TSV (when set) and, with CHART=FILE.svg,
# draws time and peak RSS against N into FILE.svg (benches/chart.py).
#
# Environment: RUNS (3), WRITE_RUNS (3), CONCURRENCY (64), CONFIG
# (examples/encryption-config.yaml). Needs etcd, etcdctl, jq, /usr/bin/time (GNU, for -v),
# python3 (free ports, the chart).
set -euo pipefail
cd "$(dirname "$0")/.."

scale=${SCALE:-}
sizes=("$@")
if [ ${#sizes[@]} -eq 0 ]; then
  if [ -n "$scale" ]; then sizes=(100000 1000000); else sizes=(10000 50000); fi
fi
etcd_bin=etcd
runs=${RUNS:-3}
write_runs=${WRITE_RUNS:-3}
concurrency=${CONCURRENCY:-64}
config=${CONFIG:-examples/encryption-config.yaml}
prefix=/registry/secrets/

for tool in etcd etcdctl jq python3; do
  command -v "$tool" >/dev/null || { echo "benches/etcd.sh needs $tool" >&2; exit 2; }
done
# (Not `| grep -q`: grep quitting early could fail the pipe under pipefail.)
[[ "$(/usr/bin/time -v true 2>&1)" == *'Maximum resident'* ]] ||
  { echo "benches/etcd.sh needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }

log() { printf '%s\n' "$*" >&2; }

log "building release binaries"
cargo build --release --examples --bins --quiet
atrest=$PWD/target/release/atrest
load=$PWD/target/release/examples/bench_load

dir=$(mktemp -d)
pid=""
stop_etcd() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
trap 'stop_etcd; rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_etcd() { # $1: data dir
  client="http://127.0.0.1:$(port)"
  peer="http://127.0.0.1:$(port)"
  "$etcd_bin" --name bench --data-dir "$1" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "bench=$peer" --quota-backend-bytes 8589934592 \
    --log-level error >"$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    etcdctl --endpoints "$client" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "etcd did not start:"; cat "$1.log" >&2; exit 3
}

revision() {
  etcdctl --endpoints "$client" endpoint status -w json | jq '.[0].Status.header.revision'
}

# Loads (or reloads: the same keys, values and mix) N Secrets, then compacts and defragments so
# every measurement sees the same database shape.
load_data() { # $1: N
  if [ -n "$scale" ]; then
    "$load" load "$client" "$config" "$1" 32 "${SIZE:-300}" "${NAMESPACES:-200}" "${BATCH:-100}" >&2
  else
    "$load" load "$client" "$config" "$1" 64 >&2
  fi
  etcdctl --endpoints "$client" --command-timeout 600s compact "$(revision)" --physical >/dev/null
  etcdctl --endpoints "$client" --command-timeout 600s defrag >/dev/null
}

hz=$(getconf CLK_TCK)
etcd_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }

# Runs a command once under /usr/bin/time -v with stdout to $out (default /dev/null).
# Sets: secs (wall, from EPOCHREALTIME), rss_kib, cpu (the command's user + system seconds),
# etcd_cpu (etcd's user + system seconds meanwhile), rc. Exit codes other than $ok (default 0)
# abort the benchmark.
timed() {
  local out=${out:-/dev/null} ok=${ok:-0} t0 t1 e0 e1
  e0=$(etcd_ticks)
  t0=$EPOCHREALTIME
  rc=0
  /usr/bin/time -v -o "$dir/time.txt" "$@" >"$out" 2>"$dir/stderr.txt" || rc=$?
  t1=$EPOCHREALTIME
  e1=$(etcd_ticks)
  if ! [[ " $ok " == *" $rc "* ]]; then
    log "command failed (exit $rc): $*"; cat "$dir/stderr.txt" >&2; exit 1
  fi
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  rss_kib=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$dir/time.txt")
  cpu=$(awk -F': ' '/(User|System) time/ { t += $2 } END { printf "%.2f", t }' "$dir/time.txt")
  etcd_cpu=$(awk -v a="$e0" -v b="$e1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')
}

# Keeps the fastest run's figures in <name>_secs, _cpu, _etcd and the largest RSS in _rss.
keep() { # $1: result name
  local best_var=${1}_secs rss_var=${1}_rss
  if [ -z "${!best_var:-}" ] || [ "$(awk -v a="${!best_var}" -v b="$secs" 'BEGIN { print (b < a) }')" = 1 ]; then
    printf -v "${1}_secs" '%s' "$secs"
    printf -v "${1}_cpu" '%s' "$cpu"
    printf -v "${1}_etcd" '%s' "$etcd_cpu"
  fi
  if [ -z "${!rss_var:-}" ] || [ "$rss_kib" -gt "${!rss_var}" ]; then
    printf -v "${1}_rss" '%s' "$rss_kib"
  fi
}

# Best wall time of $runs (after one warm-up) and the largest peak RSS over those runs.
best_of() { # $1: result name; rest: command
  local name=$1
  shift
  unset "${name}_secs" "${name}_rss"
  timed "$@"
  for _ in $(seq "$runs"); do
    timed "$@"
    keep "$name"
  done
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { if [ "$1" = 1 ]; then echo "met"; else echo "**not met**"; fi; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? 1 : 0 }'; }

machine() {
  echo "$(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), \
$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, \
atrest $(git describe --always --dirty 2>/dev/null || echo '?')."
}

# The scale mode (SCALE=1): see the header.
scale_run() {
  local tsv=${SCALE_TSV:-$dir/scale.tsv} bins=() version n
  read -r -a bins <<<"${ATREST_BENCH_ETCD:-$(command -v etcd)}"
  printf 'etcd\tentries\tcommand\tsecs\trss_kib\tcpu\tetcd_cpu\tload\n' >"$tsv"
  echo "# atrest at scale: ${SIZE:-300}-byte Secrets in ${NAMESPACES:-200} namespaces"
  echo
  echo "$(machine) Best of $runs after one warm-up; peak RSS is the largest over the timed runs; \
load is the 1-minute load average before each command."
  for etcd_bin in "${bins[@]}"; do
    version=$("$etcd_bin" --version | awk 'NR == 1 { print $3 }')
    echo
    echo "## etcd $version ($etcd_bin)"
    echo
    echo "| entries | command | wall time | peak RSS | CPU (command) | CPU (etcd) | load | result |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for n in "${sizes[@]}"; do
      log "== etcd $version, N=$n: loading"
      start_etcd "$dir/etcd-$n"
      ep=(--endpoints "$client")
      load_data "$n"
      etcdctl "${ep[@]}" --command-timeout 600s snapshot save "$dir/snap-$n.db" >/dev/null 2>&1
      local names=() cmds=()
      row() { # $1: name, $2: label; rest: command
        local name=$1 label=$2 load1
        shift 2
        load1=$(awk '{ print $1 }' /proc/loadavg)
        if [ "$name" = rewrite ]; then
          # Once: a second run would find nothing left to rewrite.
          unset rewrite_secs rewrite_rss
          ok="0 1" out="$dir/rewrite.json" timed "$@"
          keep rewrite
        else
          ok="0 1" best_of "$name" "$@"
        fi
        local s=${name}_secs r=${name}_rss c=${name}_cpu e=${name}_etcd
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$version" "$n" "$label" "${!s}" "${!r}" \
          "${!c}" "${!e}" "$load1" >>"$tsv"
        local vs="-"
        case $name in
          dump) ;;
          rewrite)
            local rewritten
            rewritten=$(jq '.rewritten' "$dir/rewrite.json")
            vs="$rewritten rewritten, $(awk -v n="$rewritten" -v s="${!s}" 'BEGIN { printf "%.0f", n / s }')/s" ;;
          *) vs="$(ratio "${!s}" "$dump_secs")× etcdctl" ;;
        esac
        echo "| $n | $label | ${!s} s | $(mib "${!r}") | ${!c} s | ${!e} s | $load1 | $vs |"
      }
      log "== etcd $version, N=$n: reads"
      row dump "etcdctl get -w protobuf" etcdctl "${ep[@]}" --command-timeout 600s get --prefix "$prefix" -w protobuf
      row audit "atrest audit" "$atrest" audit "${ep[@]}" --config "$config" -o json
      row status "atrest status" "$atrest" status "${ep[@]}" --config "$config" -o json
      row snap "atrest audit --snapshot" "$atrest" audit --snapshot "$dir/snap-$n.db" --config "$config" -o json
      # The prune check of `config rotate --stage prune` (one third of the entries still need
      # key1, so the prune is refused, exit 1, and the copy of the config is left as it was).
      cp "$config" "$dir/prune.yaml"
      row prune "atrest config rotate --stage prune" "$atrest" config rotate --stage prune \
        --no-backup "$dir/prune.yaml" "${ep[@]}" -o json
      rm -f "$dir/snap-$n.db"
      if [ -n "${SCALE_REWRITE:-}" ]; then
        log "== etcd $version, N=$n: rewrite"
        row rewrite "atrest rewrite" "$atrest" rewrite "${ep[@]}" --config "$config" \
          --concurrency "$concurrency" -o json
      fi
      stop_etcd
      rm -rf "$dir/etcd-$n" "$dir/etcd-$n.log"
    done
  done
  if [ -n "${CHART:-}" ]; then
    python3 benches/chart.py "$tsv" "$CHART"
    log "chart: $CHART"
  fi
}

if [ -n "$scale" ]; then
  scale_run
  exit 0
fi

echo "# atrest whole-command benchmark"
echo
echo "$(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), \
$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, \
$(etcd --version | awk 'NR == 1 { print "etcd " $3 }'), atrest $(git describe --always --dirty 2>/dev/null || echo '?'). \
Reads: best of $runs after one warm-up; writes: best of $write_runs, each on freshly loaded data."

for n in "${sizes[@]}"; do
  log "== N=$n: starting etcd"
  start_etcd "$dir/etcd-$n"
  ep=(--endpoints "$client")
  load_data "$n"
  db=$(etcdctl "${ep[@]}" endpoint status -w json | jq '.[0].Status.dbSize')

  log "== N=$n: reads"
  dump_bytes=$(etcdctl "${ep[@]}" get --prefix "$prefix" -w protobuf | wc -c)
  best_of dump etcdctl "${ep[@]}" get --prefix "$prefix" -w protobuf
  # Exit 1 is expected: a third of the entries are plaintext (findings).
  ok="0 1" best_of audit "$atrest" audit "${ep[@]}" --config "$config" -o json
  out="$dir/audit.json" ok="0 1" timed "$atrest" audit "${ep[@]}" --config "$config" -o json
  audited=$(jq '.summary.total' "$dir/audit.json")
  report_bytes=$(wc -c <"$dir/audit.json")

  etcdctl "${ep[@]}" snapshot save "$dir/snap-$n.db" >/dev/null 2>&1
  snap_bytes=$(wc -c <"$dir/snap-$n.db")
  ok="0 1" best_of snap "$atrest" audit --snapshot "$dir/snap-$n.db" --config "$config" -o json
  rm -f "$dir/snap-$n.db"

  log "== N=$n: writes"
  unset rewrite_secs rewrite_rss base_secs base_rss
  rewritten=0 written=0
  for r in $(seq "$write_runs"); do
    [ "$r" = 1 ] || load_data "$n"
    out="$dir/rewrite.json" timed "$atrest" rewrite "${ep[@]}" --config "$config" \
      --concurrency "$concurrency" -o json
    rewritten=$(jq '.rewritten' "$dir/rewrite.json")
    if [ "$(jq '.conflicts + .failed + .skipped' "$dir/rewrite.json")" != 0 ]; then
      log "rewrite left entries behind:"; jq -c 'del(.entries)' "$dir/rewrite.json" >&2; exit 1
    fi
    keep rewrite

    load_data "$n"
    out="$dir/baseline.txt" timed "$load" baseline "$client" "$config" "$concurrency" "$prefix"
    written=$(awk '{ print $2 }' "$dir/baseline.txt")
    keep base
  done
  # Every resource: the same N Secrets beside N other objects (ConfigMaps, Deployments,
  # Services, a custom resource), audited with the config's providers under `*.*`.
  log "== N=$n: *.* audit beside $n other objects"
  load_data "$n"
  "$load" others "$client" "$n" 64 >&2
  etcdctl "${ep[@]}" --command-timeout 600s compact "$(revision)" --physical >/dev/null
  etcdctl "${ep[@]}" --command-timeout 600s defrag >/dev/null
  sed "s/- secrets\$/- '*.*'/" "$config" >"$dir/all.yaml"
  grep -q "'\*\.\*'" "$dir/all.yaml" || { log "could not make a *.* config from $config"; exit 1; }
  ok="0 1" best_of secrets_only "$atrest" audit "${ep[@]}" --config "$config" -o json
  ok="0 1" best_of all "$atrest" audit "${ep[@]}" --config "$dir/all.yaml" -o json
  out="$dir/all.json" ok="0 1" timed "$atrest" audit "${ep[@]}" --config "$dir/all.yaml" -o json
  all_entries=$(jq '.summary.total' "$dir/all.json")
  # status by resource: the same scan, counted per config key instead of listed per entry.
  ok="0 1" best_of all_status "$atrest" status "${ep[@]}" --config "$dir/all.yaml" -o json
  stop_etcd
  rm -rf "$dir/etcd-$n"
  secrets_eps=$(awk -v n="$n" -v s="$secrets_only_secs" 'BEGIN { printf "%.0f", n / s }')
  all_eps=$(awk -v n="$all_entries" -v s="$all_secs" 'BEGIN { printf "%.0f", n / s }')
  all_ratio=$(awk -v a="$all_eps" -v b="$secrets_eps" 'BEGIN { printf "%.0f", 100 * a / b }')

  rewrite_tps=$(awk -v n="$rewritten" -v s="$rewrite_secs" 'BEGIN { printf "%.0f", n / s }')
  base_tps=$(awk -v n="$written" -v s="$base_secs" 'BEGIN { printf "%.0f", n / s }')
  audit_ratio=$(ratio "$audit_secs" "$dump_secs")
  write_ratio=$(awk -v a="$rewrite_tps" -v b="$base_tps" 'BEGIN { printf "%.0f", 100 * a / b }')

  echo
  echo "## $n Secrets"
  echo
  echo "Loaded: $audited entries under $prefix, db $(mib $((db / 1024))) after compaction and defrag; \
etcdctl dump $(mib $((dump_bytes / 1024))), audit report $(mib $((report_bytes / 1024))), \
snapshot $(mib $((snap_bytes / 1024)))."
  echo
  echo "| command | wall time | peak RSS | CPU (command) | CPU (etcd) | result |"
  echo "| --- | --- | --- | --- | --- | --- |"
  echo "| \`etcdctl get --prefix $prefix -w protobuf\` (floor) | ${dump_secs} s | $(mib "$dump_rss") | ${dump_cpu} s | ${dump_etcd} s | $n entries |"
  echo "| \`atrest audit -o json\` (live) | ${audit_secs} s | $(mib "$audit_rss") | ${audit_cpu} s | ${audit_etcd} s | ${audit_ratio}× the floor |"
  echo "| \`atrest audit --snapshot -o json\` | ${snap_secs} s | $(mib "$snap_rss") | ${snap_cpu} s | - | $(ratio "$snap_secs" "$audit_secs")× the live audit |"
  echo "| \`atrest rewrite --concurrency $concurrency -o json\` | ${rewrite_secs} s | $(mib "$rewrite_rss") | ${rewrite_cpu} s | ${rewrite_etcd} s | $rewritten rewritten, $rewrite_tps entries/s |"
  echo "| baseline: CAS transactions, concurrency $concurrency | ${base_secs} s | $(mib "$base_rss") | ${base_cpu} s | ${base_etcd} s | $written written, $base_tps txn/s |"
  echo "| \`atrest audit -o json\` beside $n other objects (Secrets only) | ${secrets_only_secs} s | $(mib "$secrets_only_rss") | ${secrets_only_cpu} s | ${secrets_only_etcd} s | $secrets_eps entries/s |"
  echo "| \`atrest audit -o json\`, config under \`*.*\` | ${all_secs} s | $(mib "$all_rss") | ${all_cpu} s | ${all_etcd} s | $all_entries entries, $all_eps entries/s |"
  echo "| \`atrest status -o json\`, config under \`*.*\` | ${all_status_secs} s | $(mib "$all_status_rss") | ${all_status_cpu} s | ${all_status_etcd} s | $(awk -v n="$all_entries" -v s="$all_status_secs" 'BEGIN { printf "%.0f", n / s }') entries/s |"
  echo
  echo "| target | measured | verdict |"
  echo "| --- | --- | --- |"
  echo "| live audit ≤ 1.2× the etcdctl dump | ${audit_ratio}× | $(verdict "$(le "$audit_ratio" 1.2)") |"
  echo "| live audit peak RSS ≤ 64 MiB | $(mib "$audit_rss") | $(verdict "$(le "$audit_rss" 65536)") |"
  echo "| rewrite ≥ 70% of the baseline's throughput | ${write_ratio}% | $(verdict "$(le 70 "$write_ratio")") |"
  echo "| \`*.*\` audit of $all_entries entries ≥ 90% of the Secrets-only audit's entries/s | $all_eps vs $secrets_eps entries/s (${all_ratio}%), $(mib "$all_rss") | $(verdict "$(le 90 "$all_ratio")") |"
  echo "| \`*.*\` audit peak RSS ≤ 64 MiB | $(mib "$all_rss") | $(verdict "$(le "$all_rss" 65536)") |"
  echo "| snapshot audit faster than the live audit | ${snap_secs} s vs ${audit_secs} s | $(verdict "$(awk -v a="$snap_secs" -v b="$audit_secs" 'BEGIN { print (a < b) ? 1 : 0 }')") |"
done
echo
echo "(The targets are set for 50,000 entries; smaller runs are shown against the same bars.
Wall times are the fastest run; CPU columns are user + system seconds of that run, for the
command and for etcd meanwhile; peak RSS is the largest over the timed runs.)"
