"""Decoding in a child process: a native decoder that crashes, hangs or runs away with memory on a hostile
file costs that row, never the preprocessing actor.

Pillow (libjpeg, libpng, libwebp), decord (FFmpeg) and PDFium run on untrusted bytes. `IsolatedDecoder` has the
`MediaDecoder` interface and runs it in one long-lived child process per CPU actor (a fresh interpreter running
this module, never a `fork` of the actor, which has threads; nor multiprocessing's `spawn`, which would run the
actor's main script again in the child), under a virtual-memory limit (`preprocess.decoder_memory_mb`):
- a row whose decode kills the child (a signal, an abort) is decoded once more in a fresh child; a second death
  on the same row makes it `decode: DecoderCrashed: ...` naming the signal;
- a row with no result after `preprocess.decode_timeout_s` gets `decode: DecodeTimeout: ...`; the child is
  killed and the next row starts a new one.
Rows are decoded one at a time, so a crash never touches another row's result.

A video read in byte ranges (`imaging/remote_video.RemoteVideo`: an MP4 on an object store) travels to the
child as its URI and settings; the child opens the object itself, with its own filesystem client (credentials
from the same environment), so the ranged reads, like the decoding, happen in the child.

Pixels come back over the socket as one bytes object per image set (`Connection.send_bytes`), which becomes
the row's `pixels` value as it is: one copy more than decoding in the actor (which also copies the tiles into
bytes once).

`INTERNVL_BATCH_TEST_DECODER_FAULTS=<directory>` in the environment turns on a test-only entry in the child:
media bytes starting with `TEST-DECODER-SEGFAULT` make it kill itself with SIGSEGV (after leaving a file in that
directory), `TEST-DECODER-HANG` make it sleep. Nothing else reads that variable.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection

import numpy as np

from internvl_batch.config import PreprocessConfig, VideoConfig
from internvl_batch.errors import DECODE, DecoderCrashed, DecodeTimeout, RowFailure
from internvl_batch.imaging.video import SampledVideo
from internvl_batch.stages.media import DecodedMedia, DecodedPage, MediaDecoder, is_document

log = logging.getLogger(__name__)

TEST_FAULTS_ENV = "INTERNVL_BATCH_TEST_DECODER_FAULTS"
START_TIMEOUT_S = 120.0  # a new child imports the decoders; this is not the row's time


class IsolatedDecoder:
    """`MediaDecoder`'s interface (`is_document`, `decode`, `document`), decoding in a child process."""

    def __init__(self, preprocess: PreprocessConfig, video: VideoConfig, checkpoint) -> None:
        self._child_args = (preprocess.model_dump(), video.model_dump(), checkpoint, preprocess.decoder_memory_mb)
        self.timeout_s = preprocess.decode_timeout_s
        self._process = None
        self._conn = None

    def is_document(self, uris: list[str], kind: str, fetched) -> bool:
        return is_document(uris, kind, fetched)  # a look at the first bytes: no decoder involved

    def decode(self, uris: list[str], kind: str, bound, segments, fetched) -> DecodedMedia:
        sources = {uri: fetched[uri] for uri in uris}
        header, buffers = self._call(("decode", list(uris), kind, bound, segments, sources))
        return _media(header, buffers[0])

    def document(self, uri: str, fetched) -> tuple[int, list[DecodedPage]]:
        header, buffers = self._call(("document", uri, {uri: fetched[uri]}))
        count, pages, buffers = header["count"], [], iter(buffers)
        for number, meta, error in header["pages"]:
            pages.append(DecodedPage(number, None if meta is None else _media(meta, next(buffers)), error))
        return count, pages

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._conn.close()
            self._process = self._conn = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the modules close() needs may be gone already
            pass

    # --- the child's lifecycle --------------------------------------------------------------------------------

    def _call(self, request) -> tuple[dict, list[bytes]]:
        """Send one row's request; its (header, pixel buffers), or a RowFailure for the row."""
        for attempt in (1, 2):
            if self._process is None:
                self._start()
            self._conn.send(request)
            if not self._conn.poll(self.timeout_s):
                self.close()
                raise RowFailure(
                    DECODE,
                    DecodeTimeout(
                        f"no result after preprocess.decode_timeout_s={self.timeout_s:g} s; the decoder was stopped"
                    ),
                )
            try:
                kind, header, count = self._conn.recv()
                buffers = [self._conn.recv_bytes() for _ in range(count)]
            except (EOFError, OSError):
                death = self._reap()
                if attempt == 2:
                    raise RowFailure(
                        DECODE, DecoderCrashed(f"the decoder process {death} on this row, twice")
                    ) from None
                log.warning("the decoder process %s; decoding the row again in a new one", death)
                continue
            if kind == "failure":
                raise header  # the row's RowFailure, as the decoder raised it
            if kind == "bug":
                raise RuntimeError(f"the decoder process failed: {header}")
            return header, buffers
        raise AssertionError("unreachable")

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        # The child imports what this process can: the same sys.path (Ray's working_dir, an editable install).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        self._process, self._conn = process, Connection(ours.detach())
        try:
            self._conn.send(self._child_args)
            if not self._conn.poll(START_TIMEOUT_S) or self._conn.recv() != "ready":
                raise EOFError
        except (EOFError, OSError):
            death = self._reap()
            raise RuntimeError(f"the decoder process did not start ({death})") from None

    def _reap(self) -> str:
        """Wait for a dead child; how it ended, in words."""
        process, self._process = self._process, None
        self._conn.close()
        self._conn = None
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        return _describe_exit(process.returncode)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not end"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _media(meta: dict, pixels: bytes) -> DecodedMedia:
    tiles = np.frombuffer(pixels, np.uint8).reshape(meta["shape"])  # a view: no copy
    video = None
    if meta["video"] is not None:
        video = SampledVideo(tiles, **meta["video"])
    return DecodedMedia(tiles, meta["num_tiles"], meta["sizes"], meta["kind"], video, pixels=pixels)


