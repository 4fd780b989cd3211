# Sourced by the build scripts: where their output is cached, and what they need to build it.

# cache_dir OVERRIDE NAME: the directory named by the variable OVERRIDE when it is set, else
# $XDG_CACHE_HOME/podmutate/NAME, else ~/.cache/podmutate/NAME.
cache_dir() {
    eval "cache_override=\${$1:-}"
    echo "${cache_override:-${XDG_CACHE_HOME:-$HOME/.cache}/podmutate/$2}"
}

# require_go WHAT: exit 1, saying what cannot be built, when Go is not installed.
require_go() {
    if ! command -v go >/dev/null 2>&1; then
        echo "go is not installed: $1 is built from Go modules" >&2
        exit 1
    fi
}

# make_build_dir OUT: sets `tmp` to a fresh directory inside OUT, removed on exit; build there,
# then move the result into place, so that a half-built cache is never taken for a whole one.
make_build_dir() {
    mkdir -p "$1"
    tmp=$(mktemp -d "$1/.build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
}
