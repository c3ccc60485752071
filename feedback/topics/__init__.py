"""Topics of prompts and drift of the prompt distribution (issue 7, parts 1 and 2).

* :mod:`.embed` — MiniLM sentence embeddings of each answer's prompt text (its last user message),
  cached on disk by text hash.
* :mod:`.cluster` — scikit-learn ``MiniBatchKMeans`` with k chosen by silhouette, seeded.
* :mod:`.label` — class-based TF-IDF terms per topic (Grootendorst 2022, BERTopic).
* :mod:`.store` / :mod:`.model` — lake tables ``topics`` and ``topic_assignments``; build and the
  incremental nearest-centroid assignment.
* :mod:`.kpis` — size, satisfaction (Wilson 95 % interval), trend and "topics of confusion" per topic.
* :mod:`.drift` — MMD² two-sample test with a permutation p-value between time windows.
"""

from feedback.errors import FlywheelError


class TopicsError(FlywheelError):
    """The topic model or drift computation cannot run (no model built yet, no prompts in a window,
    bad settings, encoder not found)."""


__all__ = ["TopicsError"]
