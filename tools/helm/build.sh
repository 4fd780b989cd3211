#!/bin/sh
# Builds the helm CLI from its Go module (this directory's go.mod), once, into a cache outside
# the repository, and prints the path of the binary.
#
# Cache: $PODMUTATE_HELM_CACHE, else $XDG_CACHE_HOME/podmutate/helm, else ~/.cache/podmutate/helm.
# Build output goes to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../cache.sh"
HELM_VERSION=$(sed -n 's/^[[:space:]]*helm.sh\/helm\/v3 \(v[^ ]*\).*/\1/p' "$here/go.mod")

out=$(cache_dir PODMUTATE_HELM_CACHE helm)/helm-$HELM_VERSION
if [ -x "$out/helm" ]; then
    echo "$out/helm"
    exit 0
fi

require_go helm
make_build_dir "$out"
echo "building helm $HELM_VERSION into $out" >&2
(cd "$here" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    -o "$tmp/helm" helm.sh/helm/v3/cmd/helm)
mv "$tmp/helm" "$out/helm"
echo "$out/helm"
