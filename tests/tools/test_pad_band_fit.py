"""tools/eval/evaluate_pad.py's fit of the challenge band: as high as asking at most the allowed share of live visits.

The band's upper edge decides how many attacks the head-turn challenge covers (every attack scored under it is
asked or refused) and how many people are asked; the fit must respect the share on the data it is given,
count the nearly planar tracks first, and never return a negative edge.
"""

from __future__ import annotations

import numpy as np

from tools.eval import evaluate_pad as pad


def _live(scores: np.ndarray, planar: int = 0) -> list[pad.Scored]:
    """Presentations with these mean scores; the ``planar`` highest-scoring ones moved and stayed nearly planar."""
    n = len(scores)
    return [pad.Scored(float(s), 5, -4.0 if k >= n - planar else -3.0) for k, s in enumerate(scores)]


def _asked(live: list[pad.Scored], band: pad.ChallengeBand, threshold: float) -> float:
    return float(np.mean([(s.planarity is not None and s.planarity < band.planarity_below)
                          or threshold - band.below <= s.score < threshold + band.above for s in live]))


def test_the_band_asks_at_most_the_share_and_no_less_than_it_could() -> None:
    live = _live(np.linspace(0.0, 20.0, 201))
    band = pad.fit_band(live, threshold=1.0, share=0.15)
    assert _asked(live, band, 1.0) <= 0.15
    wider = pad.ChallengeBand(band.below, band.above + 0.1, band.planarity_below)
    assert _asked(live, wider, 1.0) > 0.15  # one grid step more would ask too many
    assert band.below == pad.CHALLENGE_BAND.below and band.planarity_below == pad.CHALLENGE_BAND.planarity_below


def test_nearly_planar_tracks_use_up_the_share_first() -> None:
    scores = np.linspace(0.0, 20.0, 201)
    alone = pad.fit_band(_live(scores), threshold=1.0, share=0.15)
    planar = pad.fit_band(_live(scores, planar=20), threshold=1.0, share=0.15)
    assert planar.above < alone.above
    assert _asked(_live(scores, planar=20), planar, 1.0) <= 0.15


def test_when_the_planar_share_alone_is_too_high_the_band_is_empty_not_negative() -> None:
    live = _live(np.linspace(0.0, 20.0, 100), planar=30)
    band = pad.fit_band(live, threshold=1.0, share=0.15)
    assert band.above == 0.0
