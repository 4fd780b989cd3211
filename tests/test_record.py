"""Keeping real reviews, redacted, and replaying them against a candidate configuration (in process)."""

import json
import os
import stat
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import examples
from tests.test_cli import podmutate
from tools.harness.pods import airbyte_pod, review
from tools.harness.processes import wait_for
from webhook import admission
from webhook.app import create_app
from webhook.engine import load_engine
from webhook.ops.record import REDACTED, export_tar, load_recorded, prune, recorded_files, redact, replay, write

SECRET = "s3cr3t-value"
BUILT_IN = load_engine(environ={})


def secret_pod():
    """An Airbyte sync pod carrying every kind of value that must not be kept."""
    pod = airbyte_pod("sync")
    main = pod["spec"]["containers"][0]
    main["env"] += [
        {"name": "DATABASE_PASSWORD", "value": SECRET},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db-secret", "key": "token"}}},
    ]
    main["envFrom"] = [{"secretRef": {"name": "all-secrets"}}]
    main["args"] = [f"--password={SECRET}"]
    pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps({"p": SECRET})
    pod["spec"]["volumes"].append({"name": "creds", "projected": {"sources": [{"secret": {"name": "db-secret"}}]}})
    pod["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    return pod


def test_redaction_leaves_no_secret_and_no_secret_name():
    kept = json.dumps(redact(review(secret_pod())))
    for value in (SECRET, "db-secret", "all-secrets", "connector-secret-0", "managedFields"):
        assert value not in kept, value
    assert REDACTED in kept
    assert redact(review(secret_pod()))["request"]["userInfo"] == {"username": REDACTED}


@settings(max_examples=examples(100), deadline=None)
@given(
    containers=st.integers(1, 8),
    env_vars=st.integers(0, 30),
    volumes=st.integers(0, 6),
    job_type=st.sampled_from(["sync", "check", "spec", "discover", "orchestrator"]),
)
def test_a_redacted_review_is_mutated_at_the_same_paths_as_the_real_one(containers, env_vars, volumes, job_type):
    """What is redacted is what no plugin reads: replaying the recording shows what the real pod got."""
    engine = BUILT_IN
    real = review(airbyte_pod(job_type, containers=containers, env_vars=env_vars, volumes=volumes))
    paths = [operation["path"] for operation in admission.answer(real, engine).mutation.patch]
    kept = [operation["path"] for operation in admission.answer(redact(real), engine).mutation.patch]
    assert kept == paths


def test_kept_reviews_are_bounded_in_count_and_bytes_and_private(tmp_path):
    settings_ = {
        "directory": str(tmp_path / "kept"),
        "per_job_type": 3,
        "max_bytes_per_job_type": 10_000,
        "max_bytes": 10**6,
    }
    for index in range(10):
        write(settings_, "sync", json.dumps({"index": index, "pad": "x" * 2000}).encode())
    folder = tmp_path / "kept" / "sync"
    names = sorted(os.listdir(folder))
    assert [json.loads((folder / name).read_text())["index"] for name in names] == [7, 8, 9]
    assert stat.S_IMODE(os.stat(folder).st_mode) == stat.S_IMODE(os.stat(folder.parent).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600 for name in names)
    prune(str(folder), 3, 5000)  # bytes bind first: the newest two fit
    assert len(os.listdir(folder)) == 2
    write({**settings_, "max_bytes": 5000}, "check", json.dumps({"index": 10, "pad": "x" * 2000}).encode())
    kept = [name for _type, name in (path.split("/") for path, _ in recorded_files(settings_["directory"]))]
    assert len(kept) == 2 and (tmp_path / "kept" / "check").is_dir()  # all types together: the oldest sync one went


def test_serve_keeps_the_reviews_of_job_pods_redacted(tmp_path):
    config = tmp_path / "podmutate.yaml"
    config.write_text(f"record: {{enabled: true, directory: {tmp_path / 'kept'}}}\n")
    client = create_app(config_path=str(config), environ={}).test_client()
    for pod in (secret_pod(), airbyte_pod("sync", labelled=False)):
        assert client.post("/mutate", json=review(pod)).status_code == 200
    kept_dir = tmp_path / "kept"
    # Written by the worker's writer thread, after the answer.
    (kept,) = wait_for(lambda: kept_dir.is_dir() and load_recorded([str(kept_dir)]), timeout=10)
    assert kept[0].startswith("sync/") and SECRET not in json.dumps(kept[1])
    assert sorted(os.listdir(tmp_path / "kept")) == ["sync"]  # the pod no plugin claims is not kept


def recorded(*pods):
    return [(f"sync/{index}.json", redact(review(pod))) for index, pod in enumerate(pods)]


def test_replay_shows_what_a_new_node_selector_changes_and_nothing_else(engine):
    candidate = load_engine(environ={}, overrides={"job_types": {"sync": {"node_selector": {"pool": "sync"}}}})
    report = replay(recorded(airbyte_pod("sync"), airbyte_pod("check")), engine, candidate)
    lines = report.lines()
    assert lines[0] == "check: 1 pods, 0 change"
    assert lines[1] == "sync: 1 pods, 1 change"
    assert lines[2] == '  /spec/nodeSelector/pool: (absent) -> "sync" (1 pods)'
    assert not report.problems


def test_replay_flags_a_candidate_that_would_make_pods_invalid_or_deny_them(engine):
    huge = load_engine(
        environ={}, overrides={"job_types": {"default": {"annotations": {"example.com/big": "x" * 300_000}}}}
    )
    (invalid,) = replay(recorded(airbyte_pod("sync")), engine, huge).problems
    assert "the candidate would make it invalid" in invalid.problem and "annotations total over" in invalid.problem
    strict = load_engine(environ={}, overrides={"connection_labels": {"required": {"default": True}}})
    pod = airbyte_pod("sync")
    pod["metadata"]["labels"].pop("connection_id")
    pod["spec"]["containers"][0]["env"] = []
    (denied,) = replay(recorded(pod), engine, strict).problems
    assert denied.problem.startswith("the candidate denies it")


def test_the_commands_export_a_tar_and_replay_it_exiting_1_on_a_problem(tmp_path):
    settings_ = {
        "directory": str(tmp_path / "kept"),
        "per_job_type": 50,
        "max_bytes_per_job_type": 10**6,
        "max_bytes": 10**7,
    }
    write(settings_, "sync", json.dumps(redact(review(airbyte_pod("sync")))).encode())
    exported = podmutate("record", "export", "--directory", str(tmp_path / "kept"), "-o", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "recording.tar").write_bytes(export_tar(str(tmp_path / "kept")))
    with tarfile.open(tmp_path / "recording.tar") as archive:
        assert [member.name.split("/")[0] for member in archive.getmembers()] == ["sync"]
    selector = tmp_path / "selector.yaml"
    selector.write_text("job_types: {sync: {node_selector: {pool: sync}}}\n")
    changed = podmutate("replay", str(tmp_path / "recording.tar"), str(tmp_path / "out"), "--config", str(selector))
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines()[:2] == [
        "sync: 2 pods, 2 change",
        '  /spec/nodeSelector/pool: (absent) -> "sync" (2 pods)',
    ]
    env = tmp_path / "env"
    env.write_text("JOB_KUBE_NODE_SELECTORS=pool=jobs\n")  # the environment serve runs with: both configurations see it
    moved = podmutate("replay", str(tmp_path / "out"), "--config", str(selector), "--env-file", str(env))
    assert moved.stdout.splitlines()[1] == '  /spec/nodeSelector/pool: "jobs" -> "sync" (1 pods)'
    huge = tmp_path / "huge.yaml"
    huge.write_text(json.dumps({"job_types": {"default": {"annotations": {"example.com/big": "x" * 300_000}}}}))
    flagged = podmutate("replay", str(tmp_path / "out"), "--config", str(huge))
    assert flagged.returncode == 1
    assert any(line.startswith("PROBLEM sync/") for line in flagged.stdout.splitlines())
    missing = podmutate("replay", str(tmp_path / "empty"), "--config", str(selector))
    assert missing.returncode == 2  # click: the path does not exist
