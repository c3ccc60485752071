"""Topic labels: each topic's most distinctive terms by class-based TF-IDF (c-TF-IDF).

Method (M. Grootendorst 2022, "BERTopic: Neural topic modeling with a class-based TF-IDF
procedure", arXiv:2203.05794, eq. 1): all prompts of topic c form one document; with ``tf_{t,c}``
the count of term t in it,

    W_{t,c} = (tf_{t,c} / Σ_t' tf_{t',c}) · log(1 + A / f_t)

where ``f_t`` is the count of t over all topics and ``A`` the average number of words per topic.
Terms come from scikit-learn's ``CountVectorizer`` with its English stop-word list, lower-cased
alphabetic tokens of 3+ letters, a term needing to occur in at least ``min_df`` prompts.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer


def ctfidf_terms(texts: list[str], labels: np.ndarray, k: int, n_terms: int = 8, min_df: int = 2) -> list[list[str]]:
    """For topics ``0..k-1``, the ``n_terms`` terms with the highest c-TF-IDF weight (best first).

    ``texts[i]`` belongs to topic ``labels[i]``; a topic with no text or no term gets ``[]``."""
    vec = CountVectorizer(stop_words="english", lowercase=True, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]{2,}\b",
                          min_df=min(min_df, max(1, len(texts))))
    try:
        counts = vec.fit_transform(texts)  # (n_docs, n_terms) sparse
    except ValueError:  # empty vocabulary
        return [[] for _ in range(k)]
    vocab = np.array(vec.get_feature_names_out())
    # Sum the documents of each topic: indicator (k, n_docs) @ counts (n_docs, n_terms).
    from scipy.sparse import csr_matrix

    onehot = csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, len(labels)))
    tf = np.asarray((onehot @ counts).todense(), dtype=np.float64)  # (k, n_terms)
    words = tf.sum(axis=1, keepdims=True)
    f_t = tf.sum(axis=0)
    avg_words = words.mean()
    weights = (tf / np.where(words == 0, 1, words)) * np.log1p(avg_words / np.where(f_t == 0, 1, f_t))
    out = []
    for c in range(k):
        order = np.argsort(-weights[c], kind="stable")[:n_terms]
        out.append([str(vocab[j]) for j in order if weights[c, j] > 0])
    return out
