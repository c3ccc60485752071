"""On-disk spool of records the SDK could not deliver, bounded by a byte budget.

Records are appended to segment files ``spool-<ns>.jsonl`` (one JSON object a line:
``{"topic", "key", "event"}`` with the event embedded verbatim). A segment is deleted only after
every record in it was acknowledged by the broker, so a crash re-sends rather than loses (the
consumer drops duplicates by ``event_id``). Segments left by a previous process are delivered too.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import orjson


class Spool:
    """Append-only segment files under ``directory`` holding at most ``max_bytes`` in total."""

    def __init__(self, directory: Path, max_bytes: int):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._current: Path | None = None
        self.bytes = sum(p.stat().st_size for p in self.dir.glob("spool-*.jsonl"))

    def append(self, records: list[tuple[str, bytes | None, bytes]]) -> int:
        """Write (topic, key, value) records; return how many fit in the budget (a prefix)."""
        lines = []
        size = 0
        for topic, key, value in records:
            line = orjson.dumps({"topic": topic, "key": key.decode() if key else None, "event": orjson.Fragment(value)}) + b"\n"
            if self.bytes + size + len(line) > self.max_bytes:
                break
            lines.append(line)
            size += len(line)
        if lines:
            with self._lock:
                if self._current is None:
                    self._current = self.dir / f"spool-{time.time_ns():020d}.jsonl"
                with open(self._current, "ab") as f:
                    f.writelines(lines)
                    f.flush()
                    os.fsync(f.fileno())
                self.bytes += size
        return len(lines)

    def segments(self) -> list[Path]:
        """Segments oldest first; the one being written is sealed first so it can be drained."""
        with self._lock:
            self._current = None
            return sorted(self.dir.glob("spool-*.jsonl"))

    @staticmethod
    def read(segment: Path) -> list[tuple[str, bytes | None, bytes]]:
        """The records of a segment (a torn last line from a crash is skipped)."""
        out = []
        for line in segment.read_bytes().splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            key = rec["key"].encode() if rec["key"] is not None else None
            out.append((rec["topic"], key, orjson.dumps(rec["event"])))
        return out

    def remove(self, segment: Path) -> None:
        """Delete a fully delivered segment and release its bytes from the budget."""
        with self._lock:
            size = segment.stat().st_size if segment.exists() else 0
            segment.unlink(missing_ok=True)
            self.bytes = max(0, self.bytes - size)

    @property
    def empty(self) -> bool:
        return not any(self.dir.glob("spool-*.jsonl"))
