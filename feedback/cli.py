"""The ``flywheel`` command line: noun-verb commands over the components.

    flywheel broker start|stop|status     the embedded Tansu broker
    flywheel ingest                       run the ingestion consumer (Kafka → Iceberg)
    flywheel replay SOURCE...             send real data sets through Kafka
    flywheel lake report                  what landed, quarantine, first KPIs
    flywheel kpi list|show|compare|rebuild|refresh|follow|status
    flywheel dashboard                    the Streamlit dashboard on the lake and KPI tables
    flywheel dataset build|list|show|export   curated SFT / preference / KTO datasets
    flywheel finetune launch|status|list|stop|logs|eval   fine-tune jobs (local or SageMaker) and evaluation
    flywheel reward train|list            reward models from preference pairs
    flywheel topics build|assign|list|show|drift   prompt topics, satisfaction per topic, drift
    flywheel synth run                    synthetic training data for chosen topics
    flywheel demo                         all of the above on the real data, one command
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import typer

from feedback.config import IngestSettings, LakeSettings, kafka_settings
from feedback.errors import FlywheelError
from feedback.kpi.cli import kpi_app
from feedback.topics.cli import topics_app
from feedback.cli_errors import fail as _fail
from finetune.cli import dataset_app
from finetune.jobs.cli import finetune_app
from finetune.reward_cli import reward_app
from finetune.synth.cli import synth_app

app = typer.Typer(help="Flywheel: LLM feedback events → Kafka → Iceberg → KPIs → datasets → fine-tunes.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
broker_app = typer.Typer(help="The embedded Kafka-protocol broker (Tansu, memory only).", no_args_is_help=True)
lake_app = typer.Typer(help="The Iceberg lake.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(lake_app, name="lake")
app.add_typer(kpi_app, name="kpi")
app.add_typer(dataset_app, name="dataset")
app.add_typer(finetune_app, name="finetune")
app.add_typer(reward_app, name="reward")
app.add_typer(topics_app, name="topics")
app.add_typer(synth_app, name="synth")

ALL_SOURCES = ["oasst1", "tulu", "hh_rlhf", "feedbackqa"]


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.INFO if verbose else logging.CRITICAL)


@broker_app.command("start")
def broker_start() -> None:
    """Start Tansu on 127.0.0.1 (FLYWHEEL_BROKER_PORT, default 9092) and create the topics."""
    from feedback.bus.broker import EmbeddedBroker

    try:
        status = EmbeddedBroker().start(kafka_settings())
    except FlywheelError as exc:
        _fail(exc)
    typer.echo(f"broker running: pid {status.pid}, bootstrap {status.bootstrap_servers}, log {status.log_path}")


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the embedded broker (its in-memory topics and offsets are lost)."""
    from feedback.bus.broker import EmbeddedBroker

    typer.echo("broker stopped" if EmbeddedBroker().stop() else "broker was not running")


@broker_app.command("status")
def broker_status() -> None:
    """Say whether the embedded broker runs; exit 1 if not."""
    from feedback.bus.broker import EmbeddedBroker

    status = EmbeddedBroker().status()
    typer.echo(f"{'running' if status.running else 'not running'}: bootstrap {status.bootstrap_servers}, pid {status.pid}")
    raise typer.Exit(0 if status.running else 1)


@app.command("ingest")
def ingest(idle_exit_s: Optional[float] = typer.Option(None, help="Exit after this many seconds without records.")) -> None:
    """Consume the event topics into the lake until SIGTERM/SIGINT (exactly-once effect)."""
    from feedback.ingest.consumer import IngestConsumer, install_signal_handlers

    try:
        consumer = IngestConsumer(kafka=kafka_settings(), ingest=IngestSettings(), lake=LakeSettings())
    except FlywheelError as exc:
        _fail(exc)
    install_signal_handlers(consumer)
    stats = consumer.run(idle_exit_s=idle_exit_s)
    typer.echo(f"ingest stopped: {stats.records} records, appended {stats.appended}, quarantined {stats.quarantined}")


@app.command("replay")
def replay_cmd(
    sources: list[str] = typer.Argument(..., help=f"Any of {', '.join(ALL_SOURCES)}, or 'all'."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the data sets (default ../shared/data)."),
    project: str = typer.Option("default", help="Project name put on every event."),
) -> None:
    """Map real data sets to events and send them through Kafka with the SDK."""
    from feedback.replay.run import replay
    from feedback.replay.sources import default_data_dir

    names = ALL_SOURCES if sources == ["all"] else sources
    try:
        result = replay(names, data_dir or default_data_dir(), kafka_settings(), project=project)
    except FlywheelError as exc:
        _fail(exc)
    for (source, event_type), n in sorted(result.produced.items()):
        typer.echo(f"{source:12s} {event_type:12s} {n:8d}")
    st = result.sdk_stats
    typer.echo(f"sent {result.total} events in {result.seconds:.1f}s: delivered {st['delivered']}, spooled {st['spooled']}, "
               f"invalid {st['invalid']}, errors {st['errors']}")


@lake_app.command("report")
def lake_report() -> None:
    """Events in the lake by source and type, quarantine by reason, first KPIs per model."""
    from feedback.lake.catalog import open_catalog
    from feedback.lake.read import lake_connection
    from feedback.report import build_report, format_report

    typer.echo(format_report(build_report(lake_connection(open_catalog()))))


@app.command("dashboard")
def dashboard_cmd(
    port: Optional[int] = typer.Option(None, help="Port (FLYWHEEL_DASHBOARD_PORT, default 8501)."),
    host: Optional[str] = typer.Option(None, help="Address to bind (FLYWHEEL_DASHBOARD_HOST, default 127.0.0.1)."),
) -> None:
    """Serve the dashboard (Streamlit) on the lake and the KPI tables until Ctrl-C."""
    from dashboards.config import DashboardSettings
    from dashboards.server import command, url

    overrides = {k: v for k, v in {"port": port, "host": host}.items() if v is not None}
    settings = DashboardSettings(**overrides)
    typer.echo(f"dashboard: {url(settings)}")
    args = command(settings)
    os.execv(args[0], args)


@app.command("demo")
def demo_cmd(
    keep_running: bool = typer.Option(False, help="Leave the broker, consumer and dashboard running afterwards."),
    serve: bool = typer.Option(True, help="Serve the dashboard on the live pipeline until Ctrl-C (--no-serve: exit)."),
    sources: list[str] = typer.Option(ALL_SOURCES, "--source", help="Data sets to replay."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the data sets (default ../shared/data)."),
) -> None:
    """The main job: start the broker and consumer, replay the real data, wait for the lake, report."""
    from feedback.demo import run_demo

    try:
        run_demo(sources, data_dir, keep_running=keep_running, serve=serve, echo=typer.echo)
    except FlywheelError as exc:
        _fail(exc)


if __name__ == "__main__":
    app()
