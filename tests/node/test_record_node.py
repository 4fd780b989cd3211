"""Record and replay on a real node: the replicas keep the reviews of the job pods the API
server sends them, `kubectl exec ... podmutate record export` takes them out, and `podmutate
replay` says what a changed node selector would do to them, and flags a candidate that would
make them invalid."""

import json
import subprocess
import uuid

import yaml

from tests.helpers import kubectl_binary
from tests.node.conftest import CONFIG, NAMESPACE, admission_only_pod, wait_for, webhook_pods
from tools.harness.processes import PODMUTATE

RECORDING = {**CONFIG, "record": {"enabled": True}}


def exported(cluster, pod):
    """The recording one replica kept, as the tar `podmutate record export -o -` writes."""
    return subprocess.run(
        [
            kubectl_binary(),
            "--kubeconfig",
            cluster.kubeconfig,
            "-n",
            NAMESPACE,
            "exec",
            pod,
            "--",
            "podmutate",
            "record",
            "export",
            "--config",
            "/etc/podmutate/config.yaml",
            "-o",
            "-",
        ],
        capture_output=True,
        timeout=60,
    )


def recordings(cluster, core, directory):
    """Every replica's recording, as tar files in `directory`; how many reviews they hold."""
    import tarfile

    count = 0
    for pod in webhook_pods(core):
        result = exported(cluster, pod.metadata.name)
        if result.returncode != 0:
            continue  # nothing kept there yet
        path = directory / f"{pod.metadata.name}.tar"
        path.write_bytes(result.stdout)
        with tarfile.open(path) as archive:
            count += len(archive.getmembers())
    return count


def replay(tars, current, candidate):
    return subprocess.run(
        [*PODMUTATE, "replay", *tars, "--current", str(current), "--config", str(candidate)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_recording_made_on_the_node_replays_a_new_node_selector_and_flags_an_invalid_candidate(
    podmutate, core, cluster, tmp_path
):
    podmutate.apply(config=RECORDING)
    suffix = uuid.uuid4().hex[:6]
    names = []

    def one_more_kept():
        # The kubelet brings the changed ConfigMap to the replicas' file within a minute or so, and
        # only reviews after that are kept: job pods are created until four have been.
        names.append(f"recorded-{suffix}-{len(names)}")
        core.create_namespaced_pod("default", admission_only_pod(names[-1], f"c-{suffix}"))
        return recordings(cluster, core, tmp_path) >= 4

    try:
        wait_for(one_more_kept, "the replicas to keep four reviews", timeout=240, interval=2)
        tars = [str(path) for path in tmp_path.glob("*.tar")]

        current = tmp_path / "current.yaml"
        current.write_text(yaml.safe_dump(RECORDING))
        moved = tmp_path / "moved.yaml"
        moved.write_text(
            yaml.safe_dump(
                {**RECORDING, "job_types": {**CONFIG["job_types"], "sync": {"node_selector": {"pool": "sync"}}}}
            )
        )
        replayed = replay(tars, current, moved)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        lines = replayed.stdout.splitlines()
        (summary,) = [line for line in lines if line.startswith("sync: ")]
        total = int(summary.split()[1])
        assert total >= 4 and summary == f"sync: {total} pods, {total} change"
        assert '  /spec/nodeSelector/pool: (absent) -> "sync"' in "\n".join(lines)

        invalid = tmp_path / "invalid.yaml"
        invalid.write_text(
            json.dumps({**RECORDING, "job_types": {"default": {"annotations": {"example.com/big": "x" * 300_000}}}})
        )
        flagged = replay(tars, current, invalid)
        assert flagged.returncode == 1, flagged.stdout + flagged.stderr
        problems = [line for line in flagged.stdout.splitlines() if line.startswith("PROBLEM ")]
        assert len(problems) == total and all("would make it invalid" in line for line in problems)
    finally:
        for name in names:
            core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
        podmutate.apply()
