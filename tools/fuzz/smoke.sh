#!/usr/bin/env bash
# CI smoke run of the fuzz targets (see fuzz/README.md): installs the nightly toolchain and
# cargo-fuzz when missing, builds every target, then runs each for a few seconds from its
# committed seed corpus. A target that does not build or an input that crashes one fails the
# run; the crashing input is left in fuzz/artifacts/<target>/.
#
#   tools/fuzz/smoke.sh            # 5 seconds per target
#   FUZZ_SECONDS=600 tools/fuzz/smoke.sh stream_header    # a long run of one target
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${FUZZ_SECONDS:-5}"
started=$(date +%s)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
echo "smoke.sh: toolchain and cargo-fuzz ready after $(($(date +%s) - started)) s"

cargo +nightly fuzz build
# fuzz/Cargo.lock is committed (cargo fuzz has no --locked): the build must not have changed it.
if ! git diff --quiet -- fuzz/Cargo.lock 2>/dev/null; then
  echo "smoke.sh: the build changed fuzz/Cargo.lock (a workspace crate's dependencies changed):" \
    "run \`cargo +nightly fuzz build\` and commit fuzz/Cargo.lock" >&2
  exit 1
fi
echo "smoke.sh: targets built after $(($(date +%s) - started)) s"

dict_for() {
  case "$1" in
    *_yaml) echo fuzz/dict/yaml.dict ;;
    catalog_frame | control_api_json) echo fuzz/dict/json.dict ;;
    *) echo "fuzz/dict/$1.dict" ;;
  esac
}

# New inputs go to a scratch corpus (the first directory), never into the committed seeds.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  echo "smoke.sh: $target for ${seconds} s"
  cargo +nightly fuzz run "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -dict="$(dict_for "$target")" -timeout=30 \
    -print_final_stats=1
done
echo "smoke.sh: ${#targets[@]} targets ran without a crash in $(($(date +%s) - started)) s"
