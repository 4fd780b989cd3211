"""The `podmutate` command: serve, mutate offline, test golden cases, list plugins, manage certificates.

Only options and output live here; what each command does lives in the modules it calls.
"""

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import yaml

from certs import SERVING_DAYS, SERVING_RENEW_DAYS
from webhook import logs, metrics
from webhook.budget import DEFAULT_BUDGET
from webhook.config import CONFIG_ENV, yaml_problem
from webhook.contract import DELETE_PROPAGATION, INIT_WAIT_SECONDS, KILL_SECONDS
from webhook.engine import Engine, load_engine
from webhook.errors import ConfigError
from webhook.plugins import plugin_rows

log = logging.getLogger("podmutate")

T = TypeVar("T")
LOG_FORMAT = "podmutate.log_format"  # where `main` leaves --log-format for `serve` (click's context meta)


def config_option(description: str = "YAML configuration file.") -> Callable[[Callable], Callable]:
    """The --config option of every command that reads podmutate's configuration."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        envvar=CONFIG_ENV,
        help=f"{description} [env: {CONFIG_ENV}]",
    )


def kubeconfig_option(
    description: str = "Credentials outside a cluster (in one, its own).",
) -> Callable[[Callable], Callable]:
    """The --kubeconfig option of every command that talks to the API server."""
    return click.option(
        "--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG", help=f"{description} [env: KUBECONFIG]"
    )


def load_or_exit(config_path: str | None) -> Engine:
    try:
        return load_engine(config_path)
    except ConfigError as error:
        raise click.ClickException(f"invalid configuration: {error}") from None


def cluster(action: Callable[[], T], subject: str | None = None) -> T:
    """Run `action()`, which talks to the API server; its errors end the command with one line."""
    from webhook.ops.kubeapi import ApiError, call

    try:
        return call(action, subject)
    except ApiError as error:
        raise click.ClickException(str(error)) from None


def read_yaml(source: Any) -> list[Any]:
    """Every document of a YAML stream; a syntax error ends the command naming the document."""
    documents: list[Any] = []
    try:
        for document in yaml.safe_load_all(source):
            documents.append(document)
    except yaml.YAMLError as error:
        raise click.ClickException(
            f"{getattr(source, 'name', '-')}: document {len(documents) + 1}: {yaml_problem(error)}"
        ) from None
    return [document for document in documents if document is not None]


@click.group()
@click.version_option(package_name="podmutate")
@click.option(
    "--log-level",
    envvar="PODMUTATE_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="debug logs one line per review; warning, one per failure, overrun or denial.",
)
@click.option(
    "--log-format",
    envvar="PODMUTATE_LOG_FORMAT",
    default="text",
    show_default=True,
    type=click.Choice(logs.FORMATS),
    help="json: one JSON object per line, for log pipelines.",
)
def main(log_level: str, log_format: str) -> None:
    """podmutate: make data-sync job pods right at admission time."""
    logs.configure(log_level, log_format)
    click.get_current_context().meta[LOG_FORMAT] = log_format


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--cert-dir",
    type=click.Path(file_okay=False),
    help="Directory with tls.crt and tls.key; created with a CA when empty. "
    "[default: $PODMUTATE_STATE_DIR or ~/.local/state/podmutate, under certs/]",
)
@config_option("YAML configuration file, reloaded when it changes.")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes. [default: cores, 2 to 4]")
@click.option(
    "--threads",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Threads per worker that run reviews (connections are read by the event loop, not by these).",
)
@click.option(
    "--review-memory",
    default=DEFAULT_BUDGET,
    show_default=True,
    type=click.IntRange(1024 * 1024),
    help="Bytes of memory the reviews of one worker may hold together; a review that cannot fit is "
    "answered by failure_mode (see docs/serving.md, the memory budget).",
)
@click.option("--service", envvar="PODMUTATE_SERVICE", help="Service name the certificate must cover.")
@click.option("--namespace", envvar="PODMUTATE_NAMESPACE", help="Namespace of --service.")
@click.option(
    "--webhook-config",
    envvar="PODMUTATE_WEBHOOK_CONFIG",
    help="MutatingWebhookConfiguration whose caBundle to keep in step with the CA.",
)
@click.option(
    "--cert-secret",
    envvar="PODMUTATE_CERT_SECRET",
    help="Secret (in --namespace) where replicas share the certificates podmutate manages.",
)
@kubeconfig_option("Credentials for --webhook-config and --cert-secret outside a cluster.")
@click.option(
    "--rotate-every",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds between certificate checks, when podmutate manages its certificates.",
)
@click.option(
    "--cert-validity",
    default=SERVING_DAYS * 86400.0,
    show_default=True,
    type=click.FloatRange(min=60),
    help="Seconds a serving certificate podmutate issues is valid.",
)
@click.option(
    "--metrics-port",
    default=metrics.DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of GET /metrics (Prometheus), on --metrics-host; 0: no metrics.",
)
@click.option(
    "--metrics-secure",
    is_flag=True,
    help="Serve /metrics over HTTPS with the webhook's certificate, to bearer tokens the API server "
    "authenticates (TokenReview) and allows to get /metrics (SubjectAccessReview).",
)
@click.option(
    "--metrics-host",
    help="Address of GET /metrics, apart from the webhook's (127.0.0.1: only from inside the pod). [default: --host]",
)
@click.option(
    "--cert-renew-before",
    default=SERVING_RENEW_DAYS * 86400.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Renew a serving certificate this many seconds before it expires.",
)
def serve(
    host: str,
    port: int,
    cert_dir: str | None,
    config_path: str | None,
    workers: int | None,
    threads: int,
    review_memory: int,
    service: str | None,
    namespace: str | None,
    webhook_config: str | None,
    cert_secret: str | None,
    kubeconfig: str | None,
    rotate_every: float,
    cert_validity: float,
    cert_renew_before: float,
    metrics_port: int,
    metrics_host: str | None,
    metrics_secure: bool,
) -> None:
    """Serve the webhook over HTTPS (POST /mutate, GET /healthz, GET /readyz), and its metrics.

    When the certificate directory is empty or holds podmutate's own CA key, podmutate manages
    the certificates: creates, renews before expiry and rolls the CA over. Otherwise (a mounted
    cert-manager Secret, say) it only follows the files as they change.
    """
    from certs.serving import prepare
    from webhook.ops.access import delegated_access
    from webhook.ops.kubeapi import api_client
    from webhook.server import WebhookServer
    from webhook.tls import REFUSED

    engine = load_or_exit(config_path)
    access = cluster(lambda: delegated_access(kubeconfig).verdict) if metrics_secure and metrics_port else None
    client = cluster(lambda: api_client(kubeconfig)) if webhook_config or cert_secret else None
    serving = cluster(
        lambda: prepare(
            cert_dir,
            service=service,
            namespace=namespace,
            webhook_config=webhook_config,
            cert_secret=cert_secret,
            client=client,
            rotate_every=rotate_every,
            validity=cert_validity,
            renew_before=cert_renew_before,
        )
    )
    log.info(
        "serving https://%s:%d/mutate with plugins: %s",
        host,
        port,
        ", ".join(row["name"] for row in plugin_rows(engine.plugins)),
    )
    try:
        server = WebhookServer(
            host=host,
            port=port,
            cert_file=serving.cert_file,
            key_file=serving.key_file,
            config_path=config_path,
            engine=engine,
            cert_dir=serving.cert_dir,
            workers=workers,
            threads=threads,
            review_memory=review_memory,
            on_ready=serving.on_ready,
            log_level=logging.getLevelName(logging.getLogger().level),
            log_format=click.get_current_context().meta[LOG_FORMAT],
            metrics_port=metrics_port or None,
            metrics_host=metrics_host,
            metrics_access=access,
        )
    except REFUSED as error:
        raise click.ClickException(f"cannot serve the certificate pair in {serving.cert_dir}: {error}") from None
    try:
        server.listen()
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    net = safety_net(engine, kubeconfig)
    try:
        server.serve_metrics([metrics.SafetyNetFigures(net.figures)] if net else [])
    except OSError as error:
        where = f"{metrics_host or host}:{metrics_port}"
        raise click.ClickException(f"cannot serve metrics on {where}: {error.strerror}") from None
    if net is None:
        server.run()
        return
    net.start()
    try:
        server.run()
    finally:
        net.stop()


def safety_net(engine: Engine, kubeconfig: str | None) -> Any:
    """The safety net `serve` runs beside the workers, when the configuration turns it on."""
    if not engine.config.safety_net["enabled"]:
        return None
    from webhook.ops.kubeapi import api_client
    from webhook.ops.safety_net import following

    return following(engine, cluster(lambda: api_client(kubeconfig)))


@main.command()
@click.option(
    "-f",
    "--filename",
    "source",
    required=True,
    type=click.File("r"),
    help="Pod, AdmissionReview, v1 List or multi-document YAML; - for standard input.",
)
@config_option()
@click.option("--patch", is_flag=True, help="Print the JSONPatch of each Pod instead of the objects.")
@click.option(
    "--explain",
    is_flag=True,
    help="For every path the patch changes, name the plugins that set it and where the value came from.",
)
@click.option("-o", "--output", default="yaml", show_default=True, type=click.Choice(["yaml", "json"]))
def mutate(source: Any, config_path: str | None, patch: bool, explain: bool, output: str) -> None:
    """Mutate pods offline, as the webhook would: no cluster, no server."""
    from webhook.ops.offline import mutate_document

    engine = load_or_exit(config_path)
    results = [mutate_document(document, engine) for document in read_yaml(source)]
    for result in results:
        if result.error:
            click.echo(f"error: {result.error}", err=True)
        for mutation in result.mutations:
            for warning in mutation.warnings:
                click.echo(f"warning: {warning}", err=True)
    good = [result for result in results if not result.error]
    if explain:
        print_explanations(good, engine)
    elif patch:
        emit([mutation.patch for result in good for mutation in result.mutations], output, as_list=False)
    else:
        emit([result.document for result in good], output, as_list=True)
    if len(good) < len(results):
        sys.exit(1)


def print_explanations(results: list[Any], engine: Engine) -> None:
    from webhook.ops.offline import document_name, explain

    for result in results:
        for mutation in result.mutations:
            original = mutation.original
            click.echo(f"{document_name(original)} ({mutation.job_type or 'not a job pod'}):")
            changes = explain(original, engine)
            for change in changes:
                source = f"  [{change.source}]" if change.source else ""
                click.echo(f"  {change.op:<8} {change.path:<52} {', '.join(change.plugins)}{source}")
            if not changes:
                click.echo("  no change")


def emit(results: list[Any], output: str, *, as_list: bool) -> None:
    """Print objects (or patches) as YAML documents, or as JSON: one object, a v1 List, or a line each."""
    if output == "yaml":
        click.echo(yaml.safe_dump_all(results, sort_keys=False, default_flow_style=False), nl=False)
    elif not as_list:
        for result in results:
            click.echo(json.dumps(result))
    elif len(results) == 1:
        click.echo(json.dumps(results[0], indent=2))
    else:
        click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": results}, indent=2))


@main.command("test")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--update", is_flag=True, help="Write what each case gives as what it expects (then read the diff).")
def test_cases(directory: str, update: bool) -> None:
    """Run golden cases: DIR/pod.yaml (+ config.yaml, env) must give DIR/expected.yaml and its warnings.

    DIR is one case, or a tree of them. Exits 1 when a case fails, printing a diff of what differs.
    """
    from webhook.ops.cases import find_cases, run_case

    cases = find_cases(directory)
    if not cases:
        raise click.ClickException(f"{directory}: no case (a directory with pod.yaml) found")
    outcomes = [run_case(case, update=update) for case in cases]
    for outcome in outcomes:
        click.echo(
            f"{'PASS' if outcome.passed else 'FAIL'}  {outcome.name}" + (f": {outcome.error}" if outcome.error else "")
        )
        for difference in outcome.differences:
            click.echo(difference, nl=False)
    failed = sum(not outcome.passed for outcome in outcomes)
    click.echo(f"{len(outcomes) - failed} passed, {failed} failed" + (" (expected files updated)" if update else ""))
    if failed:
        sys.exit(1)


@main.command()
@config_option()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(config_path: str | None, as_json: bool) -> None:
    """List built-in and installed plugins: name, version, hooks, enabled."""
    engine = load_or_exit(config_path)
    rows = plugin_rows(engine.plugins, engine.config.disabled_plugins)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NAME':<20} {'VERSION':<10} {'ENABLED':<8} HOOKS")
    for row in rows:
        click.echo(
            f"{row['name']:<20} {row['version'] or '-':<10} {'yes' if row['enabled'] else 'no':<8} "
            f"{', '.join(row['hooks'])}"
        )


@main.group()
def certs() -> None:
    """Create, inspect and publish the webhook's certificates."""


