"""Pass 1 of the streaming build: cleaning masks and exact / near-duplicate removal, batch after batch.

A batch of candidate rows (in stream order: conversation id first) goes through two steps:

* :meth:`Cleaner.prepare` -- everything that reads no cross-batch state: the format's dropped flag
  (conflicting pairs, tied thumbs), the cleaning masks computed with Arrow compute (empty turns,
  ``chosen == rejected``, safety labels, out-of-bounds lengths) and the texts' fingerprints (exact keys,
  MinHash LSH band keys: :meth:`finetune.neardup.StreamingClusters.fingerprints`). It may run in another
  thread for the next batch while the current one is applied (numpy and Arrow release the GIL);
* :meth:`Cleaner.apply` -- the stateful rest, in stream order: conversation numbering, prompt and
  answer clusters, and the exact- and near-duplicate checks against what earlier batches kept. It returns
  which rows of the batch are kept.

:meth:`Cleaner.components` then joins the prompt clusters through shared conversations and the clusters'
LSH links for the splits (:class:`finetune.components.ClusterComponents`, a batch of the logs at a time).
State kept across batches, O(rows) but compact: exact and band keys
(:class:`finetune.keyindex.KeyIndex`, ~150 bytes a distinct long text), 12 bytes a row reaching dedup,
4 bytes a kept row for its conversation number and one for its prompt cluster, 1 byte a candidate row
for the keep mask (:attr:`Cleaner.state_bytes`). With a ``folder``, the key indexes keep at most
``memory_keys`` keys each in memory and the rest in files there (nothing a key in memory, the Bloom filters
included), and the per-row arrays and the links go to files there too (:class:`finetune.arraylog.ArrayLog`),
read back by :meth:`Cleaner.components` and by pass 2.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from finetune import dedup, select
from finetune.arraylog import ArrayLog
from finetune.components import ClusterComponents
from finetune.columns import blank, prompt_parts, string_column
from finetune.keyindex import KeyIndex, mix64
from finetune.neardup import Fingerprints, StreamingClusters, exact_keys
from finetune.spec import DatasetSpec

__all__ = ["ANSWERS", "step_names", "Cleaner", "Prepared", "prompt_parts", "string_column"]

ANSWERS = {"sft": ("response",), "preference": ("chosen_text", "rejected_text"), "kto": ("response",)}
"""Per format: the candidate columns holding answer texts (length bounds and answer clusters)."""


def step_names(fmt: str) -> list[str]:
    """The cleaning steps of ``fmt`` in the order they apply (the card's "counts after each step")."""
    return ["empty turns dropped"] + (["chosen == rejected dropped"] if fmt == "preference" else []) + [
        "safety-labelled dropped", "out-of-bounds lengths dropped", "exact duplicates dropped",
        "near-duplicates dropped"]


def _rows_any(per_item: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per row: whether any of its items (rows own ``offsets[i]:offsets[i+1]``) is True."""
    n = len(offsets) - 1
    out = np.zeros(n, dtype=bool)
    out[np.repeat(np.arange(n), np.diff(offsets))[per_item]] = True
    return out


def _prompt_texts(offsets: np.ndarray, roles: pa.Array, contents: pa.Array) -> pa.Array:
    """Each row's prompt as ``"role: content"`` lines joined by newlines (what prompt clusters compare)."""
    lines = pc.binary_join_element_wise(pc.fill_null(roles, "None"), pc.fill_null(contents, ""), ": ")
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), lines), "\n")
    return pc.fill_null(joined, "")


@dataclass
class Prepared:
    """One batch after :meth:`Cleaner.prepare`: ``rows`` (batch rows before the dropped flag), ``flagged``
    (bool (rows,): dropped by the format's flag), ``conversation`` (ids of the unflagged rows), ``dropped``
    (cleaning step -> rows), ``live`` (positions among the unflagged rows that passed the masks),
    ``prompts`` and ``answers`` (fingerprints of the live rows' texts), ``label`` (KTO labels of live rows)."""

    rows: int
    flagged: np.ndarray
    conversation: np.ndarray
    dropped: Counter = field(default_factory=Counter)
    live: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    prompts: Fingerprints | None = None
    answers: list[Fingerprints] = field(default_factory=list)
    label: np.ndarray | None = None


