#!/bin/sh
# Builds the benchmark's controller-runtime peer (main.go, this directory's go.mod) once, into a
# cache outside the repository; prints the path of the binary. The benchmark runs it; CI does not.
#
# Cache: $PODMUTATE_CONTROLLER_RUNTIME_CACHE, else $XDG_CACHE_HOME/podmutate/controller-runtime,
# else ~/.cache/podmutate/controller-runtime. Build output goes to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../tools/cache.sh"
version=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-12)

out=$(cache_dir PODMUTATE_CONTROLLER_RUNTIME_CACHE controller-runtime)/peer-$version
if [ -x "$out/peer" ]; then
    echo "$out/peer"
    exit 0
fi

require_go "the controller-runtime peer"
make_build_dir "$out"
echo "building the controller-runtime peer into $out (a minute or two)" >&2
cd "$here"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/peer" .
mv "$tmp/peer" "$out/peer"
echo "$out/peer"