@certs.command("create")
@click.option("--out", "directory", required=True, type=click.Path(file_okay=False))
@click.option("--dns", multiple=True, help="A DNS name to cover (repeatable).")
@click.option("--ip", multiple=True, help="An IP address to cover (repeatable).")
@click.option("--service", help="A Service name: covers S, S.N, S.N.svc, S.N.svc.cluster.local.")
@click.option("--namespace", default="default", show_default=True, help="Namespace of --service.")
@click.option("--key-type", default="ecdsa", show_default=True, type=click.Choice(["ecdsa", "rsa"]))
def certs_create(
    directory: str, dns: tuple[str, ...], ip: tuple[str, ...], service: str | None, namespace: str, key_type: str
) -> None:
    """Create (or renew when due) a CA and a serving certificate in DIR: ca.crt, tls.crt, tls.key."""
    from certs import service_names
    from certs.rotation import ensure

    names = [*dns, *ip, *(service_names(service, namespace) if service else [])]
    if not names:
        raise click.UsageError("name at least one --dns, --ip or --service")
    outcome = ensure(directory, names, key_type=key_type)
    for action in outcome.actions or ["certificates are valid; nothing to do"]:
        click.echo(f"{directory}: {action}")


@certs.command("show")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
def certs_show(directory: str) -> None:
    """Show the serving certificate in DIRECTORY; exit 1 when expired or not issued by its CA."""
    from certs import certificate_report

    lines, ok = certificate_report(directory)
    for line in lines:
        click.echo(line)
    if not ok:
        sys.exit(1)


