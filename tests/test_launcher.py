"""The launcher's pure parts: pod names and manifests."""

import re

from webhook.launcher import Job, image_short_name, pod_manifest, pod_name

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_pod_name_follows_airbytes_rule():
    job = Job(job_type="sync", image="airbyte/source-postgres:3.6.2", connection_id="c", job_id="42", attempt=1)
    assert pod_name(job, suffix="abcde") == "source-postgres-sync-42-1-abcde"
    assert re.fullmatch(r"source-postgres-sync-42-1-[a-z]{5}", pod_name(job))


def test_a_long_name_is_trimmed_from_the_front_to_a_valid_dns_label():
    job = Job(job_type="discover", image="registry.example.com:5000/org/" + "Very_Long_Connector_" * 4 + ":1@sha256:ab",
              connection_id="c", job_id="1234567", attempt=3)
    name = pod_name(job, suffix="qwert")
    assert len(name) <= 63
    assert name.endswith("-discover-1234567-3-qwert")
    assert DNS_LABEL.match(name), name


def test_image_short_name():
    assert image_short_name("source-faker") == "source-faker"
    assert image_short_name("ghcr.io/a/b/destination-s3:1.0@sha256:00") == "destination-s3"


def test_manifest_carries_every_label_and_a_fresh_process_id():
    job = Job(job_type="check", image="airbyte/source-pg:1", connection_id="8f2c", job_id="7", attempt=2,
              namespace="jobs", env={"LOG_LEVEL": "INFO"}, args=["check", "--config", "/config/c.json"])
    first, second = pod_manifest(job), pod_manifest(job)
    labels = first["metadata"]["labels"]
    assert {key: labels[key] for key in ("podmutate.io/job-type", "connection_id", "job_id", "attempt_id", "airbyte")} \
        == {"podmutate.io/job-type": "check", "connection_id": "8f2c", "job_id": "7", "attempt_id": "2",
            "airbyte": "job-pod"}
    assert labels["process_id"] != second["metadata"]["labels"]["process_id"]
    assert first["spec"]["restartPolicy"] == "Never"
    assert first["spec"]["containers"] == [{"name": "main", "image": "airbyte/source-pg:1",
                                            "args": ["check", "--config", "/config/c.json"],
                                            "env": [{"name": "LOG_LEVEL", "value": "INFO"}]}]
