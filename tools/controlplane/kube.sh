# Sourced by the build scripts: the Kubernetes release every binary is built from, and how.
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.4

# kube_build OUT PACKAGE...: `go build` each of k8s.io/kubernetes/cmd/PACKAGE into OUT, from this
# directory's module, with the version stamps a release build has.
kube_build() {
    kube_out=$1  # names of their own: the caller's variables are the same globals
    shift
    kube_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
    kube_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$kube_minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
    for kube_name in "$@"; do
        echo "building $kube_name $K8S_VERSION" >&2
        (cd "$(dirname "$KUBE_SH")" && CGO_ENABLED=0 go build -trimpath -ldflags "$kube_ldflags" \
            -o "$kube_out/$kube_name" "k8s.io/kubernetes/cmd/$kube_name")
    done
}
