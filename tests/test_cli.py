"""The ``flywheel`` CLI through typer's CliRunner, against a real broker and lake."""

from typer.testing import CliRunner

from feedback.cli import app
from feedback.sdk.client import FlywheelClient

runner = CliRunner()


def env_for(stack):
    return {**stack.env, "FLYWHEEL_BROKER_PORT": str(stack.port)}


def test_broker_status_start_stop(tmp_path):
    from tests.stack import Stack

    stack = Stack(tmp_path / "fw")
    env = env_for(stack)
    assert runner.invoke(app, ["broker", "status"], env=env).exit_code == 1
    started = runner.invoke(app, ["broker", "start"], env=env)
    assert started.exit_code == 0, started.output
    assert f"127.0.0.1:{stack.port}" in started.output
    assert runner.invoke(app, ["broker", "status"], env=env).exit_code == 0
    assert "broker stopped" in runner.invoke(app, ["broker", "stop"], env=env).output
    assert runner.invoke(app, ["broker", "status"], env=env).exit_code == 1


def test_replay_ingest_and_report(stack, data_dir):
    env = env_for(stack)
    replayed = runner.invoke(app, ["replay", "tulu", "--data-dir", str(data_dir)], env=env)
    assert replayed.exit_code == 0, replayed.output
    assert "sent 3763 events" in replayed.output  # 1,048 interactions + 1,810 thumbs + 905 preferences
    ingested = runner.invoke(app, ["ingest", "--idle-exit-s", "2"], env=env)
    assert ingested.exit_code == 0, ingested.output
    report = runner.invoke(app, ["lake", "report"], env=env)
    assert report.exit_code == 0
    assert "replay:tulu" in report.output and "tulu_65B" in report.output


def test_unknown_source_is_a_clear_error(stack):
    result = runner.invoke(app, ["replay", "nope"], env=env_for(stack))
    assert result.exit_code == 1
    assert "nope" in result.output


def test_sdk_client_is_importable_from_the_package():
    from feedback import FlywheelClient as exported

    assert exported is FlywheelClient