def _meta(decoded: DecodedMedia) -> dict:
    video = decoded.video
    return {
        "shape": decoded.tiles.shape,
        "num_tiles": decoded.num_tiles,
        "sizes": decoded.sizes,
        "kind": decoded.kind,
        "video": None
        if video is None
        else {
            "frame_indices": video.frame_indices,
            "timestamps": video.timestamps,
            "total_frames": video.total_frames,
            "fps": video.fps,
            "frame_size": video.frame_size,
        },
    }


# --- the child -----------------------------------------------------------------------------------------------


def serve(conn: Connection) -> None:
    """The child's loop: its settings, then one request and one answer at a time until the actor closes the
    connection."""
    preprocess, video, checkpoint, memory_mb = conn.recv()

    decoder = MediaDecoder(PreprocessConfig(**preprocess), VideoConfig(**video), checkpoint)
    if memory_mb:
        import resource

        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    faults = os.environ.get(TEST_FAULTS_ENV)
    conn.send("ready")
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the actor is gone
        if faults:
            _test_fault(faults, request[-1])
        try:
            if request[0] == "decode":
                _, uris, kind, bound, segments, sources = request
                decoded = decoder.decode(uris, kind, bound, segments, sources)
                answer = ("media", _meta(decoded), [decoded.tiles])
            else:
                _, uri, sources = request
                count, pages = decoder.document(uri, sources)
                described = [(p.number, None if p.media is None else _meta(p.media), p.error) for p in pages]
                answer = ("document", {"count": count, "pages": described}, [p.media.tiles for p in pages if p.media])
        except RowFailure as failure:
            if isinstance(failure.cause, MemoryError):  # its message is empty: say which limit it hit
                limit = MemoryError(f"the decoder needed more than preprocess.decoder_memory_mb={memory_mb}")
                failure = RowFailure(failure.stage, limit)
            answer = ("failure", failure, [])
        except Exception as exc:  # noqa: BLE001 - our bug, not the row's: the actor raises it
            answer = ("bug", f"{type(exc).__name__}: {exc}", [])
        kind, header, arrays = answer
        conn.send((kind, header, len(arrays)))
        for array in arrays:
            conn.send_bytes(np.ascontiguousarray(array).reshape(-1).data)  # flat: send_bytes counts items


def _test_fault(directory: str, sources: dict) -> None:
    """The test-only entry (see the module docstring)."""
    for source in sources.values():
        if isinstance(source, bytes) and source.startswith(b"TEST-DECODER-SEGFAULT"):
            with open(os.path.join(directory, f"crash-{os.getpid()}"), "w"):
                pass
            os.kill(os.getpid(), signal.SIGSEGV)
        if isinstance(source, bytes) and source.startswith(b"TEST-DECODER-HANG"):
            time.sleep(3600)


if __name__ == "__main__":  # the child: `python -m internvl_batch.stages.isolated_decoder <socket fd>`
    serve(Connection(int(sys.argv[1])))
