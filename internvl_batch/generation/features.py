"""Image features computed once per image, however many tasks ask about it.

A row with several tasks (`task.tasks: [caption, ocr, ...]`) becomes one request per task, all with the same
tiles; the tasks have different token limits, so they run in different micro-batches. Without sharing, the
vision tower would run once per task on identical tiles. Requests that carry the same `image_key` (the
model stage gives it to the task rows of one input row, after checking that their pixels are identical) share
one computation: the first micro-batch that needs the image computes its features, which are kept (on the
model's device) until the last request that uses them has run, then released. Images used by a single request
are never kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence

import numpy as np
import torch


class SharedImageFeatures:
    """The features of the images shared by several requests of one `Predictor.generate` call."""

    def __init__(self, requests: Sequence = ()) -> None:
        counts = Counter(r.image_key for r in requests if r.image_key is not None and _has_tiles(r))
        self.remaining: dict[Hashable, int] = {key: n for key, n in counts.items() if n > 1}
        self.kept: dict[Hashable, torch.Tensor] = {}
        self.tiles_computed = 0  # tiles the vision tower ran on (for tests and benchmarks)

    def features_for(self, requests: Sequence, compute: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor | None:
        """`[tiles of every request with tiles, in request order, 256, hidden]`: kept features where an earlier
        micro-batch computed them, the rest from one `compute` call (the vision tower) over their tiles."""
        plan: list[tuple[str, object]] = []  # per request with tiles: ("kept", key) or ("new", index into fresh)
        fresh: list = []  # requests whose tiles go through the vision tower, each image once
        position: dict[Hashable, int] = {}
        for request in requests:
            if not _has_tiles(request):
                continue
            key = request.image_key
            if key is not None and key in self.kept:
                plan.append(("kept", key))
            elif key is not None and key in position:
                plan.append(("new", position[key]))
            else:
                if key is not None:
                    position[key] = len(fresh)
                plan.append(("new", len(fresh)))
                fresh.append(request)
        if not plan:
            return None
        computed: list[torch.Tensor] = []
        if fresh:
            tiles = np.concatenate([r.tiles for r in fresh]) if len(fresh) > 1 else fresh[0].tiles
            self.tiles_computed += len(tiles)
            features = compute(tiles)
            computed = list(torch.split(features, [len(r.tiles) for r in fresh])) if len(fresh) > 1 else [features]
            for request, part in zip(fresh, computed):
                if request.image_key in self.remaining:
                    # a copy, so that keeping it does not keep the whole micro-batch's features alive
                    self.kept[request.image_key] = part.clone() if len(fresh) > 1 else part
        parts = [self.kept[ref] if kind == "kept" else computed[ref] for kind, ref in plan]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def finished(self, requests: Sequence) -> None:
        """These requests have run (or failed): release what no later request needs."""
        for request in requests:
            key = request.image_key
            if key in self.remaining:
                self.remaining[key] -= 1
                if self.remaining[key] == 0:
                    del self.remaining[key]
                    self.kept.pop(key, None)


def _has_tiles(request) -> bool:
    return request.tiles is not None and len(request.tiles) > 0
