"""The admission core: an AdmissionReview dict in, the response dict out."""

import base64
import functools
import json

import pytest

from tests.helpers import apply_answer, decode_patch, job_pod
from tools.harness.pods import review
from webhook import admission
from webhook.engine import load_engine
from webhook.errors import ReviewError


def test_job_pod_create_gets_a_patch_that_echoes_the_review(engine):
    request = review(job_pod("sync"), uid="5e1f0c6a-1111-2222-3333-444455556666")
    answer = admission.review(request, engine)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "5e1f0c6a-1111-2222-3333-444455556666"
    assert answer["response"]["allowed"] is True
    assert answer["response"]["patchType"] == "JSONPatch"
    mutated = apply_answer(request["request"]["object"], answer)
    assert mutated["spec"]["initContainers"][0]["name"] == "init"


def test_patch_is_base64_of_an_rfc6902_list(engine):
    answer = admission.review(review(job_pod("check")), engine)
    patch = json.loads(base64.b64decode(answer["response"]["patch"]))
    assert isinstance(patch, list) and patch
    assert all(operation["op"] in {"add", "replace", "remove", "move", "copy", "test"} for operation in patch)


@pytest.mark.parametrize(
    "change",
    [
        {"operation": "UPDATE"},
        {"operation": "DELETE"},
        {"resource": "configmaps"},
        {"sub_resource": "status"},
    ],
)
def test_anything_but_pod_create_is_allowed_unpatched(engine, change):
    change = dict(change)
    operation = change.pop("operation", "CREATE")
    answer = admission.review(review(job_pod("sync"), operation=operation, **change), engine)
    assert answer["response"]["allowed"] is True
    assert "patch" not in answer["response"] and "patchType" not in answer["response"]


def test_pod_no_plugin_classifies_is_left_alone(engine):
    pod = job_pod(None, labels={"app": "web"})
    answer = admission.review(review(pod), engine)
    assert answer["response"] == {"uid": answer["response"]["uid"], "allowed": True}


def test_dry_run_is_answered_exactly_like_a_real_request(engine):
    pod = job_pod("discover")
    real = admission.review(review(pod, uid="u"), engine)
    dry = admission.review(review(pod, uid="u", dry_run=True), engine)
    assert dry == real


def test_mutate_leaves_the_original_untouched(engine):
    pod = job_pod("sync")
    before = json.dumps(pod, sort_keys=True)
    mutation = admission.mutate(pod, engine)
    assert json.dumps(pod, sort_keys=True) == before
    assert mutation.pod is not pod and mutation.patch


def test_second_run_yields_no_patch(engine):
    mutated = admission.mutate(job_pod("sync"), engine).pod
    assert admission.mutate(mutated, engine).patch == []
    assert "patch" not in admission.review(review(mutated), engine)["response"]


@pytest.mark.parametrize(
    "body, problem",
    [
        ([], "expected an AdmissionReview object, got an array"),
        ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}, "apiVersion"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": {}}, "kind"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request: expected an object"),
        (
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}},
            "request.uid is missing",
        ),
    ],
)
def test_malformed_reviews_raise_a_review_error_naming_the_problem(engine, body, problem):
    with pytest.raises(ReviewError, match=problem.replace("(", r"\(")):
        admission.review(body, engine)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("uid", 42, "request.uid: expected a string, got a number"),
        ("uid", "", "request.uid is empty"),
        ("dryRun", "yes", "request.dryRun: expected a boolean, got a string"),
        ("object", [], "request.object: expected an object or null, got an array"),
        ("resource", "pods", "request.resource: expected an object, got a string"),
        ("namespace", {"a": 1}, "request.namespace: expected a string, got an object"),
    ],
)
def test_fields_of_the_wrong_type_are_named(engine, field, value, message):
    body = review(job_pod("sync"))
    body["request"][field] = value
    with pytest.raises(ReviewError) as raised:
        admission.review(body, engine)
    assert str(raised.value) == message


def test_pod_create_without_an_object_is_a_review_error(engine):
    body = review(job_pod("sync"))
    body["request"]["object"] = None
    with pytest.raises(ReviewError, match="request.object"):
        admission.review(body, engine)


def test_label_keys_with_slashes_are_escaped_in_the_patch():
    engine = load_engine(environ={}, overrides={"job_types": {"sync": {"labels": {"example.com/tier": "gold"}}}})
    pod = job_pod("sync", labels={"other": "x"})
    answer = admission.review(review(pod), engine)
    paths = [operation["path"] for operation in decode_patch(answer)]
    assert "/metadata/labels/example.com~1tier" in paths
    assert apply_answer(pod, answer)["metadata"]["labels"]["example.com/tier"] == "gold"


