"""Our uint8 tiles, normalised on the device, equal the reference recipe's float tensors.

The reference recipe is written out here from its published behaviour: PIL `.convert('RGB')`, resize to the
chosen grid (Pillow's default resample), row-major crops, thumbnail of the original appended last, then per
tile ToTensor (uint8 / 255, CHW) and Normalize with the ImageNet mean/std.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from internvl_batch.generation.pixels import normalize_tiles
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.imaging import tiles as tile_copying
from internvl_batch.imaging.tiling import choose_grid
from tests.media import encode, make_photo

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def reference_pixel_values(data: bytes, max_num=12, min_num=1, use_thumbnail=True, size=448) -> torch.Tensor:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    cols, rows = choose_grid(w, h, min_num, max_num)
    resized = image.resize((size * cols, size * rows))
    crops = []
    for i in range(cols * rows):
        box = ((i % cols) * size, (i // cols) * size, (i % cols + 1) * size, (i // cols + 1) * size)
        crops.append(resized.crop(box))
    if use_thumbnail and len(crops) != 1:
        crops.append(image.resize((size, size)))
    tensors = []
    for crop in crops:
        t = torch.from_numpy(np.array(crop)).permute(2, 0, 1).contiguous().float().div(255)
        tensors.append((t - MEAN) / STD)
    return torch.stack(tensors)


SHAPES = [
    (448, 448),
    (633, 633),
    (634, 634),
    (950, 950),
    (951, 951),
    (800, 600),
    (3000, 200),
    (200, 1500),
    (1920, 1080),
    (1, 1),
    (10000, 1),
    (37, 901),
]


@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_tiles_equal_reference_recipe(size, fmt):
    data = encode(make_photo(*size, seed=size[0]), fmt)
    ours = normalize_tiles(ImagePreprocessor(exif_transpose=False)(data).tiles)
    ref = reference_pixel_values(data)
    assert ours.shape == ref.shape
    assert torch.max(torch.abs(ours - ref)).item() <= 1e-6


@pytest.mark.parametrize("max_num,use_thumbnail", [(6, True), (24, True), (1, True), (12, False)])
def test_options_equal_reference_recipe(max_num, use_thumbnail):
    data = encode(make_photo(1280, 720, seed=3), "JPEG")
    pre = ImagePreprocessor(max_num=max_num, use_thumbnail=use_thumbnail, exif_transpose=False)
    ref = reference_pixel_values(data, max_num=max_num, use_thumbnail=use_thumbnail)
    assert torch.max(torch.abs(normalize_tiles(pre(data).tiles) - ref)).item() <= 1e-6


def test_tiles_are_compact_uint8_hwc():
    out = ImagePreprocessor()(encode(make_photo(800, 600), "PNG"))
    assert out.tiles.dtype == np.uint8 and out.tiles.shape == (13, 448, 448, 3)
    assert out.plan.num_tiles == out.num_tiles == 13


def test_tile_order_is_row_major_then_thumbnail():
    # A 2x2 grid of flat colours: each tile must be one colour, in reading order, thumbnail last.
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    arr = np.zeros((896, 896, 3), np.uint8)
    for k, c in enumerate(colours):
        arr[(k // 2) * 448 : (k // 2 + 1) * 448, (k % 2) * 448 : (k % 2 + 1) * 448] = c
    tiles = ImagePreprocessor()(encode(Image.fromarray(arr), "PNG")).tiles
    assert tiles.shape[0] == 5
    for k, c in enumerate(colours):
        assert tuple(tiles[k, 224, 224]) == c
    assert tuple(tiles[4, 100, 100]) == colours[0] and tuple(tiles[4, 300, 300]) == colours[3]


def test_normalisation_on_device_dtype():
    tiles = ImagePreprocessor()(encode(make_photo(448, 448), "PNG")).tiles
    out = normalize_tiles(tiles, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 448, 448)


def test_normalize_rejects_float_input():
    with pytest.raises(ValueError):
        normalize_tiles(np.zeros((1, 448, 448, 3), np.float32))


def _mode_image(mode: str, size=(900, 700)) -> Image.Image:
    base = make_photo(*size, seed=11)
    if mode == "P":
        return base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    if mode == "RGBA":
        rgba = base.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(size))
        return rgba
    if mode == "LA":
        la = base.convert("LA")
        la.putalpha(Image.linear_gradient("L").resize(size))
        return la
    if mode == "I;16":
        return Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 3)
    return base.convert(mode)


# Grey images (L, LA, 1) are resized as one band and expanded to RGB afterwards: must still equal the recipe.
@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("L", "PNG"),
        ("L", "JPEG"),
        ("LA", "PNG"),
        ("1", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
    ],
)
@pytest.mark.parametrize("size", [(900, 700), (300, 2000), (1, 1), (634, 634)])
def test_every_mode_tiles_equal_reference_recipe(mode, fmt, size):
    data = encode(_mode_image(mode, size), fmt)
    ours = ImagePreprocessor(exif_transpose=False)(data)
    ref = reference_pixel_values(data)
    assert ours.tiles.shape[0] == ref.shape[0]
    assert torch.max(torch.abs(normalize_tiles(ours.tiles) - ref)).item() <= 1e-6


def test_grey_exif_rotated_equals_rotated_rgb():
    # EXIF orientation applies to a grey image before tiling, as to an RGB one.
    grey = make_photo(700, 500, seed=2).convert("L")
    ours = ImagePreprocessor()(encode(grey, "JPEG", exif_orientation=6)).tiles
    rgb = Image.open(io.BytesIO(encode(grey, "JPEG", exif_orientation=6))).convert("RGB")
    rgb = rgb.transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(ours, ImagePreprocessor().process_image(rgb).tiles)


def test_process_image_accepts_grey_as_its_rgb_conversion():
    grey = make_photo(800, 600, seed=4).convert("L")
    pre = ImagePreprocessor()
    assert np.array_equal(pre.process_image(grey).tiles, pre.process_image(grey.convert("RGB")).tiles)


def test_tiles_identical_without_pillows_raw_encoder(monkeypatch):
    # copy_tiles streams rows through Pillow's (private) raw encoder; without it, the public path gives the same.
    data = encode(make_photo(800, 600, seed=5), "JPEG")
    fast_path = ImagePreprocessor()(data).tiles

    def missing(*args, **kwargs):
        raise AttributeError("_getencoder")

    monkeypatch.setattr(tile_copying, "_raw_encoder", missing)
    assert np.array_equal(ImagePreprocessor()(data).tiles, fast_path)
    assert torch.max(torch.abs(normalize_tiles(fast_path) - reference_pixel_values(data))).item() <= 1e-6


def test_read_only_tiles_are_normalised_without_a_warning_or_a_write():
    # The model stage's tiles are read-only views of Arrow bytes.
    tiles = ImagePreprocessor(exif_transpose=False)(encode(make_photo(448, 448), "PNG")).tiles
    frozen = np.frombuffer(tiles.tobytes(), np.uint8).reshape(tiles.shape)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize_tiles(frozen)
    assert torch.equal(out, normalize_tiles(tiles)) and np.array_equal(frozen, tiles)
