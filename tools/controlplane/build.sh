#!/bin/sh
# Builds the test control plane (kube-apiserver and etcd) from Go modules, once,
# into a cache outside the repository, and prints the directory that holds both.
#
# When KUBEBUILDER_ASSETS names a directory with both binaries (as envtest users
# have), that directory is printed and nothing is built.
#
# Cache: $PODMUTATE_CONTROLPLANE_CACHE, else $XDG_CACHE_HOME/podmutate/controlplane,
# else ~/.cache/podmutate/controlplane. Build output goes to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
KUBE_SH=$here/kube.sh
. "$KUBE_SH"
. "$here/../cache.sh"

has_both() {
    [ -x "$1/kube-apiserver" ] && [ -x "$1/etcd" ]
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
    if has_both "$KUBEBUILDER_ASSETS"; then
        echo "$KUBEBUILDER_ASSETS"
        exit 0
    fi
    echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd; building them" >&2
fi

out=$(cache_dir PODMUTATE_CONTROLPLANE_CACHE controlplane)/kube-$K8S_VERSION-etcd-$ETCD_VERSION
if has_both "$out"; then
    echo "$out"
    exit 0
fi

require_go "the control plane (or set KUBEBUILDER_ASSETS to a directory holding kube-apiserver and etcd)"
cd "$here"
make_build_dir "$out"

kube_build "$tmp" kube-apiserver
echo "building etcd $ETCD_VERSION into $out" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3

mv "$tmp/kube-apiserver" "$tmp/etcd" "$out/"
echo "$out"
