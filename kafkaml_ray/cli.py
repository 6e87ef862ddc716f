"""The `kafkaml-ray` command line. Every command has --help; list/show take --json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from kafkaml_ray._private.clikit import (
    UserErrorGroup,
    client_from_env,
    emit,
    json_option,
    metrics_text,
    parts_text,
    results_table,
    settings_from_env,
    table,
)

__all__ = ["main", "cli"]


@click.group(cls=UserErrorGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens.")
@click.version_option(package_name="kafkaml-ray")
def cli(verbose: bool) -> None:
    """kafkaml-ray: train and serve ML models straight from Kafka streams, on Ray.

    Settings come from the environment: KAFKAML_HOME (data directory, ~/.kafkaml-ray),
    KAFKAML_BOOTSTRAP (an existing Kafka; unset = the embedded broker), KAFKAML_BROKER_PORT,
    KAFKAML_DB, KAFKAML_ARTIFACTS, RAY_ADDRESS, KAFKAML_CONTROL_TOPIC, KAFKAML_KAFKA_* (librdkafka
    settings such as KAFKAML_KAFKA_SECURITY_PROTOCOL).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# -- broker --------------------------------------------------------------------------------
@cli.group()
def broker() -> None:
    """The embedded Apache Kafka broker (KRaft, single node, on 127.0.0.1)."""


def _broker():
    from kafkaml_ray.broker import EmbeddedKafka

    settings = settings_from_env()
    if not settings.embedded_broker:
        raise click.UsageError(
            f"KAFKAML_BOOTSTRAP is set ({settings.bootstrap}): the embedded broker is not used"
        )
    return EmbeddedKafka(settings)


def _broker_text(s) -> str:
    state = f"running (pid {s.pid})" if s.running else "stopped"
    return f"kafka {s.version}: {state} on {s.address}\nlog directory: {s.log_dir}"


@broker.command("start")
@json_option
def broker_start(as_json: bool) -> None:
    """Start the broker (resolving its jars with Maven the first time); harmless twice."""
    emit(_broker().start(), as_json, _broker_text)


@broker.command("stop")
def broker_stop() -> None:
    """Stop the broker; its topics stay on disk for the next start."""
    click.echo("stopped" if _broker().stop() else "not running")


@broker.command("status")
@json_option
def broker_status(as_json: bool) -> None:
    """Where the broker runs, its version and log directory."""
    emit(_broker().status(), as_json, _broker_text)


# -- stack ---------------------------------------------------------------------------------
@cli.command()
@click.option("--ui/--no-ui", default=True, show_default=True, help="Also serve the control panel.")
@json_option
def up(ui: bool, as_json: bool) -> None:
    """Start the local stack: Kafka broker, Ray head, control listener (and UI)."""
    from kafkaml_ray import stack

    emit(stack.up(settings_from_env(), with_ui=ui), as_json, parts_text)


@cli.command()
@json_option
def down(as_json: bool) -> None:
    """Stop the local stack."""
    from kafkaml_ray import stack

    emit(stack.down(settings_from_env()), as_json, parts_text)


@cli.command()
@json_option
def status(as_json: bool) -> None:
    """Each part of the stack, whether it runs, and its address."""
    from kafkaml_ray import stack

    emit(stack.status(settings_from_env()), as_json, parts_text)


# -- models --------------------------------------------------------------------------------
@cli.group()
def model() -> None:
    """Register, list, show and delete model code."""


def _model_text(m) -> str:
    return (
        f"model {m.id} {m.name!r} ({m.framework})\n"
        f"  input shape:  {m.input_shape}\n  output shape: {m.output_shape}\n"
        f"  parameters:   {m.param_count:,}\n  description:  {m.description}"
    )


@model.command("add")
@click.argument("name")
@click.option("-f", "--framework", type=click.Choice(["pytorch", "tensorflow"]), required=True)
@click.option(
    "--file",
    "code_file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The model code (Kafka-ML style).",
)
@click.option(
    "--imports",
    "imports_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A file of imports run before the code.",
)
@click.option("-d", "--description", default="")
@json_option
def model_add(name, framework, code_file, imports_file, description, as_json) -> None:
    """Validate model code in a Ray worker and register it as NAME."""
    imports = Path(imports_file).read_text() if imports_file else ""
    m = client_from_env().add_model(
        name, framework, Path(code_file).read_text(), imports, description
    )
    emit(m, as_json, _model_text)


