"""Master faces: unit-length templates that sit close to everybody, refused where foreign templates come in.

The normalised centroid of many people's embeddings is a perfectly valid unit vector (the template gate,
:mod:`facegate.gallery.templates`, passes it), yet at a door it out-scores real enrolled people for faces it
has never seen: a handful of them opens the door to most strangers. Real faces are not like that: a
genuine template is close to its own person and roughly as far from everyone else as faces are from one
another.

The rule (``facegate gallery import-templates``, the admin's door-enrolment path): a template's *crowding*
is the mean of its ``TOP_K`` highest similarities to the other persons of a reference set (per person the
best of their templates), the reference set being every person of the admin gallery other than the one
imported. A template whose crowding is above ``CROWDING_THRESHOLD`` is refused. With fewer than ``TOP_K``
other persons the mean is over those there are, which only lowers a genuine face's figure (the threshold
stays safe); with none there is nothing to compare and the template gate alone decides.

Measured (tools/eval/eval_master_faces.py, docs/master-faces.md): genuine templates reach at most 0.58 against a
1000-person gallery, 0.62 against 3000; the threshold leaves a margin above that. With this embedder a
unit-length vector cannot sit close to many distinct faces (face embeddings spread over all 192 dimensions:
their mean has norm 0.11), so normalised centroids score like ordinary faces and reach as few strangers;
the template gate, which refuses the scaled centroids that did, is the main defence. This rule refuses what
is left: a template that looks like several enrolled persons at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CROWDING_THRESHOLD", "TOP_K", "crowding"]

TOP_K = 5
CROWDING_THRESHOLD = 0.70


def crowding(templates: np.ndarray, reference: np.ndarray, reference_ids: Sequence[str],
             k: int = TOP_K) -> np.ndarray:
    """For each row of ``templates``, the mean of its ``k`` best per-person similarities to ``reference``.

    ``reference`` rows belong to ``reference_ids`` (rows of one person need not be adjacent); with fewer than
    ``k`` persons the mean is over all of them.
    """
    t = np.asarray(templates, dtype=np.float32).reshape(-1, np.asarray(reference).shape[-1])
    if not len(reference_ids):
        return np.full(len(t), -1.0, dtype=np.float32)
    order = np.argsort(np.asarray(reference_ids, dtype=object), kind="stable")
    ids = [reference_ids[i] for i in order]
    starts = np.asarray([i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]], dtype=np.intp)
    sims = t @ np.asarray(reference, dtype=np.float32)[order].T
    per_person = np.maximum.reduceat(sims, starts, axis=1)
    k = min(k, per_person.shape[1])
    top = -np.partition(-per_person, k - 1, axis=1)[:, :k]
    return np.asarray(top.mean(axis=1), dtype=np.float32)
