#!/usr/bin/env bash
# Regenerates examples/cluster.snapshot: starts a throwaway etcd on loopback, writes the
# Secrets of examples/seed_cluster.rs (plaintext, current, stale, unknown-key, damaged, with
# history), and saves a snapshot with etcdctl. Needs etcd and etcdctl (apt-get install
# etcd-server etcd-client).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client="http://127.0.0.1:$(port)"
peer="http://127.0.0.1:$(port)"
etcd --name example --data-dir "$dir/data" \
  --listen-client-urls "$client" --advertise-client-urls "$client" \
  --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
  --initial-cluster "example=$peer" --log-level error >"$dir/etcd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  etcdctl --endpoints "$client" endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done
cargo run --quiet --example seed_cluster -- "$client" examples/encryption-config.yaml
etcdctl --endpoints "$client" snapshot save "$dir/cluster.snapshot" >/dev/null 2>&1
mv "$dir/cluster.snapshot" examples/cluster.snapshot
ls -l examples/cluster.snapshot
