"""The `podmutate` command: serve, mutate offline, list plugins, manage certificates."""

import datetime
import json
import logging
import os
import ssl
import sys

import click
import yaml

from certs import SERVING_DAYS, SERVING_RENEW_DAYS
from webhook import admission
from webhook.config import ConfigError, load_config, yaml_problem
from webhook.plugins import plugin_rows

log = logging.getLogger("podmutate")

STATE_ENV = "PODMUTATE_STATE_DIR"


def default_state_dir():
    """Where `serve` keeps its certificates when not told: $PODMUTATE_STATE_DIR, else the XDG state dir."""
    if os.environ.get(STATE_ENV):
        return os.environ[STATE_ENV]
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "podmutate")


def load_or_exit(config_path):
    try:
        return load_config(config_path)
    except ConfigError as error:
        raise click.ClickException(f"invalid configuration: {error}") from None


@click.group()
@click.version_option(package_name="podmutate")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
def main(log_level):
    """podmutate: make data-sync job pods right at admission time."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535))
@click.option("--cert-dir", type=click.Path(file_okay=False),
              help="Directory with tls.crt and tls.key; created with a CA when empty. "
                   "[default: $PODMUTATE_STATE_DIR or ~/.local/state/podmutate, under certs/]")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="PODMUTATE_CONFIG",
              help="YAML configuration file, reloaded when it changes. [env: PODMUTATE_CONFIG]")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes. [default: cores, 2 to 4]")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Threads per worker that run reviews (connections are read by the event loop, not by these).")
@click.option("--service", envvar="PODMUTATE_SERVICE", help="Service name the certificate must cover.")
@click.option("--namespace", envvar="PODMUTATE_NAMESPACE", help="Namespace of --service.")
@click.option("--webhook-config", envvar="PODMUTATE_WEBHOOK_CONFIG",
              help="MutatingWebhookConfiguration whose caBundle to keep in step with the CA.")
@click.option("--cert-secret", envvar="PODMUTATE_CERT_SECRET",
              help="Secret (in --namespace) where replicas share the certificates podmutate manages.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG",
              help="Credentials for --webhook-config and --cert-secret outside a cluster.")
@click.option("--rotate-every", default=3600.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds between certificate checks, when podmutate manages its certificates.")
@click.option("--cert-validity", default=SERVING_DAYS * 86400.0, show_default=True, type=click.FloatRange(min=60),
              help="Seconds a serving certificate podmutate issues is valid.")
@click.option("--cert-renew-before", default=SERVING_RENEW_DAYS * 86400.0, show_default=True,
              type=click.FloatRange(min=1), help="Renew a serving certificate this many seconds before it expires.")
def serve(host, port, cert_dir, config_path, workers, threads, service, namespace, webhook_config, cert_secret,
          kubeconfig, rotate_every, cert_validity, cert_renew_before):
    """Serve the webhook over HTTPS (POST /mutate, GET /healthz, GET /readyz).

    When the certificate directory is empty or holds podmutate's own CA key, podmutate manages
    the certificates: creates, renews before expiry and rolls the CA over. Otherwise (a mounted
    cert-manager Secret, say) it only follows the files as they change.
    """
    from certs import CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE, serving_names
    from certs.reload import PairRefused
    from certs.rotation import Keeper
    from webhook.server import WebhookServer

    config = load_or_exit(config_path)
    cert_dir = cert_dir or os.path.join(default_state_dir(), "certs")
    cert_file, key_file = os.path.join(cert_dir, CERT_FILE), os.path.join(cert_dir, KEY_FILE)
    names = serving_names(service, namespace or "default")
    publish = None
    if webhook_config:
        publish = ca_bundle_publisher(webhook_config, kubeconfig)
    on_ready = None
    managed = not (os.path.exists(cert_file) and os.path.exists(key_file)) or \
        os.path.exists(os.path.join(cert_dir, CA_KEY_FILE))
    if managed:
        store = None
        if cert_secret:
            from webhook.kubeapi import api_client
            from certs.secret import SecretStore

            store = SecretStore(api_client(kubeconfig), namespace or "default", cert_secret)
        keeper = Keeper(cert_dir, names, publish=publish, store=store, interval=rotate_every,
                        serving_days=cert_validity / 86400,
                        renew_before=datetime.timedelta(seconds=min(cert_renew_before, cert_validity / 2)))
        api_errors(keeper.run_once)
        on_ready = keeper.start
        log.info("certificates in %s are managed by podmutate; clients verify the server with %s",
                 cert_dir, os.path.join(cert_dir, CA_FILE))
    elif publish is not None and os.path.exists(os.path.join(cert_dir, CA_FILE)):
        with open(os.path.join(cert_dir, CA_FILE), "rb") as stream:
            publish(stream.read())
    log.info("serving https://%s:%d/mutate with plugins: %s", host, port,
             ", ".join(row["name"] for row in plugin_rows(config.plugin_manager)))
    try:
        server = WebhookServer(host=host, port=port, cert_file=cert_file, key_file=key_file, config_path=config_path,
                               cert_dir=cert_dir, workers=workers, threads=threads, on_ready=on_ready,
                               log_level=logging.getLevelName(logging.getLogger().level))
    except (PairRefused, ssl.SSLError, OSError) as error:
        raise click.ClickException(f"cannot serve the certificate pair in {cert_dir}: {error}") from None
    server.run()


def ca_bundle_publisher(webhook_config, kubeconfig):
    from certs.inject import inject_ca_bundle
    from webhook.kubeapi import api_client

    def publish(bundle):
        changed = inject_ca_bundle(api_client(kubeconfig), webhook_config, bundle)
        if changed:
            log.info("caBundle of %s updated for %s", webhook_config, ", ".join(changed))

    return publish


@main.command()
@click.option("-f", "--filename", "source", required=True, type=click.File("r"),
              help="Pod, AdmissionReview, v1 List or multi-document YAML; - for standard input.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="PODMUTATE_CONFIG")
@click.option("--patch", is_flag=True, help="Print the JSONPatch of each Pod instead of the objects.")
@click.option("-o", "--output", default="yaml", show_default=True, type=click.Choice(["yaml", "json"]))
def mutate(source, config_path, patch, output):
    """Mutate pods offline, as the webhook would: no cluster, no server."""
    config = load_or_exit(config_path)
    name = getattr(source, "name", "-")
    documents = []
    try:
        for document in yaml.safe_load_all(source):
            documents.append(document)
    except yaml.YAMLError as error:
        raise click.ClickException(f"{name}: document {len(documents) + 1}: {yaml_problem(error)}") from None
    documents = [document for document in documents if document is not None]
    results, failed = [], False
    for document in documents:
        try:
            results.append(mutate_document(document, config, patch))
        except (admission.PluginError, admission.Denied, admission.ReviewError) as error:
            click.echo(f"error: {describe(document)}: {error}", err=True)
            failed = True
    emit(results, patch, output)
    if failed:
        sys.exit(1)


def describe(document):
    if not isinstance(document, dict):
        return f"a {type(document).__name__}"
    metadata = document.get("metadata") or {}
    return f"{document.get('kind', 'object')} {metadata.get('name') or metadata.get('generateName') or '(unnamed)'}"


def mutate_document(document, config, patch_only):
    """The mutated object (or the patch of each pod in it) for one YAML document."""
    if not isinstance(document, dict):
        return document
    kind = document.get("kind")
    if kind == "List":
        items = [mutate_document(item, config, patch_only) for item in document.get("items") or []]
        return items if patch_only else {**document, "items": items}
    if kind == "AdmissionReview":
        request_body = admission.check_review(document)
        pod = request_body.get("object")
        request = admission.AdmissionRequest(uid=request_body["uid"], namespace=request_body.get("namespace", ""),
                                             dry_run=bool(request_body.get("dryRun")))
        if not admission.is_pod_create(request_body) or not isinstance(pod, dict):
            return [] if patch_only else pod
        return finish(admission.mutate(pod, config, request), patch_only)
    if kind == "Pod" and str(document.get("apiVersion", "v1")) == "v1":
        return finish(admission.mutate(document, config), patch_only)
    return [] if patch_only else document


def finish(mutation, patch_only):
    for warning in mutation.warnings:
        click.echo(f"warning: {warning}", err=True)
    return mutation.patch if patch_only else mutation.pod


def emit(results, patch_only, output):
    if output == "json":
        if patch_only:
            for result in results:
                click.echo(json.dumps(result))
        elif len(results) == 1:
            click.echo(json.dumps(results[0], indent=2))
        else:
            click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": results}, indent=2))
    else:
        click.echo(yaml.safe_dump_all(results, sort_keys=False, default_flow_style=False), nl=False)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="PODMUTATE_CONFIG")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(config_path, as_json):
    """List built-in and installed plugins: name, version, hooks, enabled."""
    config = load_or_exit(config_path)
    rows = plugin_rows(config.plugin_manager, config.disabled_plugins)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NAME':<20} {'VERSION':<10} {'ENABLED':<8} HOOKS")
    for row in rows:
        click.echo(f"{row['name']:<20} {row['version'] or '-':<10} {'yes' if row['enabled'] else 'no':<8} "
                   f"{', '.join(row['hooks'])}")


@main.group()
def certs():
    """Create, inspect and publish the webhook's certificates."""


