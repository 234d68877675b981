"""Count the calls that make the host wait for the GPU, on any device (tests and benchmarks run on the CPU).

On a GPU, reading a tensor's value on the host (`.item()`, `bool(t)`, `.tolist()`, `.cpu()`), or an operation
whose output size depends on values (`nonzero`, `masked_select`, `unique`, indexing with a boolean mask),
waits until every queued kernel has run: the host can no longer queue the next step's kernels ahead. On the
CPU these calls cost nothing, but they are the same calls, so counting them here says how many
synchronisations the code would make on a GPU. Two places see them:

- Python's view of tensors (a torch function mode; it also works under `torch.inference_mode`, where the
  generation code runs): the methods above, `.to()` a CPU device from another device, boolean-mask indexing;
- the dispatcher (a dispatch mode), for the same operations reached from C++ outside those methods
  (`_local_scalar_dense`, `nonzero`, ...). Inference mode hides tensors from it, so it adds what it sees
  only outside inference mode, and never counts a call the function mode already counted.
A move to the device a tensor is already on is no copy on any machine, so on a CPU-only run `.to(device)` of
the model's device does not count.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_VALUE_READS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "cpu", "numpy"}
_SIZE_FROM_VALUES = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive"}
_DISPATCH_SYNCS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive"}


class _Calls(TorchFunctionMode):
    def __init__(self, syncs: HostSyncs):
        super().__init__()
        self.syncs = syncs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func, args, kwargs)
        if name is None:
            return func(*args, **kwargs)
        self.syncs.counts[name] += 1
        self.syncs.inside += 1
        try:
            return func(*args, **kwargs)
        finally:
            self.syncs.inside -= 1


def _name(func, args, kwargs) -> str | None:
    """The name under which this call counts as a synchronisation, or None."""
    name = getattr(func, "__name__", "")
    if name in _VALUE_READS or name in _SIZE_FROM_VALUES:
        return name
    if name == "repeat_interleave" and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return None if kwargs.get("output_size") is not None else name
    if name == "to" and args and isinstance(args[0], torch.Tensor):
        target = kwargs.get("device", args[1] if len(args) > 1 else None)
        if isinstance(target, str | torch.device) and torch.device(target).type == "cpu":
            return "to(cpu)" if args[0].device.type != "cpu" else None
    if name in ("__getitem__", "__setitem__") and len(args) > 1 and _has_bool_mask(args[1]):
        return f"{name}[mask]"
    return None


def _has_bool_mask(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


class _Ops(TorchDispatchMode):
    def __init__(self, syncs: HostSyncs):
        super().__init__()
        self.syncs = syncs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.syncs.inside and func._overloadpacket.__name__ in _DISPATCH_SYNCS:
            self.syncs.counts[func._overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


class HostSyncs:
    """`with HostSyncs() as syncs: ...` then `syncs.total` and `syncs.counts` (by operation)."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.inside = 0  # >0 while a call the function mode counted runs
        self._modes = (_Calls(self), _Ops(self))

    def __enter__(self) -> HostSyncs:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