@certs.command("inject")
@click.option("--webhook-config", required=True, help="MutatingWebhookConfiguration name.")
@click.option("--ca", "ca_file", required=True, type=click.File("rb"), help="CA bundle (PEM), e.g. DIR/ca.crt.")
@kubeconfig_option()
def certs_inject(webhook_config: str, ca_file: Any, kubeconfig: str | None) -> None:
    """Set the caBundle of every webhook in a MutatingWebhookConfiguration (idempotent)."""
    from certs.inject import inject_ca_bundle
    from webhook.ops.kubeapi import api_client

    bundle = ca_file.read()
    changed = cluster(lambda: inject_ca_bundle(api_client(kubeconfig), webhook_config, bundle), subject=webhook_config)
    click.echo(f"{webhook_config}: " + (f"caBundle set for {', '.join(changed)}" if changed else "already in step"))


@main.command()
@click.option("-f", "--filename", "source", required=True, type=click.File("r"), help="Job description (YAML).")
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the init container, upload the job's files, wait for the end; exit with its code.",
)
@click.option(
    "--init-timeout",
    default=INIT_WAIT_SECONDS,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds each wait for the init container may take.",
)
@click.option(
    "--keep-running",
    is_flag=True,
    help="Do not kill the connection's live pods first (by default there is one live run per connection).",
)
@click.option("--keep-pod", is_flag=True, help="With --wait: keep the pod when a wait or the upload gives up.")
@click.option(
    "--request-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds to wait for the API server to answer one call.",
)
@config_option("podmutate's configuration, for the connection label keys (connection_labels.keys).")
@kubeconfig_option()
def launch(
    source: Any,
    wait: bool,
    init_timeout: float,
    keep_running: bool,
    keep_pod: bool,
    request_timeout: float,
    config_path: str | None,
    kubeconfig: str | None,
) -> None:
    """Launch a job pod from a job description (YAML).

    Keys: job_type, image, connection_id, job_id, attempt, namespace, command, args, env, labels,
    security_context (the main container's), and files (name in /config -> content), uploaded
    with --wait.
    """
    from webhook.ops.kubeapi import Timeouts
    from webhook.ops.launcher import (
        Job,
        JobError,
        KillTimeout,
        NotMutated,
        UploadError,
        WaitTimeout,
        core_api,
        label_keys,
        run,
    )
    from webhook.ops.launcher import launch as launch_pod

    try:
        job = Job.from_mapping(yaml.safe_load(source))
    except yaml.YAMLError as error:
        raise click.ClickException(f"{source.name}: {yaml_problem(error)}") from None
    except JobError as error:
        raise click.ClickException(f"{source.name}: {error}") from None
    keys = label_keys(load_or_exit(config_path).config)
    core = cluster(lambda: core_api(kubeconfig, Timeouts(read=request_timeout)))
    kill_running = not keep_running
    try:
        if not wait:
            pod = cluster(lambda: launch_pod(core, job, label_keys=keys, kill_running=kill_running))
            click.echo(f"pod/{pod.metadata.name} created in {job.namespace}")
            return
        name, code = cluster(
            lambda: run(
                core, job, label_keys=keys, init_timeout=init_timeout, kill_running=kill_running, keep_pod=keep_pod
            )
        )
    except (WaitTimeout, UploadError, KillTimeout, NotMutated) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"pod/{name}: main exited with {code}")
    sys.exit(code)