@certs.command("create")
@click.option("--out", "directory", required=True, type=click.Path(file_okay=False))
@click.option("--dns", multiple=True, help="A DNS name to cover (repeatable).")
@click.option("--ip", multiple=True, help="An IP address to cover (repeatable).")
@click.option("--service", help="A Service name: covers S, S.N, S.N.svc, S.N.svc.cluster.local.")
@click.option("--namespace", default="default", show_default=True, help="Namespace of --service.")
@click.option("--key-type", default="ecdsa", show_default=True, type=click.Choice(["ecdsa", "rsa"]))
def certs_create(directory, dns, ip, service, namespace, key_type):
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
def certs_show(directory):
    """Show the serving certificate in DIRECTORY; exit 1 when expired or not issued by its CA."""
    from certs import describe

    lines, ok = describe(directory)
    for line in lines:
        click.echo(line)
    if not ok:
        sys.exit(1)


@certs.command("inject")
@click.option("--webhook-config", required=True, help="MutatingWebhookConfiguration name.")
@click.option("--ca", "ca_file", required=True, type=click.File("rb"), help="CA bundle (PEM), e.g. DIR/ca.crt.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
def certs_inject(webhook_config, ca_file, kubeconfig):
    """Set the caBundle of every webhook in a MutatingWebhookConfiguration (idempotent)."""
    from certs.inject import inject_ca_bundle
    from webhook.kubeapi import api_client

    bundle = ca_file.read()
    changed = api_errors(lambda: inject_ca_bundle(api_client(kubeconfig), webhook_config, bundle),
                         subject=webhook_config)
    click.echo(f"{webhook_config}: " + (f"caBundle set for {', '.join(changed)}" if changed else "already in step"))


def api_errors(action, subject=None):
    """Run `action()`; an API or connection error becomes one clear line, never a traceback.

    With a `subject` (the object the call was about), the line names it instead of quoting
    the API server's message.
    """
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from urllib3.exceptions import HTTPError

    from webhook.kubeapi import one_line

    try:
        return action()
    except (ApiException, HTTPError) as error:
        raise click.ClickException(one_line(error, subject)) from None
    except ConfigException as error:
        raise click.ClickException(f"no credentials for the API server: {error}") from None


@main.command()
@click.option("-f", "--filename", "source", required=True, type=click.File("r"), help="Job description (YAML).")
@click.option("--wait", is_flag=True,
              help="Wait for the init container, upload the job's files, wait for the end; exit with its code.")
@click.option("--init-timeout", default=300.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds each wait for the init container may take.")
@click.option("--keep-running", is_flag=True,
              help="Do not kill the connection's live pods first (by default there is one live run per connection).")
@click.option("--keep-pod", is_flag=True, help="With --wait: keep the pod when a wait or the upload gives up.")
@click.option("--request-timeout", default=30.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds to wait for the API server to answer one call.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
def launch(source, wait, init_timeout, keep_running, keep_pod, request_timeout, kubeconfig):
    """Launch a job pod from a job description (YAML).

    Keys: job_type, image, connection_id, job_id, attempt, namespace, command, args, env, labels,
    security_context (the main container's), and files (name in /config -> content), uploaded
    with --wait.
    """
    from webhook.kubeapi import Timeouts
    from webhook.launcher import Job, JobError, KillTimeout, UploadError, WaitTimeout, core_api, run
    from webhook.launcher import launch as launch_pod

    try:
        job = Job.from_mapping(yaml.safe_load(source))
    except yaml.YAMLError as error:
        raise click.ClickException(f"{source.name}: {yaml_problem(error)}") from None
    except JobError as error:
        raise click.ClickException(f"{source.name}: {error}") from None
    core = api_errors(lambda: core_api(kubeconfig, Timeouts(read=request_timeout)))
    kill_running = not keep_running
    try:
        if not wait:
            pod = api_errors(lambda: launch_pod(core, job, kill_running=kill_running))
            click.echo(f"pod/{pod.metadata.name} created in {job.namespace}")
            return
        name, code = api_errors(lambda: run(core, job, init_timeout=init_timeout, kill_running=kill_running,
                                            keep_pod=keep_pod))
    except (WaitTimeout, UploadError, KillTimeout) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"pod/{name}: main exited with {code}")
    sys.exit(code)


@main.command()
@click.option("--connection", "connection_id", required=True, help="The connection whose pods to kill.")
@click.option("--namespace", default="default", show_default=True)
@click.option("--dry-run", is_flag=True, help="List the live pods without deleting them.")
@click.option("--timeout", default=45.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--propagation", default="Foreground", show_default=True,
              type=click.Choice(["Foreground", "Background"]), help="Deletion propagation policy.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
def kill(connection_id, namespace, dry_run, timeout, propagation, kubeconfig):
    """Kill every live pod of a connection, across all its attempts, within --timeout seconds."""
    from webhook.kubeapi import Timeouts
    from webhook.launcher import KillTimeout, core_api, kill_connection

    # Each call may take a part of the whole: an API server that never answers cannot hold a kill longer.
    timeouts = Timeouts(connect=min(5.0, max(timeout / 4, 1.0)), read=max(timeout / 2, 1.0), attempts=2)
    try:
        names = api_errors(lambda: kill_connection(core_api(kubeconfig, timeouts), namespace, connection_id,
                                                   timeout=timeout, dry_run=dry_run, propagation=propagation))
    except KillTimeout as error:
        raise click.ClickException(str(error)) from None
    verb = "would delete" if dry_run else "deleted"
    for name in names:
        click.echo(f"{verb} pod/{name}")
    if not names:
        click.echo(f"no live pods of connection {connection_id} in {namespace}")


@main.command()
@click.option("-f", "--filename", "source", type=click.File("r"),
              help="Rendered manifests (e.g. `kubectl kustomize manifests/base`), - for standard input; "
                   "without it, the live cluster.")
@click.option("--webhook-config", default="podmutate", show_default=True, help="The configuration to check.")
@click.option("--namespace", help="podmutate's namespace. [default: its Service's]")
@click.option("--url", help="Where to reach the webhook for the certificate check (a port-forward, say).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
def doctor(source, webhook_config, namespace, url, kubeconfig):
    """Check a webhook configuration for what takes clusters down; exit 1 on any failure."""
    from webhook.kubeapi import api_client
    from webhook.doctor import check, from_cluster, from_documents

    if source is not None:
        try:
            documents = list(yaml.safe_load_all(source))
        except yaml.YAMLError as error:
            raise click.ClickException(f"{source.name}: {yaml_problem(error)}") from None
        configurations, namespaces = from_documents(documents)
    else:
        configurations, namespaces = api_errors(lambda: from_cluster(api_client(kubeconfig)))
    findings = check(configurations, namespaces, name=webhook_config, own_namespace=namespace, url=url)
    for finding in findings:
        click.echo(str(finding))
    if any(finding.level == "fail" for finding in findings):
        sys.exit(1)
