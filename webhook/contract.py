"""The job-pod contract: the names the webhook's plugins, the launcher and Airbyte agree on.

A job pod is found by its labels, fed through its init container and watched through its
`main` container. Every label, annotation, path and container name of that agreement is
written here once; plugins and the launcher import it.
"""

from typing import Final

# Labels. Which job a pod runs: podmutate's own label, else Airbyte's.
JOB_TYPE_LABEL: Final = "podmutate.io/job-type"
AIRBYTE_JOB_TYPE_LABEL: Final = "job_type"
AIRBYTE_SYNC_STEP_LABEL: Final = "sync_step"
AIRBYTE_JOB_TYPES: Final = ("spec", "check", "discover", "sync")
ORCHESTRATOR_STEP_PREFIX: Final = "orchestrator"  # sync_step of an orchestrator pod
NORMALIZATION_STEPS: Final = ("normalize", "normalise")  # the 2022 spelling is `normalise`
SWEEPER_LABEL: Final = {"airbyte": "job-pod"}  # what Airbyte's pod sweeper selects

# The ids that tie a pod to its connection: id -> (annotation, env var). Each id's label key
# is configurable (connection_labels.keys) and defaults to the id's own name.
CONNECTION_ID: Final = "connection_id"
CONNECTION_IDS: Final = {
    CONNECTION_ID: ("podmutate.io/connection-id", "CONNECTION_ID"),
    "job_id": ("podmutate.io/job-id", "JOB_ID"),
    "attempt_id": ("podmutate.io/attempt-id", "ATTEMPT_ID"),
    "process_id": ("podmutate.io/process-id", "PROCESS_ID"),
}
DEFAULT_LABEL_KEYS: Final = {name: name for name in CONNECTION_IDS}

# Annotations a pod (or its profile) carries.
STATUS_CHECK_ANNOTATION: Final = "podmutate.io/status-check-interval"  # seconds between the launcher's resyncs
INIT_WAIT_ANNOTATION: Final = "podmutate.io/init-wait"  # "false": no init container
USES_STDIN_ANNOTATION: Final = "podmutate.io/uses-stdin"
TMP_VOLUME_ANNOTATION: Final = "podmutate.io/tmp-volume"  # "false": no /tmp emptyDir
FIX_PERMISSIONS_ANNOTATION: Final = "podmutate.io/fix-permissions"  # volume names to give to the pod's user
MUTATED_BY_ANNOTATION: Final = "podmutate.io/mutated-by"  # written by podmutate: its plugins and configuration

# Containers and paths.
MAIN_CONTAINER: Final = "main"
INIT_CONTAINER: Final = "init"
HELPER_IMAGE: Final = "busybox:1.35"  # of the containers podmutate adds (Airbyte's JOB_KUBE_BUSYBOX_IMAGE default)
CONFIG_DIR: Final = "/config"  # where the launcher uploads the job's files, in the init container
PIPES_DIR: Final = "/pipes"
SUCCESS_FILE: Final = "FINISHED_UPLOADING"  # uploaded last: the init container's signal to end

# Job types with a pod name of their own.
ORCHESTRATOR_JOB_TYPE: Final = "orchestrator"
ORCHESTRATOR_POD_PREFIX: Final = "orchestrator-repl"  # Airbyte's ReplicationLauncherWorker.POD_NAME_PREFIX

# How the launcher treats a job pod, after Airbyte's: each wait for the init container (to
# have a status, then to run) up to 5 minutes; killing a connection's pods in the foreground,
# within 45 seconds.
INIT_WAIT_SECONDS: Final = 300.0
KILL_SECONDS: Final = 45.0
DELETE_PROPAGATION: Final = "Foreground"
