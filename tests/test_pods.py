"""The pod helpers plugins build on (webhook.pods): each finds before it adds, so plugins stay idempotent."""

import copy

from webhook import pods
from webhook.pods import INJECTED_RESOURCES, NON_ROOT_USER


def pod(**spec):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec},
    }


def test_metadata_accessors_create_only_what_they_return():
    bare = {"spec": {}}
    assert pods.label(bare, "a") is None and pods.annotation(bare, "a", "x") == "x"
    assert bare == {"spec": {}}  # reading created nothing
    pods.labels(bare)["a"] = "1"
    pods.annotations(bare)["b"] = "2"
    assert pods.metadata(bare) == {"labels": {"a": "1"}, "annotations": {"b": "2"}}
    assert pods.label(bare, "a") == "1" and pods.annotation(bare, "b") == "2"
    assert pods.spec({}) == {} and pods.spec({"spec": None}) == {}


def test_opted_out_reads_a_false_annotation_in_any_spelling():
    subject = pod()
    subject["metadata"]["annotations"] = {"podmutate.io/tmp-volume": " False ", "podmutate.io/init-wait": "no"}
    assert pods.opted_out(subject, "podmutate.io/tmp-volume") is True
    assert pods.opted_out(subject, "podmutate.io/init-wait") is False
    assert pods.opted_out(subject, "podmutate.io/other") is False


def test_opted_in_reads_a_true_annotation_in_the_same_spellings():
    subject = pod()
    subject["metadata"]["annotations"] = {"podmutate.io/uses-stdin": " TRUE ", "podmutate.io/other": "yes"}
    assert pods.opted_in(subject, "podmutate.io/uses-stdin") is True
    assert pods.opted_in(subject, "podmutate.io/other") is False
    assert pods.opted_in(pod(), "podmutate.io/uses-stdin") is False


def test_containers_main_and_names_across_every_list():
    subject = pod(initContainers=[{"name": "init"}], ephemeralContainers=[{"name": "debug"}])
    subject["spec"]["containers"].insert(0, {"name": "sidecar"})
    assert [c["name"] for c in pods.containers(subject)] == ["sidecar", "main"]
    assert [c["name"] for c in pods.all_containers(subject)] == ["init", "sidecar", "main", "debug"]
    assert pods.main_container(subject)["name"] == "main"
    assert pods.main_container(pod(containers=[{"name": "only"}]))["name"] == "only"
    assert pods.main_container(pod(containers=[])) is None
    assert pods.container_name_taken(subject, "debug") and not pods.container_name_taken(subject, "nope")
    assert pods.init_container(subject, "init") == {"name": "init"} and pods.init_container(subject, "main") is None


def test_add_volume_and_add_init_container_never_duplicate():
    subject = pod()
    added = pods.add_volume(subject, {"name": "tmp", "emptyDir": {}})
    assert pods.add_volume(subject, {"name": "tmp", "hostPath": {"path": "/x"}}) is added
    assert subject["spec"]["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert pods.volume(subject, "tmp") is added and pods.volume(subject, "other") is None
    subject["spec"]["initContainers"] = [{"name": "airbyte-init"}]
    assert pods.add_init_container(subject, {"name": "init", "image": "busybox"}) is True
    assert pods.add_init_container(subject, {"name": "init", "image": "other"}) is False
    assert pods.add_init_container(subject, {"name": "main", "image": "other"}) is False  # a regular container's name
    assert [c["name"] for c in subject["spec"]["initContainers"]] == ["airbyte-init", "init"]  # appended


def test_mounts_are_found_in_any_spelling_and_never_doubled():
    container = {
        "name": "main",
        "volumeMounts": [{"name": "data", "mountPath": "/tmp/"}],
        "volumeDevices": [{"name": "disk", "devicePath": "/dev/xvda"}],
    }
    assert pods.clean_path("//tmp/./") == "/tmp" and pods.clean_path(None) == ""
    assert pods.mount_at(container, "/tmp")["name"] == "data"
    assert pods.path_in_use(container, "/dev/xvda/") and not pods.path_in_use(container, "/config")
    before = copy.deepcopy(container)
    pods.add_mount(container, "tmp", "/tmp")
    pods.add_mount(container, "disk2", "/dev/xvda")
    assert container == before
    pods.add_mount(container, "config", "/config")
    assert container["volumeMounts"][-1] == {"name": "config", "mountPath": "/config"}


def test_env_value_reads_literal_values_only():
    container = {"env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}
    assert pods.env_value(container, "A") == "1"
    assert pods.env_value(container, "B") is None and pods.env_value({}, "A") is None


def test_users_come_from_the_container_then_the_pod():
    subject = pod(securityContext={"runAsUser": 2000, "runAsGroup": 3000})
    assert pods.run_as(subject) == (2000, 3000)
    subject["spec"]["containers"][0]["securityContext"] = {"runAsUser": 1001}
    assert pods.run_as(subject) == (1001, 3000)
    assert pods.run_as(subject, {"securityContext": {"runAsGroup": 7}}) == (2000, 7)


def test_runs_restricted_needs_run_as_non_root_for_every_container():
    subject = pod(securityContext={"runAsNonRoot": True}, initContainers=[{"name": "i"}])
    assert pods.runs_restricted(subject)
    subject["spec"]["initContainers"][0]["securityContext"] = {"runAsNonRoot": False}
    assert not pods.runs_restricted(subject)


def test_a_helper_runs_as_the_main_user_or_a_non_root_one():
    assert pods.restricted_security_context(pod())["runAsUser"] == NON_ROOT_USER
    main_user = pod()
    main_user["spec"]["containers"][0]["securityContext"] = {"runAsUser": 1234}
    assert pods.restricted_security_context(main_user)["runAsUser"] == 1234
    pod_user = pod(securityContext={"runAsUser": 999})
    context = pods.restricted_security_context(pod_user)
    assert "runAsUser" not in context  # inherited from the pod
    assert context["runAsNonRoot"] is True and context["capabilities"] == {"drop": ["ALL"]}


def test_helper_resources_yield_to_pod_level_resources():
    assert pods.helper_resources(pod(), INJECTED_RESOURCES) == {"resources": INJECTED_RESOURCES}
    assert pods.helper_resources(pod(resources={"limits": {"cpu": "1"}}), INJECTED_RESOURCES) == {}
    assert pods.helper_resources(pod(), {}) == {}
