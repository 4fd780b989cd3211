"""The launcher's parts that need no API server: pod names, manifests, the upload protocol."""

import io
import json
import re
import tarfile
from types import SimpleNamespace

import pytest

from webhook.ops.launcher import Job, UploadError, image_short_name, pod_manifest, pod_name, upload

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_pod_name_follows_airbytes_rule():
    job = Job(job_type="sync", image="airbyte/source-postgres:3.6.2", connection_id="c", job_id="42", attempt=1)
    assert pod_name(job, suffix="abcde") == "source-postgres-sync-42-1-abcde"
    assert re.fullmatch(r"source-postgres-sync-42-1-[a-z]{5}", pod_name(job))


def test_a_long_name_is_trimmed_from_the_front_to_a_valid_dns_label():
    job = Job(
        job_type="discover",
        image="registry.example.com:5000/org/" + "Very_Long_Connector_" * 4 + ":1@sha256:ab",
        connection_id="c",
        job_id="1234567",
        attempt=3,
    )
    name = pod_name(job, suffix="qwert")
    assert len(name) <= 63
    assert name.endswith("-discover-1234567-3-qwert")
    assert DNS_LABEL.match(name), name


def test_an_orchestrator_has_airbytes_fixed_name():
    job = Job(
        job_type="orchestrator", image="airbyte/container-orchestrator:1.0", connection_id="c", job_id="42", attempt=3
    )
    assert pod_name(job) == pod_name(job) == "orchestrator-repl-job-42-attempt-3"


def test_a_name_that_would_start_with_a_digit_starts_with_the_job_type():
    job = Job(job_type="sync", image="registry.local/1234:5", connection_id="c", job_id="42", attempt=1)
    assert pod_name(job, suffix="abcde") == "sync-42-1-abcde"


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"command": "sleep 10"},
            "command: expected a list of strings, e.g. [sh, -c, 'sleep 10'], got a string 'sleep 10'",
        ),
        ({"env": ["A=1"]}, "env: expected a mapping of names to values, got a list ['A=1']"),
        ({"connection_id": 42}, "connection_id: expected a string (quote ids in YAML), got a number 42"),
        ({"job_id": None}, "job_id: expected a string (quote ids in YAML), got null None"),
        ({"attempt": "1"}, "attempt: expected a whole number from 0, got a string '1'"),
        ({"image": None, "job_type": None}, "job_type: expected a string such as sync, got null None"),
    ],
)
def test_a_bad_job_description_is_one_line_naming_the_field(change, message):
    from webhook.ops.launcher import JobError

    description = {"job_type": "sync", "image": "busybox:1.35", "connection_id": "c", "job_id": "1", **change}
    with pytest.raises(JobError) as raised:
        Job.from_mapping(description)
    assert str(raised.value) == message


def test_a_missing_field_is_named():
    from webhook.ops.launcher import JobError

    with pytest.raises(JobError, match=r"^connection_id: missing \(expected a string"):
        Job.from_mapping({"job_type": "sync", "image": "busybox:1.35", "job_id": "1"})


def test_image_short_name():
    assert image_short_name("source-faker") == "source-faker"
    assert image_short_name("ghcr.io/a/b/destination-s3:1.0@sha256:00") == "destination-s3"


def test_manifest_carries_every_label_and_a_fresh_process_id():
    job = Job(
        job_type="check",
        image="airbyte/source-pg:1",
        connection_id="8f2c",
        job_id="7",
        attempt=2,
        namespace="jobs",
        env={"LOG_LEVEL": "INFO"},
        args=["check", "--config", "/config/c.json"],
    )
    first, second = pod_manifest(job), pod_manifest(job)
    labels = first["metadata"]["labels"]
    assert {
        key: labels[key] for key in ("podmutate.io/job-type", "connection_id", "job_id", "attempt_id", "airbyte")
    } == {
        "podmutate.io/job-type": "check",
        "connection_id": "8f2c",
        "job_id": "7",
        "attempt_id": "2",
        "airbyte": "job-pod",
    }
    assert labels["process_id"] != second["metadata"]["labels"]["process_id"]
    assert first["spec"]["restartPolicy"] == "Never"
    assert first["spec"]["containers"] == [
        {
            "name": "main",
            "image": "airbyte/source-pg:1",
            "args": ["check", "--config", "/config/c.json"],
            "env": [{"name": "LOG_LEVEL", "value": "INFO"}],
        }
    ]