@main.command()
@click.option("--connection", "connection_id", required=True, help="The connection whose pods to kill.")
@click.option("--namespace", default="default", show_default=True)
@click.option("--dry-run", is_flag=True, help="List the live pods without deleting them.")
@click.option("--timeout", default=KILL_SECONDS, show_default=True, type=click.FloatRange(min=0))
@click.option(
    "--propagation",
    default=DELETE_PROPAGATION,
    show_default=True,
    type=click.Choice(["Foreground", "Background"]),
    help="Deletion propagation policy.",
)
@config_option("podmutate's configuration, for the connection label keys (connection_labels.keys).")
@kubeconfig_option()
def kill(
    connection_id: str,
    namespace: str,
    dry_run: bool,
    timeout: float,
    propagation: str,
    config_path: str | None,
    kubeconfig: str | None,
) -> None:
    """Kill every live pod of a connection, across all its attempts, within --timeout seconds."""
    from webhook.contract import CONNECTION_ID
    from webhook.ops.kubeapi import Timeouts
    from webhook.ops.launcher import KillTimeout, core_api, kill_connection, label_keys

    timeouts = Timeouts.within(timeout)
    label_key = label_keys(load_or_exit(config_path).config)[CONNECTION_ID]
    try:
        names = cluster(
            lambda: kill_connection(
                core_api(kubeconfig, timeouts),
                namespace,
                connection_id,
                label_key=label_key,
                timeout=timeout,
                dry_run=dry_run,
                propagation=propagation,
            )
        )
    except KillTimeout as error:
        raise click.ClickException(str(error)) from None
    verb = "would delete" if dry_run else "deleted"
    for name in names:
        click.echo(f"{verb} pod/{name}")
    if not names:
        click.echo(f"no live pods of connection {connection_id} in {namespace}")


