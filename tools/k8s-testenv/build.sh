#!/usr/bin/env bash
# Builds kube-apiserver, etcd, kubectl and helm from the Go modules here into one folder
# (default: <repo>/target/k8s/bin; the first argument overrides it). Never commit the output.
#
# Idempotent: exits at once when the folder's stamp matches versions.env. A cold build on 2 cores
# takes a long while (see README.md); later builds reuse Go's build cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../../target/k8s/bin"}
# shellcheck source=versions.env
. "$here/versions.env"

# The machine image installs Go in /usr/local/go; a login shell may not have it on PATH.
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  PATH=/usr/local/go/bin:$PATH
fi
if ! command -v go >/dev/null; then
  echo "build.sh: no 'go' found: install Go >= 1.26 (Debian 12's golang-go is 1.19, too old)" >&2
  exit 2
fi

mkdir -p "$out"
stamp="$out/.versions"
bins=(kube-apiserver etcd kubectl helm)
if [ -f "$stamp" ] && cmp -s "$stamp" "$here/versions.env"; then
  all=1
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || all=0; done
  [ "$all" = 1 ] && { echo "build.sh: up to date in $out"; exit 0; }
fi
rm -f "$stamp"

minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kube_ldflags=""
# Without these stamps the server reports v0.0.0-master and Helm refuses charts whose
# kubeVersion constraint that version does not meet.
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
helm_major=${HELM_VERSION%%.*}
helm_ldflags="-X helm.sh/helm/$helm_major/internal/version.version=$HELM_VERSION -X helm.sh/helm/$helm_major/internal/version.gitTreeState=clean"
# As Helm's Makefile does: the Kubernetes version that client-only commands (`helm template`,
# `helm lint`) assume is the one of the client-go Helm is built with (v0.X -> 1.X). Without it
# they assume v1.20.0 and refuse charts whose kubeVersion asks for more.
helm_k8s_minor=$(cd "$here/helm" && go list -mod=readonly -m -f '{{.Version}}' k8s.io/client-go)
helm_k8s_minor=${helm_k8s_minor#v0.}; helm_k8s_minor=${helm_k8s_minor%%.*}
for pkg in pkg/chartutil pkg/lint/rules; do
  helm_ldflags+=" -X helm.sh/helm/$helm_major/$pkg.k8sVersionMajor=1"
  helm_ldflags+=" -X helm.sh/helm/$helm_major/$pkg.k8sVersionMinor=$helm_k8s_minor"
done

export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
# -trimpath keeps the build cache valid across work trees at different paths.
build() { # name, module dir, ldflags, package
  local start=$SECONDS
  echo "build.sh: building $1 ..."
  (cd "$2" && go build -trimpath -ldflags "-s -w $3" -o "$out/.$1.tmp" "$4")
  mv -f "$out/.$1.tmp" "$out/$1"
  echo "build.sh: built $1 in $((SECONDS - start)) s"
}
build etcd "$here" "" go.etcd.io/etcd/server/v3
build kube-apiserver "$here" "$kube_ldflags" k8s.io/kubernetes/cmd/kube-apiserver
build kubectl "$here" "$kube_ldflags" k8s.io/kubernetes/cmd/kubectl
build helm "$here/helm" "$helm_ldflags" "helm.sh/helm/$helm_major/cmd/helm"
cp "$here/versions.env" "$stamp"
echo "build.sh: all built into $out in $SECONDS s"
