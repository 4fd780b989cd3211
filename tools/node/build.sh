#!/bin/sh
# Builds the node binaries of the test cluster (kubelet, kube-scheduler,
# kube-controller-manager, kube-proxy) from the same Go module as the control
# plane, once, into a cache outside the repository, and prints that directory.
#
# Cache: $PODMUTATE_NODE_CACHE, else $XDG_CACHE_HOME/podmutate/node,
# else ~/.cache/podmutate/node. Build output goes to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
module=$here/../controlplane
K8S_VERSION=$(sed -n 's/^K8S_VERSION=//p' "$module/build.sh")
BINARIES="kubelet kube-scheduler kube-controller-manager kube-proxy"

cache=${PODMUTATE_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/podmutate/node}
out=$cache/kube-$K8S_VERSION

has_all() {
    for b in $BINARIES; do [ -x "$1/$b" ] || return 1; done
}

if has_all "$out"; then
    echo "$out"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "go is not installed: the node binaries are built from Go modules" >&2
    exit 1
fi

cd "$module"
mkdir -p "$out"
tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

export CGO_ENABLED=0
minor=$(echo "$K8S_VERSION" | cut -d. -f2)
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"

for b in $BINARIES; do
    echo "building $b $K8S_VERSION into $out" >&2
    go build -trimpath -ldflags "$ldflags" -o "$tmp/$b" "k8s.io/kubernetes/cmd/$b"
done

# Move into place only when all built, so a half-built cache is never taken for a whole one.
for b in $BINARIES; do mv "$tmp/$b" "$out/"; done
echo "$out"
