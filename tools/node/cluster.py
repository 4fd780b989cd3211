"""A real one-node Kubernetes cluster for the tests: containerd, etcd, the control plane, a kubelet.

    python -m tools.node.cluster up [--dir DIR]     # start; prints KUBECONFIG=...
    python -m tools.node.cluster down [--dir DIR]   # stop, and undo what the node did to the host

The binaries come from tools/controlplane/build.sh and tools/node/build.sh, the images from
tools/node/images.sh. Everything the cluster keeps is under DIR, except what the kernel and
the runtime keep globally (network namespaces, the cni0 bridge, iptables chains, cgroups,
containerd's shim sockets): `down` removes those too, so that two runs in a row work.
Needs root, containerd, runc, Debian's CNI plugins and iptables.
"""

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certs import CA, key_pem, new_key
from tools.harness.controlplane import apiserver_command, etcd_command, kubeconfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(REPO, "tools")
DEFAULT_DIR = os.path.join(os.environ.get("TMPDIR", "/tmp"), "podmutate-node")

NODE_NAME = "podmutate-node"
NODE_IP = "10.254.0.1"  # on lo: a node address of its own, the host's network untouched
POD_CIDR = "10.244.0.0/16"  # not 10.88/16: buildah's default CNI network lives there
SERVICE_CIDR = "10.0.0.0/24"
API_SERVICE_IP = "10.0.0.1"
API_PORT = 6443
BRIDGE = "cni0"
CNI_BIN = "/usr/lib/cni"
TOKEN = "podmutate-node-token"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
IMAGES = ("busybox.tar", "pause.tar", "podmutate.tar", "keycloak.tar")
PROCESSES = (
    "containerd",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)
OWNED_CHAINS = ("KUBE-", "CNI-")
CGROUP_ROOT = "/sys/fs/cgroup"


class ClusterError(RuntimeError):
    """The cluster could not start, or the machine cannot run it."""


def unavailable_reason():
    """Why this machine cannot run the node, or None when it can."""
    if os.geteuid() != 0:
        return "the node tests need root (containerd, network namespaces, iptables)"
    for tool in ("containerd", "runc", "iptables", "buildah", "ip"):
        if shutil.which(tool) is None:
            return f"the node tests need {tool} (.ci/run installs it from Debian's packages)"
    if not os.path.exists(os.path.join(CNI_BIN, "bridge")):
        return f"the node tests need the CNI plugins in {CNI_BIN} (Debian's containernetworking-plugins)"
    if shutil.which("go") is None:
        return "the node tests need Go to build the node binaries"
    return None


def run(*command, check=True, **options):
    result = subprocess.run(command, capture_output=True, text=True, **options)
    if check and result.returncode != 0:
        raise ClusterError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