def exit_status(code):
    """The status channel of an exec whose command exited with `code`, as the kubelet writes it."""
    return json.dumps(
        {
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command, exit status {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    )


class FakeExec:
    """Stands in for an exec session into the init container: there is no kubelet here to run one.

    It untars what is written to its stdin, as `tar -x` would, and records each archive.
    """

    def __init__(self, archives, fail_first=0, status=None):
        self.archives = archives
        self.fail_first = fail_first
        self.failure = status or exit_status(2)
        self.stdin = b""
        self.stdin_closed = False
        self.returncode = None

    def __call__(self, core, namespace, name, container, command):
        assert (container, command) == ("init", ["tar", "-xmf", "-", "-C", "/config"])
        return type(self)(self.archives, self.fail_first, self.failure)

    def write_stdin(self, data):
        assert isinstance(data, bytes) and not self.stdin_closed
        self.stdin += data

    def close_channel(self, channel):
        assert channel == 0
        self.stdin_closed = True
        with tarfile.open(fileobj=io.BytesIO(self.stdin)) as archive:
            contents = {member.name: archive.extractfile(member).read() for member in archive.getmembers()}
        failing = len(self.archives) < self.fail_first
        self.archives.append(contents)
        self.returncode = 2 if failing else 0

    def is_open(self):
        return not self.stdin_closed

    def update(self, timeout):
        pass

    def read_stderr(self, timeout=0):
        return b"tar: short read" if self.returncode else b""

    def read_channel(self, channel):
        assert channel == 3  # the status channel
        return self.failure if self.returncode else json.dumps({"metadata": {}, "status": "Success"})

    def close(self):
        pass


def test_upload_sends_the_files_then_the_success_file_last():
    archives = []
    upload(
        None,
        "jobs",
        "pod",
        {"source_config.json": '{"host": "db"}', "catalog.json": b"{}"},
        exec_session=FakeExec(archives),
    )
    assert archives == [{"source_config.json": b'{"host": "db"}', "catalog.json": b"{}"}, {"FINISHED_UPLOADING": b""}]


def test_upload_retries_a_failed_copy_and_gives_up_naming_the_files(monkeypatch):
    monkeypatch.setattr("webhook.ops.launcher.time.sleep", lambda seconds: None)
    archives = []
    upload(None, "jobs", "pod", {"a.json": "{}"}, exec_session=FakeExec(archives, fail_first=1))
    assert [sorted(archive) for archive in archives] == [["a.json"], ["a.json"], ["FINISHED_UPLOADING"]]
    with pytest.raises(UploadError, match=r"copying \['a.json'\] failed 3 times: tar exited with 2: tar: short read"):
        upload(None, "jobs", "pod", {"a.json": "{}"}, exec_session=FakeExec([], fail_first=5))


class InitEnded:
    """Stands in for the API server's answer about a pod whose init container ended with `code`."""

    def __init__(self, code):
        self.code = code

    def read_namespaced_pod(self, name, namespace):
        state = SimpleNamespace(terminated=SimpleNamespace(exit_code=self.code), running=None)
        return SimpleNamespace(
            status=SimpleNamespace(init_container_statuses=[SimpleNamespace(name="init", state=state)])
        )


def test_a_success_file_whose_tar_dies_with_the_init_container_it_ended_is_a_finished_upload():
    """The init container sees the success file and ends; tar, still closing, is killed with it (137)."""
    archives = []
    upload(InitEnded(0), "jobs", "pod", {}, exec_session=FakeExec(archives, fail_first=1, status=exit_status(137)))
    assert archives == [{"FINISHED_UPLOADING": b""}]  # not sent again


def test_a_failed_success_file_is_sent_again_while_the_init_container_has_not_ended_well(monkeypatch):
    monkeypatch.setattr("webhook.ops.launcher.time.sleep", lambda seconds: None)
    archives = []
    upload(InitEnded(1), "jobs", "pod", {}, exec_session=FakeExec(archives, fail_first=1, status=exit_status(137)))
    assert archives == [{"FINISHED_UPLOADING": b""}] * 2


def test_an_exec_that_never_ran_is_a_failed_copy_naming_why(monkeypatch):
    monkeypatch.setattr("webhook.ops.launcher.time.sleep", lambda seconds: None)
    not_found = json.dumps(
        {"status": "Failure", "message": 'unable to upgrade connection: container not found ("init")'}
    )
    with pytest.raises(UploadError, match=r"failed 3 times: unable to upgrade connection: container not found"):
        upload(InitEnded(1), "jobs", "pod", {"a.json": "{}"}, exec_session=FakeExec([], fail_first=5, status=not_found))
