import logging
from pathlib import Path

import pytest

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