@model.command("list")
@json_option
def model_list(as_json: bool) -> None:
    """Registered models."""
    emit(
        client_from_env().list_models(),
        as_json,
        lambda ms: table(
            [(m.id, m.name, m.framework, m.input_shape, m.output_shape, m.param_count) for m in ms],
            ["id", "name", "framework", "input", "output", "params"],
        ),
    )


@model.command("show")
@click.argument("ref")
@click.option("--code", is_flag=True, help="Also print the code.")
@json_option
def model_show(ref: str, code: bool, as_json: bool) -> None:
    """One model by id or name."""
    m = client_from_env().get_model(ref)
    emit(m, as_json, lambda m: _model_text(m) + (f"\n\n{m.imports}\n{m.code}" if code else ""))


@model.command("versions")
@click.argument("ref")
@click.option("--code", "number", type=int, default=None, help="Print version N's code.")
@json_option
def model_versions(ref: str, number: int | None, as_json: bool) -> None:
    """The versions of a model's code that its results trained with (updating the code adds
    one when it is next deployed); with --code N, that version's imports and code."""
    client = client_from_env()
    if number is not None:
        v = client.get_model_version(ref, number)
        emit(v, as_json, lambda v: f"{v.imports}\n{v.code}".strip())
        return
    emit(
        client.list_model_versions(ref),
        as_json,
        lambda vs: table(
            [(v.number, v.sha256[:12], v.created_at) for v in vs], ["version", "sha256", "added"]
        ),
    )


@model.command("delete")
@click.argument("ref")
def model_delete(ref: str) -> None:
    """Delete a model (refused while a configuration uses it)."""
    client_from_env().delete_model(ref)
    click.echo(f"deleted model {ref}")


# -- configurations ------------------------------------------------------------------------
@cli.group()
def config() -> None:
    """Configurations: named sets of models trained together."""


def _config_text(c) -> str:
    models = ", ".join(f"{i} {n!r}" for i, n in zip(c.model_ids, c.model_names, strict=True))
    return f"configuration {c.id} {c.name!r}: {models}\n  description: {c.description}"


@config.command("create")
@click.argument("name")
@click.argument("model_args", metavar="[MODEL]...", nargs=-1)
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    help="A model id or name; repeat for several (or name them after NAME).",
)
@click.option("-d", "--description", default="")
@json_option
def config_create(name, model_args, models, description, as_json) -> None:
    """Create configuration NAME from models of either framework (ids or names):
    `config create digits cnn-torch cnn-keras`."""
    chosen = [*model_args, *models]
    if not chosen:
        raise click.UsageError("name at least one model: config create NAME MODEL...")
    emit(
        client_from_env().create_configuration(name, chosen, description),
        as_json,
        _config_text,
    )


@config.command("list")
@json_option
def config_list(as_json: bool) -> None:
    """Configurations."""
    emit(
        client_from_env().list_configurations(),
        as_json,
        lambda cs: table(
            [(c.id, c.name, ", ".join(c.model_names)) for c in cs], ["id", "name", "models"]
        ),
    )


@config.command("show")
@click.argument("ref")
@json_option
def config_show(ref: str, as_json: bool) -> None:
    """One configuration by id or name."""
    emit(client_from_env().get_configuration(ref), as_json, _config_text)


@config.command("delete")
@click.argument("ref")
def config_delete(ref: str) -> None:
    """Delete a configuration."""
    client_from_env().delete_configuration(ref)
    click.echo(f"deleted configuration {ref}")


# -- results -------------------------------------------------------------------------------
@cli.group()
def result() -> None:
    """Training results: list and filter, compare, trace (lineage), reproduce, tag, download
    weights, delete."""