@main.command()
@click.option(
    "-f",
    "--filename",
    "source",
    type=click.File("r"),
    help="Rendered manifests (e.g. `kubectl kustomize manifests/base`), - for standard input; "
    "without it, the live cluster.",
)
@click.option("--webhook-config", default="podmutate", show_default=True, help="The configuration to check.")
@click.option("--namespace", help="podmutate's namespace. [default: its Service's]")
@click.option("--url", help="Where to reach the webhook for the certificate check (a port-forward, say).")
@kubeconfig_option()
def doctor(source: Any, webhook_config: str, namespace: str | None, url: str | None, kubeconfig: str | None) -> None:
    """Check a webhook configuration for what takes clusters down; exit 1 on any failure."""
    from webhook.ops.doctor import (
        check,
        from_cluster,
        from_documents,
        safety_net_findings,
        service_namespaces,
        through_port_forwards,
    )
    from webhook.ops.kubeapi import api_client

    if source is not None:
        configurations, namespaces = from_documents(read_yaml(source))
        findings = check(configurations, namespaces, name=webhook_config, own_namespace=namespace, url=url)
    else:
        client = cluster(lambda: api_client(kubeconfig))
        configurations, namespaces = cluster(lambda: from_cluster(client))
        reach = through_port_forwards(client)
        findings = check(configurations, namespaces, name=webhook_config, own_namespace=namespace, url=url, reach=reach)
        own = namespace or next(iter(service_namespaces(configurations, webhook_config)), "podmutate-system")
        findings += cluster(lambda: safety_net_findings(client, own))
    for finding in findings:
        click.echo(str(finding))
    if any(finding.level == "fail" for finding in findings):
        sys.exit(1)


