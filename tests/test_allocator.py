"""glibc's mmap threshold, as ``flywheel dataset`` fixes it (:mod:`finetune.allocator`): freed columns go back to
the system. Each case runs in a fresh interpreter, whose allocator nothing else has tuned."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# 16 MiB mapped and freed raises glibc's dynamic threshold to 16 MiB; then 64 blocks of 2 MiB, each followed by
# a small one that stays (so the heap cannot shrink from its top), are freed, and `after` runs. Prints: what
# use_mmap_threshold returned, the anonymous memory (MiB) the blocks took, what stays after freeing them (and
# `after`), and the variable.
PROBE = """
import os, sys
import numpy as np
sys.path.insert(0, {root!r})
from finetune.allocator import trim_heap, use_mmap_threshold

def anon_mib():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon")) / 1024

took = {call}
big = np.ones(16 << 17)
del big
before = anon_mib()
blocks, pins = [], []
for _ in range(64):
    blocks.append(np.ones(2 << 17))
    pins.append(np.ones(512))
held = anon_mib()
del blocks
{after}
print(took, round(held - before), round(anon_mib() - before), os.environ.get("MALLOC_MMAP_THRESHOLD_"))
"""


def _probe(call: str, after: str = "", **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"} | env
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT), call=call, after=after)], env=environ,
                         capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.split()


@pytest.mark.skipif(not Path("/proc/self/status").exists() or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="glibc on Linux only")
def test_the_threshold_hands_freed_columns_back():
    from finetune.allocator import MMAP_THRESHOLD_BYTES

    took, held, kept, variable = _probe("None")
    assert (took, variable) == ("None", "None") and int(held) >= 120
    assert int(kept) >= 120  # glibc's default: the freed 2 MiB blocks stay in its heap
    # trim_heap (between the build's phases) hands the heap's free pages back
    took, held, kept, variable = _probe("None", after="assert trim_heap()")
    assert int(held) >= 120 and int(kept) <= 8
    took, held, kept, variable = _probe("use_mmap_threshold()")
    assert took == "True" and int(held) >= 120 and int(kept) <= 8
    assert variable == str(MMAP_THRESHOLD_BYTES)  # for the processes it starts (the PII workers)
    # a threshold the environment set when the process started is left as it is
    took, held, kept, variable = _probe("use_mmap_threshold()", MALLOC_MMAP_THRESHOLD_="99999999")
    assert took == "False" and int(kept) >= 120 and variable == "99999999"
    from finetune.allocator import use_mmap_threshold

    with pytest.raises(ValueError):
        use_mmap_threshold(0)  # raises before it changes anything


@pytest.mark.skipif(not Path("/proc/self/status").exists() or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="glibc on Linux only")
def test_trimming_hands_the_heaps_free_pages_back_while_it_runs():
    # the freed blocks stay in the heap until the trimming thread's first round, and the thread ends with the block
    wait = ("import time, threading; from finetune.allocator import trimming\n"
            "with trimming({interval}) as runs:\n    time.sleep(0.6)\n"
            "assert runs is {runs} and not any(t.name == 'flywheel-trim-heap' for t in threading.enumerate())")
    took, held, kept, _ = _probe("None", after=wait.format(interval=0.05, runs=True))
    assert int(held) >= 120 and int(kept) <= 8
    took, held, kept, _ = _probe("None", after=wait.format(interval=None, runs=False))
    assert int(held) >= 120 and int(kept) >= 120
    from finetune.allocator import trimming

    with pytest.raises(ValueError):
        with trimming(0):
            pass


def test_the_dataset_commands_set_it(tmp_path):
    from finetune.allocator import MMAP_THRESHOLD_BYTES

    code = ("from typer.testing import CliRunner; from feedback.cli import app; import os; "
            "r = CliRunner().invoke(app, ['dataset', 'list']); "
            "print(r.exit_code, os.environ.get('MALLOC_MMAP_THRESHOLD_'))")
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"} | {"FLYWHEEL_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=environ, cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["0", str(MMAP_THRESHOLD_BYTES)]