@result.command("list")
@click.option("-d", "--deployment", "deployment_id", type=int, help="Only this deployment's.")
@click.option("--datasource", "datasource_id", type=int, help="Trained on this datasource.")
@click.option("--topic", help="Trained on data from this topic.")
@click.option("--model", help="Of this model (name).")
@click.option("--code-version", type=int, help="With this version of its model's code.")
@click.option("--framework", type=click.Choice(["pytorch", "tensorflow"]))
@click.option(
    "--status", type=click.Choice(["waiting", "training", "finished", "failed", "stopped"])
)
@click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE",
    help="A training argument or hyper-parameter value, e.g. lr=0.01 (repeatable).",
)  # fmt: skip
@click.option(
    "--metric", "metrics", multiple=True, metavar="RANGE",
    help="A final metric's range: test_accuracy>=0.9, val_loss<=0.3, test_mae=0..2 "
    "(test_, val_ or train_ metrics; repeatable).",
)  # fmt: skip
@click.option("--tag", help="Tagged so (result tag).")
@click.option("--text", help="Found in the notes or tags.")
@click.option("--tune", "tune_id", type=int, help="Trials of this Tune search.")
@json_option
def result_list(deployment_id, params, metrics, as_json, **filters) -> None:
    """Results side by side: model, metrics, training time, status; filtered by what they
    came from (datasource, topic, model, code version, parameters) and what they reached."""
    from kafkaml_ray.schemas import metric_filter, param_filter

    found = client_from_env().list_results(
        deployment_id,
        params=dict(param_filter(p) for p in params),
        metrics=dict(metric_filter(m) for m in metrics),
        **{k: v for k, v in filters.items() if v is not None},
    )
    emit(found, as_json, results_table)


@result.command("compare")
@click.argument("result_ids", type=int, nargs=-1, required=True)
@json_option
def result_compare(result_ids, as_json) -> None:
    """Results side by side: what they came from and what they reached; the rows that
    differ are marked with *."""
    from kafkaml_ray.schemas import compare

    client = client_from_env()
    rows = compare([client.get_result(i) for i in result_ids])
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo(
        table(
            [(("* " if row["differs"] else "  ") + row["name"], *row["values"]) for row in rows],
            ["", *(f"result {i}" for i in result_ids)],
        )
    )


@result.command("lineage")
@click.argument("result_id", type=int)
@click.option("--dot", is_flag=True, help="Print it as a Graphviz graph (dot -Tpng).")
@json_option
def result_lineage(result_id: int, dot: bool, as_json: bool) -> None:
    """Where a result came from and what came of it: datasource → deployment or search →
    result → published versions → the inferences that served it."""
    from kafkaml_ray.lineage import tree_dot, tree_text

    info = client_from_env().lineage(result_id)
    if dot:
        click.echo(tree_dot(info.model_dump()))
    else:
        emit(info, as_json, lambda t: tree_text(t.model_dump()))


@result.command("reproduce")
@click.argument("result_id", type=int)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the training.")
@json_option
def result_reproduce(result_id: int, wait: bool, as_json: bool) -> None:
    """Train a result again: the same model code version, parameters and datasource (its
    control message is re-sent); the new result is linked to it as a reproduction."""
    from kafkaml_ray._private.clikit import follow

    client = client_from_env()
    dep = client.reproduce(result_id)
    if wait and not as_json:
        click.echo(f"deployment {dep.id} reproduces result {result_id}")
        dep = follow(client, dep.id)
    emit(dep.results, as_json, results_table)


@result.command("export")
@click.argument("result_id", type=int)
@click.option(
    "--mlflow", "tracking_uri", required=True, metavar="URI",
    help="An MLflow tracking URI: sqlite:///mlflow.db, a directory, http://host:5000.",
)  # fmt: skip
@click.option("--experiment", default="kafkaml-ray", show_default=True)
def result_export(result_id: int, tracking_uri: str, experiment: str) -> None:
    """Log a result to MLflow: parameters, per-epoch metrics, test metrics, the datasource
    as a dataset input, the code, the weights, the confusion matrix and its lineage (needs
    the mlflow extra: pip install 'kafkaml-ray[mlflow]')."""
    from kafkaml_ray.tracking import export_result

    run_id = export_result(client_from_env(), result_id, tracking_uri, experiment)
    click.echo(f"result {result_id} exported to {tracking_uri} as MLflow run {run_id}")


