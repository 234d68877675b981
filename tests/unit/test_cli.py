"""The command line: inspect (table, JSON, saved tiles, errors) and make-tiny-checkpoint."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from internvl_batch.cli import main
from internvl_batch.imaging import ImagePreprocessor
from tests.media import encode, make_photo


def write(path, data):
    path.write_bytes(data)
    return path


def test_inspect_table(tmp_path, capsys):
    photo = write(tmp_path / "photo.jpg", encode(make_photo(800, 600), "JPEG", exif_orientation=6))
    assert main(["inspect", str(photo)]) == 0
    out = capsys.readouterr().out
    assert "600x800 (EXIF 6)" in out and "3x4" in out and "3328" in out


def test_inspect_options_match_job_preprocessing(tmp_path, capsys):
    photo = write(tmp_path / "p.png", encode(make_photo(1920, 1080), "PNG"))
    assert main(["inspect", str(photo), "--max-num", "6", "--no-thumbnail", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["grid"], row["tiles"], row["image_tokens"], row["thumbnail"]) == ("2x1", 2, 512, False)


def test_inspect_defaults_from_checkpoint(tmp_path, capsys, tiny_checkpoint):
    photo = write(tmp_path / "p.png", encode(make_photo(800, 600), "PNG"))
    assert main(["inspect", str(photo), "--model", str(tiny_checkpoint), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tiles"] == 13


def test_save_tiles_single_image(tmp_path):
    data = encode(make_photo(800, 600), "PNG")
    photo = write(tmp_path / "p.png", data)
    assert main(["inspect", str(photo), "--save-tiles", str(tmp_path / "tiles")]) == 0
    files = sorted(p.name for p in (tmp_path / "tiles").iterdir())
    assert files == [f"{i:02d}.png" for i in range(13)]
    expected = ImagePreprocessor()(data).tiles
    for i, name in enumerate(files):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "tiles" / name)), expected[i])  # lossless, in order


def test_save_tiles_several_images_and_an_error(tmp_path, capsys):
    a = write(tmp_path / "a.png", encode(make_photo(448, 448), "PNG"))
    sub = tmp_path / "sub"
    sub.mkdir()
    a2 = write(sub / "a.png", encode(make_photo(1000, 250), "PNG"))
    bad = write(tmp_path / "bad.jpg", b"not an image")
    code = main(["inspect", str(a), str(a2), str(bad), "--save-tiles", str(tmp_path / "t")])
    assert code == 1  # one image failed
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["a", "a-2"]
    assert len(list((tmp_path / "t" / "a-2").iterdir())) == 5
    assert "decode: ImageDecodeError: not an image" in capsys.readouterr().out


def test_bad_option_is_one_line(tmp_path, capsys):
    photo = write(tmp_path / "p.png", encode(make_photo(10, 10), "PNG"))
    assert main(["inspect", str(photo), "--max-num", "2", "--min-num", "3"]) == 2
    assert "min_num (3) must not exceed max_num (2)" in capsys.readouterr().err


def test_make_tiny_checkpoint_console_script(tmp_path):
    exe = [sys.executable, "-m", "internvl_batch.cli"]
    proc = subprocess.run(
        exe + ["make-tiny-checkpoint", str(tmp_path / "t"), "--seed", "3"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "t" / "config.json").is_file()
    again = subprocess.run(exe + ["make-tiny-checkpoint", str(tmp_path / "t")], capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_inspect_video(tmp_path, capsys):
    from tests.media import encode_video

    clip = write(tmp_path / "clip.mp4", encode_video(120, 24.0))
    assert main(["inspect", str(clip), "--num-segments", "4", "--json", "--save-tiles", str(tmp_path / "t")]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["video_frames"], row["fps"], row["frame_indices"]) == (120, 24.0, [14, 44, 74, 103])
    assert (row["tiles"], row["image_tokens"], row["width"], row["height"]) == (4, 1024, 320, 240)
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["00.png", "01.png", "02.png", "03.png"]


def test_version(capsys):
    from importlib import metadata

    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"internvl-batch {metadata.version('internvl-batch')}"
