"""Video decoders: decord (the reference's) against PyAV (`imaging/pyav_video.py`), same run: speed and memory.

    .venv/bin/python bench/video.py                      # 1080p 10 min H.264, 4K HEVC 20 s; ~15 min on 2 cores
    .venv/bin/python bench/video.py --minutes 1 --hevc-seconds 4 --skip-memory    # a quick look
    .venv/bin/python bench/video.py --minutes 0.05 --hevc-seconds 0.5 --tiny --skip-memory   # a smoke run

Part 1, speed: a 1080p H.264 clip of `--minutes` at 30 fps (moving noise: every frame differs, as footage
costs bits; a keyframe every 250 frames, as x264's default) and a 4K HEVC clip of `--hevc-seconds` (x265,
B-frames). For 8 and 32 segments (the reference's frame choice), the time to open the video and decode the
sampled frames, from the file, one decoding thread, with each decoder (best of 2); frames per second and the
ratio. decord reads as the reference (`vr[i]` per index); PyAV indexes the packets (demux only) and seeks to
the keyframe before each sampled frame.

Part 2, memory: the peak resident memory one video row adds (our `VideoSampler`: open, decode, tile) in a fresh
process, above the process after imports (and after reading the file, from memory), per decoder, from memory
and from a file, as the clip grows (720p 10 s and 240 s; 4K 30 s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np


def texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colour field, wider than the frame by 64 px (frames slide across it): it moves every frame, so
    the encoder spends bits on every frame, at about the rate of real footage (a noise texture made a 10-minute
    1080p clip of 9 GB)."""
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 255, (height // 24 + 2, (width + 64) // 24 + 2, 3), np.uint8)
    return np.asarray(Image.fromarray(small).resize((width + 64, height), Image.BILINEAR))


def encode(path: Path, codec: str, options: dict, seconds: float, width: int, height: int, fps: int, seed: int) -> int:
    """`seconds` of the sliding texture as `codec` in an MP4 at `path`; returns its size in bytes."""
    import av

    base = texture(width, height, seed)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        for k in range(int(seconds * fps)):
            shift = k % 64
            frame = np.ascontiguousarray(base[:, shift : shift + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.stat().st_size


def encode_clip(path: Path, seconds: float, width: int, height: int, gop: int, fps: int = 30) -> int:
    """H.264 MP4 at `path`, a keyframe every `gop` frames, no B-frames; returns its size in bytes."""
    options = {"preset": "ultrafast", "crf": "23", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
    return encode(path, "h264", {**options, "bf": "0"}, seconds, width, height, fps, seed=0)


def encode_hevc(path: Path, seconds: float, width: int, height: int, fps: int = 30) -> int:
    """HEVC (x265 ultrafast, B-frames) MP4 at `path`; returns its size in bytes."""
    options = {"preset": "ultrafast", "x265-params": "log-level=none"}
    return encode(path, "libx265", options, seconds, width, height, fps, seed=1)


def decord_frames(path: str, indices: list[int]) -> list[np.ndarray]:
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    return [reader[i].asnumpy() for i in indices]


def pyav_frames(path: str, indices: list[int]) -> list[np.ndarray]:
    from internvl_batch.imaging.pyav_video import PyAVVideo

    video = PyAVVideo(path)
    try:
        return list(video.frames(indices))
    finally:
        video.close()


def speed(data: str, segments: int, repeats: int = 2) -> dict:
    from internvl_batch.imaging.pyav_video import PyAVVideo
    from internvl_batch.imaging.video import sample_frame_indices

    video = PyAVVideo(data)
    indices = sample_frame_indices(len(video), video.get_avg_fps(), segments)
    video.close()
    timings = {}
    for name, fn in (("decord", decord_frames), ("pyav", pyav_frames)):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            frames = fn(data, indices)
            best = min(best, time.perf_counter() - t0)
        assert len(frames) == segments
        timings[name] = best
    return {
        "segments": segments,
        "decord_frames_per_s": round(segments / timings["decord"], 2),
        "pyav_frames_per_s": round(segments / timings["pyav"], 2),
        "pyav_speedup": round(timings["decord"] / timings["pyav"], 2),
    }


MEMORY_CHILD = """
import sys
sys.path.insert(0, {root!r})
from internvl_batch.imaging.video import VideoSampler
import av, decord, numpy, PIL.Image

def status(key):
    return int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith(key)))

source = open({path!r}, 'rb').read() if {in_memory} else {path!r}
base = status('VmRSS:')
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS
sampled = VideoSampler(decoder={decoder!r})(source, {segments})
print(base, status('VmHWM:'))
"""


def memory(clip: Path, segments: int, in_memory: bool, decoder: str) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    code = MEMORY_CHILD.format(root=root, path=str(clip), segments=segments, in_memory=in_memory, decoder=decoder)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    base, peak = (int(v) for v in out)
    return {
        "decoder": decoder,
        "segments": segments,
        "from": "memory" if in_memory else "file",
        "file_mb": round(clip.stat().st_size / 2**20, 1),
        "row_peak_mb": round((peak - base) / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the 1080p H.264 clip")
    parser.add_argument("--hevc-seconds", type=float, default=20.0, help="length of the 4K HEVC clip")
    parser.add_argument("--tiny", action="store_true", help="clips at 1/6 and 1/8 of the sizes (a smoke run)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    results: dict = {"speed": {}, "memory": {}}
    hd, uhd = ((320, 180), (480, 270)) if args.tiny else ((1920, 1080), (3840, 2160))
    clips = {
        f"1080p_h264_{args.minutes:g}min": lambda path: encode_clip(path, args.minutes * 60, *hd, 250),
        f"4k_hevc_{args.hevc_seconds:g}s": lambda path: encode_hevc(path, args.hevc_seconds, *uhd),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label, make in () if args.skip_speed else clips.items():
            t0 = time.perf_counter()
            path = Path(tmp) / f"{label}.mp4"
            size = make(path)
            print(f"encoded {label}: {size / 2**20:.1f} MB in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            results["speed"][label] = [{**speed(str(path), s), "file_mb": round(size / 2**20, 1)} for s in (8, 32)]
            print(f"speed {label}: {results['speed'][label]}", file=sys.stderr)
            path.unlink()
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            for label, (seconds, w, h) in {
                "720p_10s": (10, 1280, 720),
                "720p_240s": (240, 1280, 720),
                "4k_30s": (30, 3840, 2160),
            }.items():
                path = Path(tmp) / f"{label}.mp4"
                encode_clip(path, seconds, w, h, gop=250)
                results["memory"][label] = [
                    memory(path, s, m, d) for d in ("decord", "pyav") for m in (True, False) for s in (8, 64)
                ]
                print(f"memory {label}: {results['memory'][label]}", file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
