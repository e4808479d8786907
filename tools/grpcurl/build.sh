#!/usr/bin/env bash
# Builds grpcurl (the version go.mod pins) for the end-to-end gRPC tests (cli/tests/grpc.rs)
# into one folder (default: <repo>/target/k8s/bin, beside the other Go test tools; the first
# argument overrides it). Never commit the output.
#
# Idempotent: exits at once when the folder's stamp matches go.mod. Concurrent runs (the tests
# call it too, under cargo's parallel test binaries) are serialised by a lock on the folder.
# A cold build on 2 cores takes a few minutes; later builds reuse Go's build cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../../target/k8s/bin"}

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  PATH=/usr/local/go/bin:$PATH
fi
if ! command -v go >/dev/null; then
  echo "grpcurl/build.sh: no 'go' found: install Go >= 1.26 (Debian 12's golang-go is 1.19, too old)" >&2
  exit 2
fi

mkdir -p "$out"
exec 9>"$out/.grpcurl.lock"
flock 9
stamp="$out/.grpcurl-stamp"
if [ -x "$out/grpcurl" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$here/go.mod"; then
  echo "grpcurl/build.sh: up to date in $out"
  exit 0
fi
rm -f "$stamp"
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
start=$SECONDS
echo "grpcurl/build.sh: building grpcurl ..."
version=$(cd "$here" && go list -mod=readonly -m -f '{{.Version}}' github.com/fullstorydev/grpcurl)
(cd "$here" && go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$out/.grpcurl.tmp" \
  github.com/fullstorydev/grpcurl/cmd/grpcurl)
mv -f "$out/.grpcurl.tmp" "$out/grpcurl"
cp "$here/go.mod" "$stamp"
echo "grpcurl/build.sh: built $("$out/grpcurl" -version 2>&1 | head -1) in $((SECONDS - start)) s into $out"
