"""SSD anchors for BlazeFace, generated the way MediaPipe's SsdAnchorsCalculator does for these models.

Anchor sizes are fixed (1x1), so only the centres matter; consecutive layers with the same stride share a
grid, which is how 4 layers with strides 8,16,16,16 give 16*16*2 + 8*8*6 = 896 anchors for 128x128.
"""

from __future__ import annotations

import numpy as np


def ssd_anchor_centres(input_size: int, strides: list[int], anchors_per_layer: list[int]) -> np.ndarray:
    """(N, 2) anchor centres in normalised [0, 1] coordinates, in the order the model's outputs use."""
    centres: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        count = 0
        while layer < len(strides) and strides[layer] == stride:
            count += anchors_per_layer[layer]
            layer += 1
        cells = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, count, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def blazeface_anchors(input_size: int) -> np.ndarray:
    """Short range (128): strides 8,16,16,16, two anchors each; full range (192): stride 4, one anchor."""
    if input_size == 128:
        return ssd_anchor_centres(128, [8, 16, 16, 16], [2, 2, 2, 2])
    if input_size == 192:
        return ssd_anchor_centres(192, [4], [1])
    raise ValueError(f"no BlazeFace anchor layout known for input size {input_size}")