def test_the_init_container_never_runs_as_root_under_run_as_non_root():
    """The kubelet refuses a runAsNonRoot container whose image runs as root: name a user unless the pod does."""
    engine = load_engine(environ={})
    main_only = job_pod(
        "sync", containers=[{"name": "main", "image": "busybox:1.35", "securityContext": {"runAsUser": 1000}}]
    )
    pod_level = job_pod("sync", securityContext={"runAsUser": 2000})
    nobody = job_pod("sync")
    users = [
        next(c for c in admission.mutate(pod, engine).pod["spec"]["initContainers"] if c["name"] == "init")[
            "securityContext"
        ].get("runAsUser")
        for pod in (main_only, pod_level, nobody)
    ]
    assert users == [1000, None, 1000]  # the main container's; inherited from the pod; Airbyte's rootless uid


def test_the_mutated_by_annotation_never_takes_the_annotations_past_the_api_servers_limit(engine):
    from webhook.contract import MUTATED_BY_ANNOTATION
    from webhook.validity import ANNOTATIONS_MAX_BYTES, problems

    key = "example.com/blob"
    room = 100  # the built-in status-check annotation fits; the mutated-by JSON does not
    pod = job_pod("sync", annotations={key: "x" * (ANNOTATIONS_MAX_BYTES - len(key) - room)})
    assert problems(pod) == set()
    mutated = apply_answer(pod, admission.review(review(pod), engine))
    assert mutated["spec"]["initContainers"]  # still mutated
    assert MUTATED_BY_ANNOTATION not in mutated["metadata"]["annotations"]
    assert problems(mutated) == set()
    roomy = job_pod("sync")
    assert (
        MUTATED_BY_ANNOTATION in apply_answer(roomy, admission.review(review(roomy), engine))["metadata"]["annotations"]
    )


def test_a_pod_over_the_annotation_limit_already_is_mutated_in_one_pass(engine, monkeypatch):
    """The API server refuses it anyway; what matters is that its growing annotations do not count
    as a new problem, which would re-run every plugin alone to find the culprit."""
    from webhook.validity import ANNOTATIONS_MAX_BYTES

    runs = []
    original = admission.run_plugin
    monkeypatch.setattr(admission, "run_plugin", lambda *args, **kwargs: runs.append(1) or original(*args, **kwargs))
    roomy = job_pod("sync")
    admission.review(review(roomy), engine)
    once = len(runs)
    runs.clear()
    full = job_pod("sync", annotations={"example.com/blob": "x" * ANNOTATIONS_MAX_BYTES})
    answer = admission.review(review(full), engine)
    assert apply_answer(full, answer)["spec"]["initContainers"]
    assert len(runs) == once


@pytest.mark.parametrize(
    "left",
    [
        pytest.param(lambda: {"a", "set"}, id="not-json"),
        pytest.param(lambda: functools.reduce(lambda inner, _: {"a": inner}, range(2000), "leaf"), id="too-deep"),
    ],
)
def test_a_plugin_that_leaves_what_is_not_json_fails_its_review_not_the_server(left):
    """Before, the diff or the copy of such a pod raised outside any plugin: a 500."""
    from webhook import hookimpl

    class Careless:
        @hookimpl
        def mutate_pod(self, pod):
            pod["spec"]["extra"] = left()

    engine = load_engine(environ={})
    engine.plugins.register(Careless(), name="careless")
    answer = admission.answer(review(job_pod("sync")), engine)
    assert answer.outcome == "failed" and answer.response["response"]["allowed"] is True
    assert "patch" not in answer.response["response"]


def test_every_main_container_gets_airbytes_default_pull_policy_latest_images_included(engine):
    """Airbyte sets JOB_KUBE_MAIN_CONTAINER_IMAGE_PULL_POLICY (default IfNotPresent) on every main
    container, even where the API server would default a `:latest` image to Always."""
    pod = job_pod(
        "sync", containers=[{"name": "main", "image": "airbyte/source-faker:latest", "imagePullPolicy": "Always"}]
    )
    mutated = apply_answer(pod, admission.review(review(pod), engine))
    assert mutated["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_a_null_pull_policy_turns_the_default_off(tmp_path):
    config = tmp_path / "podmutate.yaml"
    config.write_text("job_types:\n  default:\n    image_pull_policy: null\n")
    engine = load_engine(str(config), environ={})
    pod = job_pod(
        "sync", containers=[{"name": "main", "image": "airbyte/source-faker:latest", "imagePullPolicy": "Always"}]
    )
    mutated = apply_answer(pod, admission.review(review(pod), engine))
    assert mutated["spec"]["containers"][0]["imagePullPolicy"] == "Always"