@result.command("tag")
@click.argument("result_id", type=int)
@click.argument("tags", nargs=-1, required=True)
@click.option("--remove", is_flag=True, help="Remove these tags instead.")
@json_option
def result_tag(result_id: int, tags, remove: bool, as_json: bool) -> None:
    """Tag a result (result list --tag finds it)."""
    r = client_from_env().tag_result(result_id, *tags, remove=remove)
    emit(r, as_json, lambda r: f"result {r.id} tags: {', '.join(r.tags) or '(none)'}")


@result.command("note")
@click.argument("result_id", type=int)
@click.argument("notes")
@json_option
def result_note(result_id: int, notes: str, as_json: bool) -> None:
    """Set a result's notes (result list --text finds them)."""
    r = client_from_env().set_result_notes(result_id, notes)
    emit(r, as_json, lambda r: f"result {r.id} notes: {r.notes}")


@result.command("show")
@click.argument("result_id", type=int)
@json_option
def result_show(result_id: int, as_json: bool) -> None:
    """One result with its learning curve."""

    def text(r) -> str:
        curve = table(
            [(h["epoch"], metrics_text(h["train"]), metrics_text(h["val"])) for h in r.history],
            ["epoch", "train", "validation"],
        )
        extra = f"\nweights: {r.weights_uri}" if r.weights_uri else ""
        if r.model_version is not None:
            extra += (
                f"\ncode: {r.model_name} version {r.model_version} (sha256 {r.code_sha256[:12]}; "
                f"kafkaml-ray model versions {r.model_id})"
            )
        if r.lineage:
            source = r.lineage.get("datasource") or {}
            params = ", ".join(f"{k}={v}" for k, v in r.params.items())
            extra += (
                f"\ndata: datasource {r.datasource_id} ({source.get('topic')}); params: "
                f"{params or 'none'} (kafkaml-ray result lineage {r.id})"
            )
        if r.tags or r.notes:
            extra += f"\ntags: {', '.join(r.tags) or 'none'}; notes: {r.notes or 'none'}"
        if r.phases:
            total = sum(r.phases.values())
            spent = ", ".join(f"{phase} {s:.2f}" for phase, s in r.phases.items())
            extra += f"\ntime by phase (s, {total:.1f} in all): {spent}"
        return results_table([r]) + "\n\nlearning curve:\n" + curve + extra

    emit(client_from_env().get_result(result_id), as_json, text)


@result.command("windows")
@click.argument("result_id", type=int)
@json_option
def result_windows(result_id: int, as_json: bool) -> None:
    """An online result's windows: each scored before it was trained on (prequential), then
    its training and validation metrics, the offsets it covers and the version it published."""

    def text(ws) -> str:
        rows = [
            (
                w.window,
                w.messages,
                w.malformed,
                metrics_text(w.prequential),
                metrics_text(w.train),
                metrics_text(w.val),
                " ".join(f"{k}[{a}:{b})" for k, (a, b) in w.offsets.items()),
                w.version or "",
            )
            for w in ws
        ]
        head = ["window", "messages", "malformed", "prequential", "train", "validation"]
        return table(rows, [*head, "offsets", "published"])

    emit(client_from_env().list_windows(result_id), as_json, text)


@result.command("versions")
@click.argument("result_id", type=int)
@json_option
def result_versions(result_id: int, as_json: bool) -> None:
    """An online result's published versions: when, after which window, with which metrics,
    trained through which offsets."""

    def text(vs) -> str:
        rows = [
            (
                v.version,
                v.window,
                v.created_at.isoformat(" ", "seconds"),
                metrics_text(v.metrics),
                " ".join(f"{k}@{n}" for k, n in v.offsets.items()),
            )
            for v in vs
        ]
        return table(rows, ["version", "window", "published", "metrics", "trained through"])

    emit(client_from_env().list_versions(result_id), as_json, text)


@result.command("download")
@click.argument("result_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File to write.")
@click.option("--version", type=int, help="An online result's published version (default: newest).")
def result_download(result_id: int, output: str | None, version: int | None) -> None:
    """Download trained weights (safetensors for PyTorch, .keras for Keras)."""
    name, blob = client_from_env().download_weights(result_id, version=version)
    path = Path(output or f"result-{result_id}-{name}")
    path.write_bytes(blob)
    click.echo(f"wrote {path} ({len(blob):,} bytes)")


