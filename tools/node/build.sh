#!/bin/sh
# Builds the node binaries of the test cluster (kubelet, kube-scheduler,
# kube-controller-manager, kube-proxy) from the same Go module as the control
# plane, once, into a cache outside the repository, and prints that directory.
#
# Cache: $PODMUTATE_NODE_CACHE, else $XDG_CACHE_HOME/podmutate/node,
# else ~/.cache/podmutate/node. Build output goes to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
KUBE_SH=$here/../controlplane/kube.sh
. "$KUBE_SH"
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

mkdir -p "$out"
tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# shellcheck disable=SC2086  # the names are words
kube_build "$tmp" $BINARIES

# Move into place only when all built, so a half-built cache is never taken for a whole one.
for b in $BINARIES; do mv "$tmp/$b" "$out/"; done
echo "$out"
