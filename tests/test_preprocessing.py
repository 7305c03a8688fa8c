"""One preprocessing spec: photo -> RGB -> letterboxed, normalised CHW tensor, the same way everywhere.

All photos are made here (Pillow/numpy) or come with scikit-image; nothing is downloaded.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import ExifTags, Image

from flexguard.models.preprocessing import (
    TRANSPARENT_BACKGROUND,
    Placement,
    PreprocessSpec,
    draft_size,
    load_image,
    normalize,
    preprocess,
    preprocess_file,
    resize,
    to_rgb,
)

SIZE = 260
SPEC = PreprocessSpec(size=SIZE, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
SQUASH = PreprocessSpec(size=SIZE, resize_mode="squash", mean=SPEC.mean, std=SPEC.std)
WHITE = (255, 255, 255)


def norm(value: float) -> float:
    return (value - 127.0) / 128.0


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


# --- tensor shape and values -------------------------------------------------------------------


def test_tensor_shape_dtype_and_known_pixel():
    image = Image.new("RGB", (SIZE, SIZE), (10, 20, 30))
    image.putpixel((12, 34), (200, 100, 0))  # x=12, y=34
    tensor, placement = preprocess(image, SPEC)
    assert tensor.shape == (3, SIZE, SIZE)
    assert tensor.dtype == np.float32
    assert tensor.flags["C_CONTIGUOUS"]
    assert placement == Placement(0.0, 0.0, 1.0, 1.0)
    np.testing.assert_allclose(tensor[:, 34, 12], [norm(200), norm(100), norm(0)], atol=1e-6)
    np.testing.assert_allclose(tensor[:, 0, 0], [norm(10), norm(20), norm(30)], atol=1e-6)
    assert norm(255) == 1.0 and tensor.min() >= norm(0) and tensor.max() <= norm(255)


def test_uniform_photo_of_any_size_keeps_its_values():
    tensor, _ = preprocess(Image.new("RGB", (1000, 1000), (255, 127, 0)), SPEC)
    assert tensor.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(tensor[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(tensor[1], 0.0, atol=1e-6)
    np.testing.assert_allclose(tensor[2], norm(0), atol=1e-6)


def test_normalize_uses_the_spec_mean_and_std():
    spec = PreprocessSpec(size=2, mean=(0.0, 100.0, 200.0), std=(1.0, 2.0, 4.0))
    image = Image.new("RGB", (2, 2), (10, 110, 220))
    np.testing.assert_allclose(normalize(image, spec)[:, 0, 0], [10.0, 5.0, 5.0])


def test_normalize_is_exactly_the_float32_formula_in_chw_order():
    pixels = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    spec = PreprocessSpec(size=53, mean=(127.0, 120.5, 3.0), std=(128.0, 57.3, 0.7))
    expected = ((pixels.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)).transpose(2, 0, 1)
    tensor = normalize(Image.fromarray(pixels), spec)
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert np.array_equal(tensor, expected)


# --- letterbox and squash ----------------------------------------------------------------------


def test_letterbox_wide_photo_is_padded_top_and_bottom():
    tensor, placement = preprocess(Image.new("RGB", (520, 260), (255, 0, 0)), SPEC)
    # 520x260 -> 260x130 content, centred: rows 65..194.
    assert placement == Placement(0.0, 65 / SIZE, 1.0, 130 / SIZE)
    assert np.all(tensor[:, :65, :] == 0.0)
    assert np.all(tensor[:, 195:, :] == 0.0)
    np.testing.assert_allclose(tensor[0, 65:195, :], 1.0, atol=1e-6)
    np.testing.assert_allclose(tensor[1, 65:195, :], norm(0), atol=1e-6)


def test_letterbox_tall_photo_is_padded_left_and_right():
    tensor, placement = preprocess(Image.new("RGB", (100, 400), (0, 0, 255)), SPEC)
    # 100x400 -> 65x260 content, centred: columns 97..161.
    assert placement == Placement(97 / SIZE, 0.0, 65 / SIZE, 1.0)
    assert np.all(tensor[:, :, :97] == 0.0)
    assert np.all(tensor[:, :, 162:] == 0.0)
    np.testing.assert_allclose(tensor[2, :, 97:162], 1.0, atol=1e-6)


def test_letterbox_pad_colour_is_the_mean():
    assert SPEC.pad_color == (127, 127, 127)
    canvas, _ = resize(Image.new("RGB", (300, 100), (0, 0, 0)), SPEC)
    assert canvas.getpixel((0, 0)) == SPEC.pad_color


def test_placement_maps_model_fractions_back_to_the_photo():
    placement = Placement(0.0, 0.25, 1.0, 0.5)
    assert placement.to_photo_fraction(0.5, 0.5) == (0.5, 0.5)
    assert placement.to_photo_fraction(0.25, 0.25) == (0.25, 0.0)
    assert placement.to_photo_fraction(1.0, 0.75) == (1.0, 1.0)
    # Points on the padding are clipped to the photo's edge.
    assert placement.to_photo_fraction(0.0, 0.1) == (0.0, 0.0)
    assert placement.to_photo_fraction(1.0, 0.9) == (1.0, 1.0)


def test_squash_fills_the_whole_input():
    image = Image.new("RGB", (520, 100), (255, 0, 0))
    tensor, placement = preprocess(image, SQUASH)
    assert tensor.shape == (3, SIZE, SIZE)
    assert placement == Placement(0.0, 0.0, 1.0, 1.0)
    np.testing.assert_allclose(tensor[0], 1.0, atol=1e-6)
    assert draft_size(4032, 3024, SQUASH) == (SIZE, SIZE)


@pytest.mark.parametrize(("width", "height"), [(4032, 3024), (3024, 4032), (1000, 1000), (10_000, 1), (100, 50)])
def test_draft_size_covers_the_letterboxed_content(width, height):
    target = draft_size(width, height, SPEC)
    _, placement = resize(Image.new("RGB", (width, height)), SPEC)
    content = (round(placement.width * SIZE), round(placement.height * SIZE))
    assert max(target) == SIZE
    # At least the content size (never less detail), at most one pixel over (float rounding in the ceil).
    assert content[0] <= target[0] <= content[0] + 1
    assert content[1] <= target[1] <= content[1] + 1


# --- PreprocessSpec --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [SPEC, SQUASH, PreprocessSpec(size=224, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))])
def test_spec_dict_round_trip(spec):
    data = spec.to_dict()
    assert PreprocessSpec.from_dict(data) == spec
    # Through JSON, as in the ONNX metadata (tuples become lists).
    assert PreprocessSpec.from_dict(json.loads(json.dumps(data))) == spec


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="resize_mode"):
        PreprocessSpec(size=SIZE, resize_mode="crop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resize_mode"):
        PreprocessSpec.from_dict({**SPEC.to_dict(), "resize_mode": "centre_crop"})
    with pytest.raises(ValueError, match="size"):
        PreprocessSpec(size=0)


# --- to_rgb ----------------------------------------------------------------------------------


def rgb_pixels(image: Image.Image) -> list[tuple[int, int, int]]:
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.size == image.size
    return [rgb.getpixel((x, 0)) for x in range(image.width)]


def test_to_rgb_keeps_rgb_as_is():
    image = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(image) is image


def test_to_rgb_palette_without_transparency():
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    assert "transparency" not in image.info
    assert rgb_pixels(image) == [(255, 0, 0), (0, 0, 255)]


def test_to_rgb_palette_with_transparency_shows_white():
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 1
    assert rgb_pixels(image) == [(255, 0, 0), WHITE]


def test_to_rgb_la():
    image = Image.new("LA", (3, 1))
    image.putpixel((0, 0), (100, 255))
    image.putpixel((1, 0), (100, 0))
    image.putpixel((2, 0), (0, 128))
    opaque, transparent, half = rgb_pixels(image)
    assert opaque == (100, 100, 100)
    assert transparent == WHITE
    assert all(abs(v - 127) <= 1 for v in half)


def test_to_rgb_rgba_transparent_pixel_becomes_white():
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (10, 20, 30, 255))
    image.putpixel((1, 0), (10, 20, 30, 0))
    image.putpixel((2, 0), (0, 0, 0, 128))
    opaque, transparent, half = rgb_pixels(image)
    assert opaque == (10, 20, 30)
    assert transparent == TRANSPARENT_BACKGROUND == WHITE
    assert all(abs(v - 127) <= 1 for v in half)


def test_to_rgb_cmyk():
    image = Image.new("CMYK", (3, 1))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 255))
    image.putpixel((2, 0), (255, 0, 0, 0))
    assert rgb_pixels(image) == [WHITE, (0, 0, 0), (0, 255, 255)]


def test_to_rgb_16_bit_is_rescaled_not_clipped():
    image = Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16))
    assert image.mode == "I;16"
    assert rgb_pixels(image) == [(0, 0, 0), (1, 1, 1), (127, 127, 127), WHITE]


def test_to_rgb_grey_l():
    image = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    assert image.mode == "L"
    assert rgb_pixels(image) == [(0, 0, 0), (77, 77, 77), WHITE]


def test_to_rgb_bilevel():
    image = Image.new("1", (2, 1), 0)
    image.putpixel((1, 0), 1)
    assert rgb_pixels(image) == [(0, 0, 0), WHITE]


def test_to_rgb_float_is_scaled_by_its_maximum():
    image = Image.fromarray(np.array([[0.0, 2.0, 4.0]], dtype=np.float32))
    assert image.mode == "F"
    assert rgb_pixels(image) == [(0, 0, 0), (127, 127, 127), WHITE]
    # Values within [0, 1] are taken as fractions of white.
    small = Image.fromarray(np.array([[0.0, 0.5]], dtype=np.float32))
    assert rgb_pixels(small) == [(0, 0, 0), (127, 127, 127)]


# --- decoding files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options", "tolerance"),
    [
        ("PNG", {}, 0.0),
        ("BMP", {}, 0.0),
        ("TIFF", {}, 0.0),
        ("WEBP", {"lossless": True}, 0.0),
        ("WEBP", {"quality": 90}, 0.05),
        ("GIF", {}, 0.06),
        ("JPEG", {"quality": 95}, 0.02),
    ],
)
def test_formats_load_as_rgb(chelsea, encoder, fmt, options, tolerance):
    data = encoder(chelsea, fmt, **options)
    loaded = load_image(data, SPEC)
    assert loaded.mode == "RGB"
    assert loaded.size == chelsea.size
    assert mean_abs_diff(np.asarray(loaded) / 255.0, np.asarray(chelsea) / 255.0) <= tolerance
    tensor = preprocess_file(io.BytesIO(data), SPEC)
    assert tensor.shape == (3, SIZE, SIZE) and tensor.dtype == np.float32


def test_load_from_path(tmp_path, chelsea):
    path = tmp_path / "cat.png"
    chelsea.save(path)
    assert np.array_equal(np.asarray(load_image(path, SPEC)), np.asarray(chelsea))
    assert np.array_equal(preprocess_file(str(path), SPEC), preprocess(chelsea, SPEC)[0])


def test_transparent_png_and_gif_show_white(encoder):
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    loaded = load_image(encoder(rgba, "PNG"), SPEC)
    assert loaded.getpixel((0, 0)) == (255, 0, 0)
    assert loaded.getpixel((3, 3)) == WHITE

    gif = Image.new("P", (4, 4), 1)
    gif.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    gif.putpixel((0, 0), 0)
    loaded = load_image(encoder(gif, "GIF", transparency=1), SPEC)
    assert loaded.getpixel((0, 0)) == (255, 0, 0)
    assert loaded.getpixel((3, 3)) == WHITE


def test_16_bit_png_is_rescaled(encoder):
    image = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    loaded = load_image(encoder(image, "PNG"), SPEC)
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (0, 0, 0)
    assert loaded.getpixel((1, 0)) == WHITE


def test_heic_round_trip(chelsea):
    import pillow_heif

    pillow_heif.register_heif_opener()
    small = chelsea.resize((128, 84))
    buffer = io.BytesIO()
    small.save(buffer, format="HEIF", quality=90)
    data = buffer.getvalue()
    assert data[4:8] == b"ftyp"
    loaded = load_image(data, SPEC)
    assert loaded.mode == "RGB"
    assert loaded.size == small.size
    assert mean_abs_diff(np.asarray(loaded) / 255.0, np.asarray(small) / 255.0) < 0.05


# --- EXIF orientation and JPEG draft -----------------------------------------------------------


def test_exif_orientation_is_applied(coffee, twins):
    upright = coffee.crop((0, 0, 592, 400))  # whole 16 px JPEG blocks, so both twins compress alike
    upright_jpeg, sideways_jpeg = twins(upright)
    stored = Image.open(io.BytesIO(sideways_jpeg))
    assert stored.size == (400, 592)
    assert stored.getexif()[ExifTags.Base.Orientation] == 6

    # Both are drafted to half size (296x200 still covers the 260x176 letterboxed content).
    assert load_image(sideways_jpeg, SPEC).size == load_image(upright_jpeg, SPEC).size == (296, 200)
    a = preprocess_file(upright_jpeg, SPEC)
    b = preprocess_file(sideways_jpeg, SPEC)
    assert mean_abs_diff(a, b) < 0.01
    assert np.percentile(np.abs(a - b), 99) < 0.1
    # Not a coincidence of a symmetric photo: ignoring the tag gives a very different tensor.
    ignored = preprocess(stored.convert("RGB"), SPEC)[0]
    assert mean_abs_diff(a, ignored) > 0.1


@pytest.fixture(scope="module")
def phone_photo(astronaut, encoder) -> tuple[Image.Image, bytes]:
    """A 12 MP, 4032x3024 JPEG, as a phone saves it."""
    image = astronaut.resize((4032, 3024), Image.Resampling.BILINEAR)
    return image, encoder(image, "JPEG", quality=90)


def test_big_jpeg_is_drafted_to_a_smaller_decode(phone_photo):
    _, data = phone_photo
    needed = draft_size(4032, 3024, SPEC)
    loaded = load_image(data, SPEC)
    assert loaded.mode == "RGB"
    assert loaded.size == (504, 378)  # 1/8 scale: the smallest DCT scale that still covers 260x195
    assert loaded.width >= needed[0] and loaded.height >= needed[1]

    drafted = preprocess(loaded, SPEC)[0]
    full = preprocess(Image.open(io.BytesIO(data)).convert("RGB"), SPEC)[0]
    assert mean_abs_diff(drafted, full) < 0.05


@pytest.mark.parametrize("size", [(4032, 3024), (2600, 650)])
def test_sideways_jpeg_is_drafted_like_its_upright_twin(encoder, size):
    """The draft target is computed on the stored pixels, so it must not be swapped for orientation 5-8."""
    stored = Image.new("RGB", size, (200, 30, 30))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    upright = load_image(encoder(stored, "JPEG"), SPEC)
    sideways = load_image(encoder(stored, "JPEG", exif=exif), SPEC)
    assert sideways.size == upright.size[::-1]
    needed = draft_size(*size, SPEC)
    assert upright.width >= needed[0] and upright.height >= needed[1]
    assert upright.width < size[0]
