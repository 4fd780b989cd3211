"""Which pods are job pods: podmutate's own job-type label, else Airbyte's labels."""

from webhook import hookimpl
from webhook.pods import label

JOB_TYPE_LABEL = "podmutate.io/job-type"
AIRBYTE_JOB_TYPES = ("spec", "check", "discover", "sync")


@hookimpl(trylast=True)
def classify_pod(pod, config):
    job_type = label(pod, JOB_TYPE_LABEL)
    if job_type is None:
        job_type = airbyte_job_type(pod)
    return job_type if job_type in config.job_types else None


def airbyte_job_type(pod):
    """The job type Airbyte's labels give: an orchestrator's `sync_step` carries no `job_type`."""
    if str(label(pod, "sync_step", "")).startswith("orchestrator"):
        return "orchestrator"
    job_type = label(pod, "job_type")
    return job_type if job_type in AIRBYTE_JOB_TYPES else None