@main.command()
@click.option("--namespace", "-n", help="Only this namespace. [default: every namespace the webhook matches]")
@click.option("--all-namespaces", "-A", is_flag=True, help="Every namespace the webhook matches (the default).")
@click.option("-o", "--output", default="table", show_default=True, type=click.Choice(["table", "json"]))
@click.option("--webhook-config", default="podmutate", show_default=True, help="Whose selectors say what a job pod is.")
@config_option("The configuration in force (the webhook's ConfigMap), to run on each pod.")
@kubeconfig_option()
def audit(
    namespace: str | None,
    all_namespaces: bool,
    output: str,
    webhook_config: str,
    config_path: str | None,
    kubeconfig: str | None,
) -> None:
    """Find the job pods podmutate did not mutate; exit 1 when there is any.

    Each pod the webhook configuration's selectors match is run through podmutate as stored: a
    mutated pod gives no patch, so one that would still change got through without podmutate
    (down, under failurePolicy Ignore). `stale`: mutated by another configuration or version.
    """
    from webhook.ops.audit import UNMUTATED, as_json, table
    from webhook.ops.audit import audit as audit_pods
    from webhook.ops.kubeapi import api_client

    if namespace and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces exclude each other")
    engine = load_or_exit(config_path)
    findings = cluster(lambda: audit_pods(api_client(kubeconfig), engine, webhook_config, namespace), webhook_config)
    if output == "json":
        click.echo(as_json(findings))
    elif findings:
        click.echo(table(findings))
    else:
        click.echo(f"no job pods {webhook_config} matches" + (f" in {namespace}" if namespace else ""))
    if any(finding.state == UNMUTATED for finding in findings):
        sys.exit(1)


@main.group()
def record() -> None:
    """Reviews `serve` keeps for `podmutate replay` (record.enabled)."""


@record.command("export")
@click.option("--directory", help="Where serve keeps them. [default: record.directory of --config]")
@click.option("-o", "--output", "target", required=True, help="A directory to copy them into; - for a tar on stdout.")
@config_option("The configuration serve runs with, for record.directory.")
def record_export(directory: str | None, target: str, config_path: str | None) -> None:
    """Copy the kept reviews out, e.g. `kubectl exec deploy/podmutate -- podmutate record export -o - > r.tar`."""
    from webhook.ops.record import export_directory, export_tar, recording_directory

    source = directory or recording_directory(load_or_exit(config_path).config.record)
    if not os.path.isdir(source):
        raise click.ClickException(f"{source}: no reviews kept here (is record.enabled on, and is this its directory?)")
    if target == "-":
        sys.stdout.buffer.write(export_tar(source))
        return
    count = export_directory(source, target)
    click.echo(f"{count} reviews copied into {target}", err=True)


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--config", "candidate_path", required=True, type=click.Path(dir_okay=False, exists=True), help="The candidate."
)
@click.option(
    "--current",
    "current_path",
    type=click.Path(dir_okay=False),
    envvar=CONFIG_ENV,
    help=f"The configuration in force. [default: ${CONFIG_ENV}, else the built-in one]",
)
@click.option("--env-file", type=click.Path(dir_okay=False, exists=True), help="NAME=value lines: serve's environment.")
def replay(sources: tuple[str, ...], candidate_path: str, current_path: str | None, env_file: str | None) -> None:
    """Run recorded reviews (exported directories or tars) through the configuration in force and a
    candidate: per job type, how many pods change and how; exit 1 on any pod the candidate would
    deny, fail or make invalid."""
    import pathlib
    import tarfile

    from webhook.ops.cases import read_env
    from webhook.ops.record import load_recorded
    from webhook.ops.record import replay as replay_reviews

    environ = {**os.environ, **(read_env(pathlib.Path(env_file)) if env_file else {})}
    try:
        current = load_engine(current_path, environ=environ)
        candidate = load_engine(candidate_path, environ=environ)
    except ConfigError as error:
        raise click.ClickException(f"invalid configuration: {error}") from None
    try:
        recorded = load_recorded(sources)
    except (ValueError, OSError, tarfile.TarError) as error:
        raise click.ClickException(str(error)) from None
    if not recorded:
        raise click.ClickException(f"no recorded reviews in {', '.join(sources)}")
    report = replay_reviews(recorded, current, candidate)
    for line in report.lines():
        click.echo(line)
    if report.problems:
        sys.exit(1)
