"""uint8 tiles -> the normalised pixel tensor the vision tower takes, on the model's device.

The reference does ToTensor (x / 255 as float32) and Normalize ((x - mean) / std) per tile on the CPU; doing
the same float32 arithmetic once per batch on the device gives the same tensor (tested to 1e-6) at a quarter
of the bytes in transit.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_tiles(
    tiles: np.ndarray | torch.Tensor, device: torch.device | str = "cpu", dtype=torch.float32
) -> torch.Tensor:
    """uint8 `[n, H, W, 3]` tiles -> `[n, 3, H, W]` normalised tensor in `dtype` on `device`."""
    with warnings.catch_warnings():
        # Tiles arrive as read-only views of Arrow bytes; torch warns that writing to them would be undefined.
        # Nothing here writes to them: the first operation that changes values works on a converted copy.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.as_tensor(tiles)
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 tiles [n, H, W, 3], got {tuple(t.shape)} {t.dtype}")
    t = t.to(device, non_blocking=True).permute(0, 3, 1, 2).to(torch.float32).div_(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=t.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=t.device).view(1, 3, 1, 1)
    return t.sub_(mean).div_(std).to(dtype)