@result.command("delete")
@click.argument("result_id", type=int)
def result_delete(result_id: int) -> None:
    """Delete a result and its artifacts."""
    client_from_env().delete_result(result_id)
    click.echo(f"deleted result {result_id}")


# -- datasources ---------------------------------------------------------------------------
@cli.group()
def datasource() -> None:
    """Data streams announced by control messages; re-send one to another deployment."""


def _datasource_text(d) -> str:
    return (
        f"datasource {d.id} for deployment {d.deployment_id}: {d.status}"
        + (f" ({d.error})" if d.error else "")
        + (f"\n  expired: {d.expired}" if d.expired else "")
        + f"\n  ranges: {d.topic}\n  format: {d.input_format} {json.dumps(d.input_config)}"
        + f"\n  messages: {d.total_msg}, malformed skipped: {d.malformed_count}"
        + f"\n  validation rate {d.validation_rate:g}, test rate {d.test_rate:g}"
        + f"\n  control message at {d.source_topic}:{d.source_partition}:{d.source_offset}"
    )


@datasource.command("list")
@json_option
def datasource_list(as_json: bool) -> None:
    """Stored control messages, accepted or refused; "expired" where Kafka no longer holds
    the data (retention deleted it)."""
    emit(
        client_from_env().list_datasources(),
        as_json,
        lambda ds: table(
            [
                (
                    d.id,
                    d.deployment_id,
                    "expired" if d.expired else d.status,
                    d.input_format,
                    d.total_msg,
                    d.malformed_count,
                    d.topic[:60],
                    (d.error or "")[:80],
                )
                for d in ds
            ],
            ["id", "deployment", "status", "format", "messages", "malformed", "ranges", "error"],
        ),
    )


@datasource.command("show")
@click.argument("datasource_id", type=int)
@json_option
def datasource_show(datasource_id: int, as_json: bool) -> None:
    """One datasource."""
    emit(client_from_env().get_datasource(datasource_id), as_json, _datasource_text)


@datasource.command("resend")
@click.argument("datasource_id", type=int)
@click.option("-d", "--deployment", "deployment_id", type=int, required=True)
def datasource_resend(datasource_id: int, deployment_id: int) -> None:
    """Train DEPLOYMENT on a stored stream without sending its data again."""
    client_from_env().resend_datasource(datasource_id, deployment_id)
    click.echo(f"re-sent datasource {datasource_id} to deployment {deployment_id}")


# -- the main job --------------------------------------------------------------------------
@cli.command()
@click.option("--keep-running/--stop", default=True, help="Leave the stack running afterwards.")
def demo(keep_running: bool) -> None:
    """The main job, end to end on embedded defaults."""
    from kafkaml_ray.demo import run

    run(settings_from_env(), keep_running=keep_running)


def _register_groups() -> None:
    from kafkaml_ray.kuberay.cli import k8s
    from kafkaml_ray.panel import ui_command
    from kafkaml_ray.serve.cli import infer
    from kafkaml_ray.train.cli import train, tune

    cli.add_command(infer)
    cli.add_command(k8s)
    cli.add_command(train)
    cli.add_command(tune)
    cli.add_command(ui_command)
    tune.add_command(tune_export)  # (here: MLflow export sits above the train layer)


@click.command("export")
@click.argument("tune_id", type=int)
@click.option(
    "--mlflow", "tracking_uri", required=True, metavar="URI", help="An MLflow tracking URI."
)
@click.option("--experiment", default="kafkaml-ray", show_default=True)
def tune_export(tune_id: int, tracking_uri: str, experiment: str) -> None:
    """Log a finished search to MLflow: a parent run with one child run per trial (needs
    the mlflow extra)."""
    from kafkaml_ray.tracking import export_tune

    run_id = export_tune(client_from_env(), tune_id, tracking_uri, experiment)
    click.echo(f"tune run {tune_id} exported to {tracking_uri} as MLflow run {run_id}")


_register_groups()


def main() -> None:
    cli(prog_name="kafkaml-ray")
