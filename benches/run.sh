#!/usr/bin/env bash
# The end-to-end benchmark in one command:
#
#   benches/run.sh
#
# installs nginx and HAProxy with apt-get if they are missing, builds the mesh and the harness
# (release), runs `mesh-bench compare` (every path against direct, nginx and HAProxy; the QUIC
# link against TCP+TLS; control-plane propagation at 10, 1,000 and 10,000 endpoints) and writes
# benches/results/results.md, results.json and latency.svg. About 6 minutes on 2 cores, plus
# the build. Without arguments it also runs the DNS part (dnsperf against the mesh's DNS and
# CoreDNS, about 1 minute; dnsperf is installed and CoreDNS built from its Go module if missing).
# Arguments are passed to `mesh-bench compare` (`--help` lists them, e.g.
# `--rates 1000 --parts e2e`, or `--parts dns` for DNS alone); MESH_BENCH_PROFILE=debug
# measures a debug build instead.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v taskset >/dev/null || need+=(util-linux)
command -v dnsperf >/dev/null || need+=(dnsperf)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

profile=${MESH_BENCH_PROFILE:-release}
case "$profile" in
  release) cargo build --release --locked -p mesh-cli -p mesh-benches ;;
  debug) cargo build --locked -p mesh-cli -p mesh-benches ;;
  *) echo "MESH_BENCH_PROFILE must be release or debug" >&2; exit 2 ;;
esac
bash tools/k8s-testenv/coredns/build.sh
if [ $# -eq 0 ]; then
  set -- --parts e2e,link,control-plane,dns
fi
exec "target/$profile/mesh-bench" compare --out benches/results "$@"
