"""Face crops → L2-normalised embeddings; cosine similarity is then a plain dot product."""

from __future__ import annotations

import numpy as np

from facegate.vision.runtime import TFLiteModel


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


class Embedder:
    """Runs the embedding model on aligned 112x112 crops.

    With ``flip_fusion`` the crop and its mirror image are embedded and summed before normalising, a common
    trick that makes the embedding less sensitive to small asymmetries of pose and light.
    """

    def __init__(self, model: TFLiteModel, flip_fusion: bool = False) -> None:
        self.model = model
        self.flip_fusion = flip_fusion
        self.dim = int(model.run(np.zeros(model.input_shape, dtype=model.input_dtype))[0].shape[-1])

    def _raw(self, crops: np.ndarray) -> np.ndarray:
        """Embed N crops with a model of any fixed batch size (pads the last batch)."""
        batch = self.model.batch
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        for start in range(0, len(crops), batch):
            chunk = crops[start : start + batch]
            tensor = np.zeros(self.model.input_shape, dtype=self.model.input_dtype)
            tensor[: len(chunk)] = self.model.normalise(chunk)
            out[start : start + len(chunk)] = self.model.run(tensor)[0].reshape(batch, -1)[: len(chunk)]
        return out

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N,112,112,3) uint8 RGB → (N, dim) unit vectors."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        raw = self._raw(crops)
        if self.flip_fusion:
            raw = raw + self._raw(crops[:, :, ::-1])
        return l2_normalise(raw)
