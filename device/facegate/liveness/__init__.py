"""Presentation-attack detection (liveness): is the face at the door a person, or a photo or a screen?

- ``texture``: colour-texture features of a face crop (the passive per-frame cue);
- ``model``: the fitted classifier and its operating points, loaded through the model manifest;
- ``motion``: planar-motion and blink cues from face-mesh points (active, over a track);
- ``track``: per-track fusion into (live, score, reason);
- ``gate``: ``LivenessGate``, the one class the service calls.

Measured per ISO/IEC 30107-3 (APCER per attack type, BPCER) with ``tools/eval/evaluate_pad.py``.
"""

from facegate.liveness.gate import LivenessGate
from facegate.liveness.model import ActiveParams, TextureClassifier
from facegate.liveness.track import FrameEvidence, LivenessDecision, LivenessTrack, TrackParams

__all__ = [
    "ActiveParams",
    "FrameEvidence",
    "LivenessDecision",
    "LivenessGate",
    "LivenessTrack",
    "TextureClassifier",
    "TrackParams",
]
