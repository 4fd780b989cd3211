#!/bin/sh
# Makes the images the test node runs, without a registry, as OCI archives in a cache outside
# the repository, and prints that directory:
#   busybox.tar    docker.io/library/busybox:1.35, from Debian's static busybox
#   pause.tar      registry.k8s.io/pause:3.10.1, from Kubernetes' own pause.c
#   python.tar     docker.io/library/python:3.11-slim stand-in (debootstrap), the Dockerfile's base
#   podmutate.tar  localhost/podmutate:dev, built from the repository's Dockerfile
#   keycloak.tar   localhost/podmutate-keycloak:dev, that image with examples/podmutate-keycloak
#                  installed by its own Containerfile
# The first three are made once; the project images are rebuilt each time (their layers are cached).
#
# Cache: $PODMUTATE_IMAGE_CACHE, else $XDG_CACHE_HOME/podmutate/images, else ~/.cache/podmutate/images.
# Needs root, buildah, busybox-static, debootstrap, gcc and Go (for the pause.c source).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${PODMUTATE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/podmutate/images}
mkdir -p "$out"

BUSYBOX=docker.io/library/busybox:1.35
PAUSE=registry.k8s.io/pause:3.10.1
PYTHON=docker.io/library/python:3.11-slim
PODMUTATE=${PODMUTATE_IMAGE:-localhost/podmutate:dev}
KEYCLOAK=localhost/podmutate-keycloak:dev

# buildah's RUN steps would otherwise create podman's default CNI bridge on 10.88.0.0/16.
export BUILDAH_ISOLATION=chroot

archive() {  # archive IMAGE FILE: an OCI archive whose index names the image, as `ctr import` wants
    rm -f "$2.tmp"
    buildah push --quiet "$1" "oci-archive:$2.tmp:$1" >&2
    mv "$2.tmp" "$2"
}

if [ ! -s "$out/busybox.tar" ]; then
    echo "making $BUSYBOX" >&2
    ctr=$(buildah from scratch)
    mnt=$(buildah mount "$ctr")
    mkdir -p "$mnt/bin" "$mnt/etc" "$mnt/tmp"
    chmod 1777 "$mnt/tmp"
    cp /bin/busybox "$mnt/bin/busybox"
    for applet in $("$mnt/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$mnt/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$mnt/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"$mnt/etc/group"
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=/bin --cmd sh "$ctr"
    buildah commit --quiet --rm "$ctr" "$BUSYBOX" >/dev/null
    archive "$BUSYBOX" "$out/busybox.tar"
fi

if [ ! -s "$out/pause.tar" ]; then
    echo "making $PAUSE" >&2
    k8s=$(cd "$here/../controlplane" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
    ctr=$(buildah from scratch)
    mnt=$(buildah mount "$ctr")
    gcc -Os -Wall -Werror -static -DVERSION=v3.10.1 -o "$mnt/pause" "$k8s/build/pause/linux/pause.c"
    buildah umount "$ctr" >/dev/null
    buildah config --user 65535:65535 --entrypoint '["/pause"]' "$ctr"
    buildah commit --quiet --rm "$ctr" "$PAUSE" >/dev/null
    archive "$PAUSE" "$out/pause.tar"
fi

if ! buildah inspect --type image "$PYTHON" >/dev/null 2>&1; then
    if [ -s "$out/python.tar" ]; then
        buildah pull --quiet "oci-archive:$out/python.tar" >/dev/null
    else
        echo "making the $PYTHON stand-in (debootstrap, a few minutes)" >&2
        ctr=$(buildah from scratch)
        mnt=$(buildah mount "$ctr")
        debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
            bookworm "$mnt" >&2
        # The registries may be reached through a TLS-intercepting proxy whose CA the host trusts.
        if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
            cp /usr/local/share/ca-certificates/*.crt "$mnt/usr/local/share/ca-certificates/"
            chroot "$mnt" update-ca-certificates >&2
        fi
        rm -f "$mnt"/usr/lib/python3.*/EXTERNALLY-MANAGED
        for tool in python python3; do ln -sf /usr/bin/python3 "$mnt/usr/local/bin/$tool"; done
        for tool in pip pip3; do ln -sf /usr/bin/pip3 "$mnt/usr/local/bin/$tool"; done
        rm -rf "$mnt"/var/cache/apt/archives/*.deb "$mnt"/var/lib/apt/lists/*
        buildah umount "$ctr" >/dev/null
        buildah config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
            --env LANG=C.UTF-8 --cmd python3 "$ctr"
        buildah commit --quiet --rm "$ctr" "$PYTHON" >/dev/null
        archive "$PYTHON" "$out/python.tar"
    fi
fi

echo "building $PODMUTATE from $repo/Dockerfile" >&2
buildah bud --quiet --pull-never --layers --network host -t "$PODMUTATE" -f "$repo/Dockerfile" "$repo" >&2
archive "$PODMUTATE" "$out/podmutate.tar"

echo "building $KEYCLOAK from examples/podmutate-keycloak/Containerfile" >&2
buildah bud --quiet --pull-never --layers --network host --build-arg "PODMUTATE_IMAGE=$PODMUTATE" -t "$KEYCLOAK" \
    -f "$repo/examples/podmutate-keycloak/Containerfile" "$repo/examples/podmutate-keycloak" >&2
archive "$KEYCLOAK" "$out/keycloak.tar"
echo "$out"
