"""Which pods are job pods: podmutate's own job-type label, else Airbyte's labels (1.x and 2.x)."""

from webhook import hookimpl
from webhook.contract import (
    AIRBYTE_JOB_TYPE_LABEL,
    AIRBYTE_JOB_TYPES,
    AIRBYTE_SYNC_STEP_LABEL,
    JOB_TYPE_LABEL,
    NORMALIZATION_STEPS,
    ORCHESTRATOR_JOB_TYPE,
    ORCHESTRATOR_STEP_PREFIX,
)
from webhook.pods import label


@hookimpl(trylast=True)
def classify_pod(pod, config):
    job_type = label(pod, JOB_TYPE_LABEL)
    if job_type is None:
        job_type = airbyte_job_type(pod)
    return job_type if job_type in config.job_types else None


def airbyte_job_type(pod):
    """The job type Airbyte's labels give: an orchestrator's `sync_step` carries no `job_type`.

    A 2.x sync pod (`sync_step: replication`, containers orchestrator, source and destination)
    is a `sync` pod; a normalization step's pod is a `normalization` pod.
    """
    step = str(label(pod, AIRBYTE_SYNC_STEP_LABEL, ""))
    if step.startswith(ORCHESTRATOR_STEP_PREFIX):
        return ORCHESTRATOR_JOB_TYPE
    if step in NORMALIZATION_STEPS:
        return "normalization"
    job_type = label(pod, AIRBYTE_JOB_TYPE_LABEL)
    return job_type if job_type in AIRBYTE_JOB_TYPES else None