class Cleaner:
    """Cleaning and de-duplication across the batches of one build (see the module doc). ``spec``: the
    build's :class:`finetune.spec.DatasetSpec`. Counts: :attr:`counts` (``selected`` and each step of
    :func:`step_names`), :attr:`flag_dropped`. ``folder``, ``memory_keys``: where the key indexes put their
    runs beyond ``memory_keys`` keys each (:class:`finetune.keyindex.KeyIndex`; None: all in memory) and the
    per-batch arrays their files (:class:`finetune.arraylog.ArrayLog`); :meth:`close` deletes the runs, the
    files stay (pass 2 and :meth:`components` read them after it) until the folder is removed."""

    def __init__(self, spec: DatasetSpec, folder: Path | None = None, memory_keys: int = 1 << 20) -> None:
        self.spec = spec
        config = dedup.DedupConfig(threshold=spec.cleaning.dedup_threshold)
        self.prompts = StreamingClusters(config, True, folder, memory_keys)
        self.answers = [StreamingClusters(config, False, folder, memory_keys) for _ in ANSWERS[spec.format]]
        # exact: normalised prompt + answers of every row reaching dedup
        self.row_keys = KeyIndex(folder, memory_keys)
        # near: (prompt cluster, answer clusters[, label]) of kept rows
        self.near_keys = KeyIndex(folder, memory_keys)
        self.counts: Counter = Counter()
        self.flag_dropped = 0
        self.groups = 0
        self.last_conversation: str | None = None
        # per batch, in files of `folder` (in memory without one): the keep mask over its rows, the
        # conversation number and the prompt cluster of each kept row
        self.keep = ArrayLog(folder, bool)
        self.kept_groups = ArrayLog(folder, np.int32)
        self.kept_clusters = ArrayLog(folder, np.int32)
        self.folder = folder

    def prepare(self, batch: pa.RecordBatch) -> Prepared:
        """The stateless part of a batch (thread-safe: reads only the spec and the dedup parameters)."""
        fmt, c = self.spec.format, self.spec.cleaning
        table = pa.Table.from_batches([batch])
        rows = table.num_rows
        flag = select.DROPPED_FLAG[fmt]
        flagged = np.zeros(rows, dtype=bool)
        if flag:
            flagged = pc.fill_null(table[flag[0]], False).to_numpy(zero_copy_only=False).astype(bool)
            table = table.filter(pa.array(~flagged))
        n = table.num_rows
        prep = Prepared(rows, flagged, table["conversation_id"].to_numpy(zero_copy_only=False))
        if not n:
            return prep
        offsets, roles, contents = prompt_parts(table)
        answers = [string_column(table, name) for name in ANSWERS[fmt]]
        alive = np.ones(n, dtype=bool)

        def step(name: str, drop: np.ndarray) -> None:
            drop = drop & alive
            prep.dropped[name] += int(drop.sum())
            alive[drop] = False

        empty = _rows_any(blank(contents).to_numpy(zero_copy_only=False), offsets)
        for a in answers:
            empty |= blank(a).to_numpy(zero_copy_only=False)
        step("empty turns dropped", empty)
        if fmt == "preference":
            chosen_key = exact_keys(answers[0])[0]
            rejected_key = exact_keys(answers[1])[0]
            step("chosen == rejected dropped", chosen_key == rejected_key)
        unsafe = pc.fill_null(table["unsafe"], False).to_numpy(zero_copy_only=False)
        if fmt == "kto":
            unsafe &= pc.fill_null(table["label"], False).to_numpy(zero_copy_only=False)
        step("safety-labelled dropped", unsafe)
        too = np.zeros(n, dtype=bool)
        for a in answers:
            length = pc.fill_null(pc.utf8_length(a), 0).to_numpy(zero_copy_only=False)
            too |= (length < c.min_chars) | (length > c.max_chars)
        step("out-of-bounds lengths dropped", too)
        prep.live = live = np.flatnonzero(alive)
        if len(live):
            take = pa.array(live)
            sub_offsets, sub_roles, sub_contents = prompt_parts(table.take(take))
            prep.prompts = self.prompts.fingerprints(_prompt_texts(sub_offsets, sub_roles, sub_contents))
            prep.answers = [state.fingerprints(a.take(take)) for state, a in zip(self.answers, answers)]
            if fmt == "kto":
                prep.label = pc.fill_null(table["label"], False).to_numpy(zero_copy_only=False)[live]
        return prep

    def apply(self, prep: Prepared) -> np.ndarray:
        """Deduplicate a prepared batch against the earlier ones; returns the keep mask over its rows (bool
        (``prep.rows``,)). Batches must come in stream order."""
        self.flag_dropped += int(prep.flagged.sum())
        conv = prep.conversation
        n = len(conv)
        self.counts["selected"] += n
        self.counts.update(prep.dropped)
        keep = np.zeros(prep.rows, dtype=bool)
        if not n:
            self.keep.append(keep)
            self.kept_groups.append(np.empty(0, np.int32))
            self.kept_clusters.append(np.empty(0, np.int32))
            return keep
        starts = np.empty(n, dtype=bool)
        starts[0] = conv[0] != self.last_conversation
        starts[1:] = conv[1:] != conv[:-1]
        group = self.groups + np.cumsum(starts) - 1
        self.groups = int(group[-1]) + 1
        self.last_conversation = conv[-1]
        live = prep.live
        alive = np.zeros(n, dtype=bool)
        alive[live] = True
        if len(live):
            prompt_cluster, prompt_key = self.prompts.assign(prep.prompts)
            keys, clusters = [prompt_key], [prompt_cluster]
            for state, fp in zip(self.answers, prep.answers):
                cl, key = state.assign(fp)
                keys.append(key)
                clusters.append(cl)
            if prep.label is not None:
                clusters.append(prep.label.astype(np.int64))
            row_key = mix64(*keys)
            near_key = mix64(*clusters)
            first = np.zeros(len(live), dtype=bool)
            first[np.unique(row_key, return_index=True)[1]] = True
            exact = self.row_keys.contains(row_key) | ~first
            self.row_keys.add(row_key[first & ~exact])
            candidate = np.flatnonzero(~exact)
            near_first = np.zeros(len(live), dtype=bool)
            near_first[candidate[np.unique(near_key[candidate], return_index=True)[1]]] = True
            near = ~exact & (self.near_keys.contains(near_key) | ~near_first)
            kept_live = ~exact & ~near
            self.near_keys.add(near_key[kept_live])
            self.counts["exact duplicates dropped"] += int(exact.sum())
            self.counts["near-duplicates dropped"] += int(near.sum())
            alive[live[~kept_live]] = False
            kept_cluster = prompt_cluster[kept_live]
        else:
            kept_cluster = np.empty(0, dtype=np.int64)
        kept = np.flatnonzero(alive)
        keep[np.flatnonzero(~prep.flagged)[kept]] = True
        self.keep.append(keep)
        self.kept_groups.append(group[kept])
        self.kept_clusters.append(kept_cluster)
        return keep

    @property
    def disk_bytes(self) -> int:
        """Bytes on disk: the key indexes' runs and the per-batch arrays."""
        return (self.prompts.disk_bytes + sum(a.disk_bytes for a in self.answers) + self.row_keys.disk_bytes
                + self.near_keys.disk_bytes + sum(log.disk_bytes for log in self._logs))

    def close(self) -> None:
        """Delete the key indexes' disk runs."""
        for index in (self.prompts, *self.answers, self.row_keys, self.near_keys):
            index.close()

    @property
    def state_bytes(self) -> int:
        """Bytes of state kept across batches."""
        return (self.prompts.nbytes + sum(a.nbytes for a in self.answers) + self.row_keys.nbytes
                + self.near_keys.nbytes + sum(log.nbytes for log in self._logs))

    @property
    def _logs(self) -> tuple[ArrayLog, ...]:
        return self.keep, self.kept_groups, self.kept_clusters

    def components(self) -> ClusterComponents:
        """The prompt clusters joined by shared conversations and LSH links, as :func:`finetune.splits.assign_splits`
        joins rows (:mod:`finetune.components`; parents in a file of the cleaner's folder when it has one): a kept
        row's component is ``components.roots(kept_clusters[i])``. Reads the logs a batch at a time; the caller
        closes it."""
        components = ClusterComponents(self.prompts.next_id, self.folder)
        for i in range(len(self.kept_groups)):
            components.join_conversations(self.kept_groups[i], self.kept_clusters[i])
        for pairs in self.prompts.link_batches():
            components.join_pairs(pairs)
        components.flatten()
        return components
