#!/bin/sh
# Builds Kyverno's admission controller from its Go module (this directory's go.mod), once, into
# a cache outside the repository, with the CRDs and the rendered install manifest of the same
# release beside it; prints the directory that holds `kyverno`, `crds/` and `install.yaml`.
# The benchmark runs it; CI does not.
#
# Cache: $PODMUTATE_KYVERNO_CACHE, else $XDG_CACHE_HOME/podmutate/kyverno, else
# ~/.cache/podmutate/kyverno. Build output goes to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../tools/cache.sh"
KYVERNO_VERSION=$(sed -n 's/^[[:space:]]*github.com\/kyverno\/kyverno \(v[^ ]*\).*/\1/p' "$here/go.mod")

out=$(cache_dir PODMUTATE_KYVERNO_CACHE kyverno)/kyverno-$KYVERNO_VERSION
if [ -x "$out/kyverno" ] && [ -d "$out/crds" ] && [ -f "$out/install.yaml" ]; then
    echo "$out"
    exit 0
fi

require_go Kyverno
make_build_dir "$out"
echo "building kyverno $KYVERNO_VERSION into $out (several minutes)" >&2
cd "$here"
CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion=$KYVERNO_VERSION" \
    -o "$tmp/kyverno" github.com/kyverno/kyverno/cmd/kyverno
source=$(go list -m -f '{{.Dir}}' github.com/kyverno/kyverno)
cp -R "$source/config/crds" "$tmp/crds"
cp "$source/config/install-latest-testing.yaml" "$tmp/install.yaml"  # the Helm chart, rendered by Kyverno
chmod -R u+w "$tmp/crds" "$tmp/install.yaml"
rm -rf "$out/crds"
mv "$tmp/kyverno" "$tmp/crds" "$tmp/install.yaml" "$out/"
echo "$out"