def build(script):
    """The directory a tools/ build script prints (building on first use)."""
    result = subprocess.run([os.path.join(TOOLS, script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"tools/{script} failed:\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


class Cluster:
    """One node: start() brings it up (node Ready, default ServiceAccount there); stop() undoes it."""

    def __init__(self, workdir=DEFAULT_DIR):
        self.workdir = os.path.abspath(workdir)
        self.state = os.path.join(self.workdir, "state")
        self.pki = os.path.join(self.workdir, "pki")
        self.logs = os.path.join(self.workdir, "logs")
        self.kubeconfig = os.path.join(self.workdir, "kubeconfig")
        self.containerd_socket = os.path.join(self.state, "containerd", "containerd.sock")
        self.url = f"https://{NODE_IP}:{API_PORT}"
        self.timings = {}

    # ---------------------------------------------------------------- start

    def start(self, timeout=120):
        reason = unavailable_reason()
        if reason:
            raise ClusterError(reason)
        started = time.monotonic()
        self.stop()  # whatever an earlier run left behind
        shutil.rmtree(self.state, ignore_errors=True)
        controlplane = build("controlplane/build.sh")
        node = build("node/build.sh")
        images = build("node/images.sh")
        self.timings["build"] = time.monotonic() - started
        started = time.monotonic()
        for directory in (self.state, self.pki, self.logs):
            os.makedirs(directory, exist_ok=True)
        self._prepare_host()
        self._write_pki()
        self._start_containerd()
        for image in IMAGES:
            self.ctr("images", "import", os.path.join(images, image))
        self._start_etcd(controlplane)
        self._start_apiserver(controlplane)
        self._wait(lambda: self._get("/readyz"), "kube-apiserver", timeout)
        self._start_controllers(node)
        self._start_kubelet(node)
        self._start_kube_proxy(node)
        self._wait(self._node_ready, "kubelet", timeout)
        self._wait(
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default"), "kube-controller-manager", timeout
        )
        self.timings["start"] = time.monotonic() - started
        return self

    def _prepare_host(self):
        if shutil.which("modprobe"):  # built into some kernels, so a failure here is not final
            for module in ("br_netfilter", "overlay"):
                run("modprobe", module, check=False)
        for key, value in (("net.ipv4.ip_forward", "1"), ("net.bridge.bridge-nf-call-iptables", "1")):
            with open(f"/proc/sys/{key.replace('.', '/')}", "w") as stream:
                stream.write(value)
        run("ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
        os.makedirs("/var/lib/kubelet/device-plugins", exist_ok=True)

    def _pki_path(self, name):
        return os.path.join(self.pki, name)

    def _write(self, name, data, directory=None):
        path = os.path.join(directory or self.pki, name)
        with open(path, "wb" if isinstance(data, bytes) else "w") as stream:
            stream.write(data)
        os.chmod(path, 0o600)
        return path

    def _write_pki(self):
        ca = CA.create("podmutate node CA")
        self._write("ca.crt", ca.cert_pem())
        self._write("ca.key", ca.key_pem())
        serving = ca.issue(
            NODE_IP,
            "127.0.0.1",
            API_SERVICE_IP,
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
        self._write("apiserver.crt", serving.cert_pem())
        self._write("apiserver.key", serving.key_pem())
        for name, common_name, organization in (
            ("kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
            ("front-proxy-client", "front-proxy-client", None),
        ):
            client = ca.issue_client(common_name, organization)
            self._write(f"{name}.crt", client.cert_pem())
            self._write(f"{name}.key", client.key_pem())
        sa_key = new_key("rsa")
        self._write("sa.key", key_pem(sa_key))
        self._write("sa.pub", sa_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        self._write("tokens.csv", f'{TOKEN},admin,admin-uid,"system:masters"\n')
        self._write(
            "kubeconfig", json.dumps(kubeconfig("node", self.url, ca.cert_pem(), TOKEN)), directory=self.workdir
        )

    def _spawn(self, name, command):
        log = open(os.path.join(self.logs, f"{name}.log"), "ab")
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.workdir,
        )
        log.close()
        with open(os.path.join(self.workdir, f"{name}.pid"), "w") as stream:
            stream.write(str(process.pid))
        return process

    def _start_containerd(self):
        root = os.path.join(self.state, "containerd")
        net_d = os.path.join(self.state, "cni", "net.d")
        os.makedirs(net_d, exist_ok=True)
        self._write(
            "10-podnet.conflist",
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "podnet",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": True,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "dataDir": os.path.join(self.state, "cni", "ipam"),
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                }
            ),
            directory=net_d,
        )
        # restrict_oom_score_adj: root may lack CAP_SYS_RESOURCE (as in some sandboxes), and runc
        # then cannot give the pause container its oom_score_adj of -998.
        config = self._write(
            "containerd.toml",
            f"""version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{self.containerd_socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{net_d}"
""",
        )
        process = self._spawn("containerd", ["containerd", "--config", config])
        self._wait(
            lambda: (
                process.poll() is None
                and os.path.exists(self.containerd_socket)
                and run("ctr", "-a", self.containerd_socket, "version", check=False).returncode == 0
            ),
            "containerd",
            30,
        )

    def ctr(self, *args):
        return run("ctr", "-a", self.containerd_socket, "-n", "k8s.io", *args)

    def _start_etcd(self, binaries):
        data_dir = os.path.join(self.state, "etcd")
        self._spawn("etcd", etcd_command(binaries, data_dir, 2379, 2380, "--listen-metrics-urls=http://127.0.0.1:2381"))

    def _start_apiserver(self, binaries):
        pki = self._pki_path
        self._spawn(
            "kube-apiserver",
            apiserver_command(
                binaries,
                etcd_url="http://127.0.0.1:2379",
                port=API_PORT,
                cert_file=pki("apiserver.crt"),
                key_file=pki("apiserver.key"),
                tokens=pki("tokens.csv"),
                sa_key=pki("sa.key"),
                sa_public=pki("sa.pub"),
                service_range=SERVICE_CIDR,
                issuer="https://kubernetes.default.svc.cluster.local",
                extra=[
                    "--bind-address=0.0.0.0",
                    f"--advertise-address={NODE_IP}",
                    f"--client-ca-file={pki('ca.crt')}",
                    "--authorization-mode=Node,RBAC",
                    f"--kubelet-client-certificate={pki('kubelet-client.crt')}",
                    f"--kubelet-client-key={pki('kubelet-client.key')}",
                    "--kubelet-preferred-address-types=InternalIP",
                    f"--requestheader-client-ca-file={pki('ca.crt')}",
                    "--requestheader-allowed-names=front-proxy-client",
                    "--requestheader-username-headers=X-Remote-User",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    f"--proxy-client-cert-file={pki('front-proxy-client.crt')}",
                    f"--proxy-client-key-file={pki('front-proxy-client.key')}",
                    "--enable-aggregator-routing=true",
                    f"--cert-dir={os.path.join(self.state, 'apiserver')}",
                ],
            ),
        )

    def _start_controllers(self, binaries):
        auth = [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                os.path.join(binaries, "kube-controller-manager"),
                *auth,
                f"--service-account-private-key-file={self._pki_path('sa.key')}",
                f"--root-ca-file={self._pki_path('ca.crt')}",
                f"--cluster-signing-cert-file={self._pki_path('ca.crt')}",
                f"--cluster-signing-key-file={self._pki_path('ca.key')}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cluster-cidr={POD_CIDR}",
                "--allocate-node-cidrs=false",
            ],
        )
        self._spawn("kube-scheduler", [os.path.join(binaries, "kube-scheduler"), *auth])

    def _start_kubelet(self, binaries):
        root = os.path.join(self.state, "kubelet")
        os.makedirs(root, exist_ok=True)
        config = self._write(
            "kubelet.yaml",
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "cgroupDriver": "cgroupfs",
                    "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
                    "failSwapOn": False,
                    "failCgroupV1": False,
                    "address": NODE_IP,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": self._pki_path("ca.crt")},
                    },
                    "authorization": {"mode": "Webhook"},
                    "clusterDomain": "cluster.local",
                    "resolvConf": "/etc/resolv.conf",
                    "serializeImagePulls": False,
                    # Never collect the images: there is no registry to pull them again from.
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
                    "podLogsDir": os.path.join(self.state, "pod-logs"),
                    "volumePluginDir": os.path.join(root, "volume-plugins"),
                }
            ),
        )
        self._spawn(
            "kubelet",
            [
                os.path.join(binaries, "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={root}",
                f"--cert-dir={os.path.join(root, 'pki')}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
            ],
        )

    def _start_kube_proxy(self, binaries):
        config = self._write(
            "kube-proxy.yaml",
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": self.kubeconfig},
                    "mode": "iptables",
                    "clusterCIDR": POD_CIDR,
                    "hostnameOverride": NODE_NAME,
                    "bindAddress": NODE_IP,
                    "metricsBindAddress": "127.0.0.1:10249",
                    "healthzBindAddress": "127.0.0.1:10256",
                    "conntrack": {"maxPerCore": 0},  # leave the host's nf_conntrack_max alone
                }
            ),
        )
        self._spawn("kube-proxy", [os.path.join(binaries, "kube-proxy"), f"--config={config}"])

    def _get(self, path):
        """The body of a GET as the cluster admin; None unless it answered 200."""
        context = ssl.create_default_context(cafile=self._pki_path("ca.crt"))
        request = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=3) as response:
                return response.read() if response.status == 200 else None
        except OSError:
            return None

    def _node_ready(self):
        node = json.loads(self._get(f"/api/v1/nodes/{NODE_NAME}") or b"{}")
        conditions = (node.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _wait(self, probe, name, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self._pid(name)
            if pid is None or not _alive(pid):
                raise ClusterError(f"{name} exited:\n{self.tail(name)}")
            if probe():
                return
            time.sleep(0.2)
        raise ClusterError(f"{name} not ready after {timeout}s:\n{self.tail(name)}")

    def _pid(self, name):
        try:
            with open(os.path.join(self.workdir, f"{name}.pid")) as stream:
                return int(stream.read())
        except (OSError, ValueError):
            return None

    def tail(self, name, lines=40):
        try:
            with open(os.path.join(self.logs, f"{name}.log"), encoding="utf-8", errors="replace") as stream:
                return "".join(stream.readlines()[-lines:])
        except OSError:
            return ""

    def memory(self):
        """Resident memory of each component, in bytes."""
        sizes = {}
        for name in PROCESSES:
            pid = self._pid(name)
            try:
                with open(f"/proc/{pid}/status") as stream:
                    for line in stream:
                        if line.startswith("VmRSS:"):
                            sizes[name] = int(line.split()[1]) * 1024
            except (OSError, TypeError):
                pass
        return sizes

    # ---------------------------------------------------------------- stop

    def stop(self):
        """Stop every process and undo what the node did to the host; safe to call at any time."""
        for name in reversed(PROCESSES):  # the kubelet first: it would restart what is killed next
            self._terminate(name)
        self._kill_pods()
        self._kill_shims()
        self._unmount()
        self._remove_network()
        self._remove_cgroups()

    def _terminate(self, name, grace=10):
        pid = self._pid(name)
        if pid is None:
            return
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                while _alive(pid):
                    time.sleep(0.05)
        os.unlink(os.path.join(self.workdir, f"{name}.pid"))

    def _kill_pods(self):
        """SIGKILL every process in the kubelet's pod cgroups: containers and pause alike."""
        for _ in range(3):
            pids = set()
            for directory in _kubepods_cgroups():
                for walk_root, _dirs, files in os.walk(directory):
                    if "cgroup.procs" in files:
                        with open(os.path.join(walk_root, "cgroup.procs")) as stream:
                            pids.update(int(line) for line in stream if line.strip())
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)

    def _kill_shims(self):
        result = run("pgrep", "-f", f"containerd-shim.*{self.containerd_socket}", check=False)
        for line in result.stdout.split():
            try:
                os.kill(int(line), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def _unmount(self):
        """Unmount what containerd and the kubelet mounted under the work dir and for sandboxes."""
        with open("/proc/self/mountinfo") as stream:
            points = [line.split()[4] for line in stream]
        owned = [
            point
            for point in points
            if point.startswith(self.workdir + "/")
            or point.startswith("/run/containerd/")
            or point.startswith("/run/netns/cni-")
            or point.startswith("/var/run/netns/cni-")
        ]
        for point in sorted(set(owned), key=len, reverse=True):
            run("umount", "-l", point, check=False)
        for directory in ("/run/netns", "/var/run/netns"):
            if os.path.isdir(directory):
                for name in os.listdir(directory):
                    if name.startswith("cni-"):
                        try:
                            os.unlink(os.path.join(directory, name))
                        except OSError:
                            pass

    def _remove_network(self):
        run("ip", "link", "delete", BRIDGE, check=False)
        run("ip", "addr", "delete", f"{NODE_IP}/32", "dev", "lo", check=False)
        for save, restore in (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")):
            if shutil.which(save) is None:
                continue
            rules = run(save, check=False).stdout
            kept = without_owned_chains(rules)
            if kept != rules:
                run(restore, input=kept)
        run("ip", "route", "flush", "proto", "kernel", "dev", BRIDGE, check=False)

    def _remove_cgroups(self):
        for directory in _kubepods_cgroups():
            for walk_root, dirs, _files in os.walk(directory, topdown=False):
                for name in dirs:
                    _rmdir(os.path.join(walk_root, name))
            _rmdir(directory)


def without_owned_chains(rules):
    """iptables-save output without the chains the kubelet, kube-proxy and CNI made, nor jumps to them."""
    kept = []
    for line in rules.splitlines():
        if line.startswith(":") and line[1:].startswith(OWNED_CHAINS):
            continue
        words = line.split()
        if line.startswith("-A ") and (
            words[1].startswith(OWNED_CHAINS)
            or any(
                word.startswith(OWNED_CHAINS) for previous, word in zip(words, words[1:]) if previous in ("-j", "-g")
            )
        ):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def _kubepods_cgroups():
    if not os.path.isdir(CGROUP_ROOT):
        return []
    candidates = [os.path.join(CGROUP_ROOT, "kubepods")]  # cgroup v2
    candidates += [os.path.join(CGROUP_ROOT, controller, "kubepods") for controller in os.listdir(CGROUP_ROOT)]
    return [path for path in candidates if os.path.isdir(path)]


def _rmdir(path):
    try:
        os.rmdir(path)
    except OSError:
        pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie left by a parent that has not reaped it yet is not alive
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.node.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"work directory [default: {DEFAULT_DIR}]")
    options = parser.parse_args(argv)
    cluster = Cluster(options.dir)
    try:
        if options.action == "up":
            try:
                cluster.start()
            except ClusterError:
                cluster.stop()
                raise
            print(f"KUBECONFIG={cluster.kubeconfig}")
            print(
                f"node Ready in {cluster.timings['start']:.1f}s (builds and images {cluster.timings['build']:.1f}s)",
                file=sys.stderr,
            )
        else:
            cluster.stop()
    except ClusterError as error:
        sys.exit(f"cluster: {error}")


if __name__ == "__main__":
    main()
