"""Video frame sampling: decord (what the job uses, as the reference) against PyAV seeking, and memory.

    .venv/bin/python bench/video.py               # ~3 minutes on 2 cores (most of it encoding the clips)

Part 1, speed: a 60 s 1280x720 H.264 clip at 30 fps, encoded twice (a keyframe every 250 frames and every
30 frames). For 8 and 32 segments (the reference's frame choice), the time to decode the sampled frames with
decord from memory (`vr[i]` per index, one thread, as the reference) and with PyAV (seek to the keyframe
before each frame, decode forward to it), in the same run; frames per second and the ratio.

Part 2, memory: the peak resident memory added by one video row (our `VideoSampler`: open, decode 8 or 64
frames, tile) in a fresh process, above the process's memory after imports (and after reading the file, in
memory mode), decoding from memory and from a file, as the clip grows (10 s, 60 s, 240 s at 720p; 10 s and
30 s at 4K). The clips are deliberately high-bitrate (moving noise), the worst case for file size.
"""

from __future__ import annotations

import argparse
import fractions
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np


def encode_clip(seconds: float, width: int, height: int, gop: int, fps: int = 30) -> bytes:
    import av

    buf = io.BytesIO()
    # Texture that moves every frame, so the encoder spends bits as it would on real footage.
    base = np.random.default_rng(0).integers(0, 255, (height, width + 64, 3), dtype=np.uint8)
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {
            "preset": "ultrafast",
            "crf": "23",
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "bf": "0",
        }
        for k in range(int(seconds * fps)):
            shift = k % 64
            frame = np.ascontiguousarray(base[:, shift : shift + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def decord_frames(data: bytes, indices: list[int]) -> list[np.ndarray]:
    import decord

    reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
    return [reader[i].asnumpy() for i in indices]


def pyav_frames(data: bytes, indices: list[int], threads: bool = False) -> list[np.ndarray]:
    import av

    out = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        rate = stream.average_rate
        for index in indices:
            target = int(fractions.Fraction(index, 1) / rate / stream.time_base)
            container.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts >= target:
                    out.append(frame.to_ndarray(format="rgb24"))
                    break
    return out


def speed(data: bytes, segments: int, repeats: int = 2) -> dict:
    import decord

    from internvl_batch.imaging.video import sample_frame_indices

    reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
    indices = sample_frame_indices(len(reader), float(reader.get_avg_fps()), segments)
    timings = {}
    variants = (
        ("decord", decord_frames),
        ("pyav_seek", pyav_frames),
        ("pyav_seek_threads", lambda d, i: pyav_frames(d, i, threads=True)),
    )
    for name, fn in variants:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            frames = fn(data, indices)
            best = min(best, time.perf_counter() - t0)
        assert len(frames) == segments
        timings[name] = best
    return {
        "segments": segments,
        "decord_frames_per_s": round(segments / timings["decord"], 1),
        "pyav_seek_frames_per_s": round(segments / timings["pyav_seek"], 1),
        "pyav_seek_threads_frames_per_s": round(segments / timings["pyav_seek_threads"], 1),
        "decord_over_pyav": round(timings["pyav_seek"] / timings["decord"], 2),
    }


MEMORY_CHILD = """
import sys
sys.path.insert(0, {root!r})
from internvl_batch.imaging.video import VideoSampler
import decord, numpy, PIL.Image

def status(key):
    return int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith(key)))

source = open({path!r}, 'rb').read() if {in_memory} else {path!r}
base = status('VmRSS:')
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS
sampled = VideoSampler()(source, {segments})
print(base, status('VmHWM:'))
"""


def memory(clip: Path, segments: int, in_memory: bool) -> dict:
    code = MEMORY_CHILD.format(
        root=str(Path(__file__).resolve().parents[1]), path=str(clip), segments=segments, in_memory=in_memory
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    base, peak = (int(v) for v in out)
    return {
        "segments": segments,
        "from": "memory" if in_memory else "file",
        "file_mb": round(clip.stat().st_size / 2**20, 1),
        "row_peak_mb": round((peak - base) / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    results: dict = {"speed": {}, "memory": {}}
    for gop in () if args.skip_speed else (250, 30):
        t0 = time.perf_counter()
        clip = encode_clip(60, 1280, 720, gop)
        print(
            f"encoded 60 s 720p gop={gop}: {len(clip) / 2**20:.1f} MB in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
        results["speed"][f"720p_60s_keyframe_every_{gop}"] = [speed(clip, s) for s in (8, 32)]
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            for label, (seconds, w, h) in {
                "720p_10s": (10, 1280, 720),
                "720p_60s": (60, 1280, 720),
                "720p_240s": (240, 1280, 720),
                "4k_10s": (10, 3840, 2160),
                "4k_30s": (30, 3840, 2160),
            }.items():
                path = Path(tmp) / f"{label}.mp4"
                path.write_bytes(encode_clip(seconds, w, h, gop=250))
                results["memory"][label] = [memory(path, s, m) for m in (True, False) for s in (8, 64)]
                print(f"memory {label}: {results['memory'][label]}", file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
