#!/bin/sh
# Generates the prometheus-operator's CRDs (ServiceMonitor, PrometheusRule, ...) from its API
# module with controller-gen, once, into a cache outside the repository, and prints the directory.
# The tests install them into the test API server to check manifests/overlays/monitoring.
#
# Cache: $PODMUTATE_MONITORING_CACHE, else $XDG_CACHE_HOME/podmutate/monitoring, else
# ~/.cache/podmutate/monitoring. Build output goes to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../cache.sh"
MODULE=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring
VERSION=$(sed -n "s|^\(require \)\{0,1\}[[:space:]]*$MODULE \(v[^ ]*\).*|\2|p" "$here/go.mod")

cache=$(cache_dir PODMUTATE_MONITORING_CACHE monitoring)
out=$cache/crds-$VERSION
if [ -s "$out/monitoring.coreos.com_servicemonitors.yaml" ] && [ -s "$out/monitoring.coreos.com_prometheusrules.yaml" ]; then
    echo "$out"
    exit 0
fi

require_go "the prometheus-operator's CRDs"
make_build_dir "$cache"
echo "generating the prometheus-operator $VERSION CRDs into $out" >&2
(cd "$here" && go tool controller-gen crd:allowDangerousTypes=true paths="$MODULE/v1" output:crd:dir="$tmp") >&2
rm -rf "$out"
mv "$tmp" "$out"
echo "$out"
