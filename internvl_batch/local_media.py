"""Which local files media may be read from: `fetch.local_roots`.

A manifest is untrusted input, and a local path in it is read on the workers with the job's rights. Media
given as local paths or `file://` URIs are therefore read only under a few directories:

- `fetch.local_roots` when it is set (`[]` refuses every local read: clusters fed by untrusted manifests);
- otherwise the job's default (`default_local_roots`): each local manifest's own directory tree, plus the
  working directory when the job runs on a Ray it started itself (a local run); the Python API's default is
  the working directory and `base_uri`'s directory.

Paths are judged after symlinks are resolved (`os.path.realpath`), so neither `../` nor a link leads out of
a root. `/proc`, `/sys` and `/dev` are never read, whatever the roots, and a `file://` URI must name this
machine (no host, or `localhost`).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from internvl_batch.errors import PathRefused
from internvl_batch.filesystems import is_local, local_path, scheme_of

NEVER_READ = ("/proc", "/sys", "/dev")
_LOCAL_HOSTS = ("", "localhost")


def default_local_roots(
    manifests: list[str], local_run: bool, cwd: str | None = None, media_roots: list[str] = ()
) -> list[str]:
    """The job's roots when `fetch.local_roots` is not set: the directories of the local manifest files, the
    local media roots (`input.media`: the folders listed), and the working directory for a local run (never
    the filesystem root: that would allow everything)."""
    roots = [os.path.dirname(os.path.abspath(local_path(uri))) for uri in manifests if is_local(uri)]
    roots += [os.path.abspath(local_path(uri)) for uri in media_roots if is_local(uri)]
    here = os.path.abspath(cwd or os.getcwd())
    if local_run and here != os.path.dirname(here):
        roots.append(here)
    return list(dict.fromkeys(roots))


def with_local_roots(config, manifests: list[str], media_roots: list[str] = ()):
    """`config` (a `JobConfig`) with `fetch.local_roots` as absolute paths (`default_local_roots` for its
    manifest files when not set), so that every worker applies the same list and the run's summary records it
    (the report's default). A local run: the job starts its own Ray (no `ray.address`, no `RAY_ADDRESS`)."""
    if config.fetch.local_roots is not None:
        roots = [os.path.abspath(os.path.expanduser(root)) for root in config.fetch.local_roots]
    else:
        local_run = config.ray.address in (None, "local") and not os.environ.get("RAY_ADDRESS")
        roots = default_local_roots(manifests, local_run, media_roots=media_roots)
    return config.model_copy(update={"fetch": config.fetch.model_copy(update={"local_roots": roots})})


class LocalRoots:
    """Checks local media paths against the roots. `roots=None`: no root limit (only `/proc`, `/sys`, `/dev`
    and remote `file://` hosts are refused); the job, the API and the report always pass a list."""

    def __init__(self, roots: list[str] | None) -> None:
        self.given = None if roots is None else list(roots)
        self.roots = None if roots is None else [_real(root) for root in roots]

    def path_of(self, uri: str) -> str:
        """The local path to read for a local URI; raises `PathRefused` (a FetchError) when it may not be read.
        Nothing is opened or stat'ed before the check."""
        if scheme_of(uri) == "file":
            host = (urlsplit(uri).hostname or "").lower()
            if host not in _LOCAL_HOSTS:
                raise PathRefused(f"{uri}: file:// URIs must name this machine (no host or localhost), not {host!r}")
        path = local_path(uri)
        real = _real(path)
        if any(_under(real, never) for never in NEVER_READ):
            raise PathRefused(f"{uri}: {real.split(os.sep)[1]!r} files are never read as media")
        if self.roots is not None and not any(_under(real, root) for root in self.roots):
            raise PathRefused(f"{uri}: outside fetch.local_roots ({self.describe()}); local media are read only there")
        return path

    def describe(self) -> str:
        if not self.given:
            return "none: local reads are off"
        shown = ", ".join(self.given[:3])
        return shown + (f" and {len(self.given) - 3} more" if len(self.given) > 3 else "")


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
