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
. "$here/../cache.sh"
BINARIES="kubelet kube-scheduler kube-controller-manager kube-proxy"

out=$(cache_dir PODMUTATE_NODE_CACHE node)/kube-$K8S_VERSION

has_all() {
    for b in $BINARIES; do [ -x "$1/$b" ] || return 1; done
}

if has_all "$out"; then
    echo "$out"
    exit 0
fi

require_go "the node binaries"
make_build_dir "$out"

# shellcheck disable=SC2086  # the names are words
kube_build "$tmp" $BINARIES

for b in $BINARIES; do mv "$tmp/$b" "$out/"; done
echo "$out"
