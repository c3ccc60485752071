import logging
from pathlib import Path

import pytest

from feedback.ingest.lag import wait_until_caught_up
from feedback.replay.run import replay
from feedback.replay.sources import default_data_dir
from tests.stack import Stack

logging.getLogger("kafka").setLevel(logging.CRITICAL)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data sets (../shared/data)."""
    return default_data_dir()


@pytest.fixture
def stack(tmp_path):
    """A fresh broker + lake for one test."""
    s = Stack(tmp_path / "flywheel")
    s.start_broker()
    yield s
    s.close()


@pytest.fixture(scope="session")
def lake(tmp_path_factory, data_dir):
    """All four real data sets replayed through a real broker into a real lake by a
    ``flywheel ingest`` child process; yields (stack, replay result) once caught up."""
    stack = Stack(tmp_path_factory.mktemp("real") / "flywheel")
    stack.start_broker()
    stack.consumer_process()
    result = replay(["oasst1", "tulu", "hh_rlhf", "feedbackqa"], data_dir, stack.kafka, home=stack.home_settings)
    wait_until_caught_up(stack.kafka, stack.group_id, result.sdk_stats["delivered_offsets"], timeout_s=300)
    yield stack, result
    stack.close()
