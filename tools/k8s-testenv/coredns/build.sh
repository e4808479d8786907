#!/usr/bin/env bash
# Builds CoreDNS (the release go.mod pins, with the plugins main.go imports) into one folder
# (default: <repo>/target/k8s/bin; the first argument overrides it). Never commit the output.
#
# Idempotent: exits at once when the folder's stamp matches go.mod (which pins the version) and
# main.go (which picks the plugins).
# Separate from ../build.sh so that changing CoreDNS never rebuilds the Kubernetes binaries.
# A cold build on 2 cores takes a few minutes; later builds reuse Go's build cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../../../target/k8s/bin"}

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  PATH=/usr/local/go/bin:$PATH
fi
if ! command -v go >/dev/null; then
  echo "coredns/build.sh: no 'go' found: install Go >= 1.26 (Debian 12's golang-go is 1.19, too old)" >&2
  exit 2
fi

mkdir -p "$out"
stamp="$out/.coredns-stamp"
if [ -x "$out/coredns" ] && [ -f "$stamp" ] && cat "$here/go.mod" "$here/main.go" | cmp -s "$stamp" -; then
  echo "coredns/build.sh: up to date in $out"
  exit 0
fi
rm -f "$stamp"
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
start=$SECONDS
echo "coredns/build.sh: building coredns ..."
(cd "$here" && go build -trimpath -ldflags "-s -w" -o "$out/.coredns.tmp" .)
mv -f "$out/.coredns.tmp" "$out/coredns"
cat "$here/go.mod" "$here/main.go" > "$stamp"
echo "coredns/build.sh: built $("$out/coredns" -version | head -1) in $((SECONDS - start)) s into $out"
