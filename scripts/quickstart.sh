#!/usr/bin/env bash
# atrest's quick start: builds atrest and audits the bundled etcd snapshot
# (examples/cluster.snapshot) with the example config. No etcd server is needed.
# The only system package the build needs is protoc (for etcd-client); it is installed with
# apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null 2>&1; then
  echo "Installing protoc (protobuf-compiler), needed to build the etcd client…" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq protobuf-compiler >/dev/null
fi

cargo build --release --locked --quiet
status=0
./target/release/atrest audit \
  --snapshot examples/cluster.snapshot \
  --config examples/encryption-config.yaml \
  --output table || status=$?
case $status in
  0) echo "(exit status 0: nothing to report)" ;;
  1) echo "(exit status 1: findings — expected for this example cluster)" ;;
  *) echo "(exit status $status: error)"; exit "$status" ;;
esac
echo
echo "The binary is ./target/release/atrest; see README.md for every command."
