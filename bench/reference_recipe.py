"""The model card's CPU preprocessing, written out from its published behaviour, for the benchmarks' baselines
(no side effects on import: the benchmarks set their own thread limits)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from internvl_batch.imaging.tiling import TILE_SIZE, choose_grid

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def reference_recipe(
    data: bytes, max_num: int = 12, min_num: int = 1, use_thumbnail: bool = True, size: int = TILE_SIZE
) -> torch.Tensor:
    """PIL `.convert('RGB')`, resize to the chosen grid, row-major crops, thumbnail of the original last, then
    per tile ToTensor + Normalize (float32 [n, 3, 448, 448])."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    cols, rows = choose_grid(width, height, min_num, max_num)
    resized = image.resize((size * cols, size * rows))
    crops = []
    for i in range(cols * rows):
        box = ((i % cols) * size, (i // cols) * size, (i % cols + 1) * size, (i // cols + 1) * size)
        crops.append(resized.crop(box))
    if use_thumbnail and len(crops) != 1:
        crops.append(image.resize((size, size)))
    tensors = []
    for crop in crops:
        t = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float().div(255)  # ToTensor
        tensors.append((t - MEAN) / STD)  # Normalize
    return torch.stack(tensors)
