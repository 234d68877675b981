"""Ray calls shared by the pipeline modules: remote functions made on demand, and a `get` that re-raises our
own errors (a fatal manifest problem found on a worker) as themselves."""

from __future__ import annotations

from internvl_batch.errors import InternVLBatchError


def get(refs):
    """ray.get that re-raises our own exceptions (a fatal manifest problem found on a worker) as themselves."""
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
        if isinstance(cause, InternVLBatchError):
            raise cause from None
        raise


def remote(fn, **options):
    import ray

    return ray.remote(**options)(fn) if options else ray.remote(fn)
