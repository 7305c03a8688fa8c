"""The inference engine on the tiny hand-weighted model from conftest.py.

The tiny model scores category 0 (luxury_car) by how red a photo is, and its ``cam`` for that
category is high exactly where the photo is red, so scores and evidence boxes are predictable.
"""

from __future__ import annotations

import struct
from dataclasses import replace
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image

from flexguard.models.metadata import KEY_PREFIX, REQUIRED_KEYS, Thresholds, compute_weights_sha256
from flexguard.models.policy import Policy
from flexguard.models.preprocessing import Placement, preprocess
from flexguard.models.taxonomy import CATEGORY_IDS
from flexguard.inference.engine import (
    SUPPORTED_FORMATS,
    Engine,
    Evidence,
    ImageError,
    ImageScore,
    ModelLoadError,
    Prepared,
    Timing,
    available_cores,
    evidence_box,
)

CAM_CELLS = 9
RED = (255, 0, 0)
GREY = (127, 127, 127)  # the normalisation mean: 0 on the model input, like the letterbox padding


@pytest.fixture(scope="module")
def engine(tiny_model_path) -> Engine:
    return Engine(tiny_model_path, threads=1)


def photo(size=(400, 300), colour=GREY, red_box=None) -> Image.Image:
    image = Image.new("RGB", size, colour)
    if red_box:
        image.paste(RED, red_box)
    return image


@pytest.fixture(scope="module")
def red_jpeg(encoder) -> bytes:
    return encoder(photo(colour=RED), "JPEG", quality=95)


@pytest.fixture(scope="module")
def grey_png(encoder) -> bytes:
    return encoder(photo(colour=GREY), "PNG")


# --- loading ----------------------------------------------------------------------------------


def assert_same_score(a: ImageScore, b: ImageScore, tolerance: float = 1e-4) -> None:
    assert a.decision == b.decision
    assert (a.width, a.height, a.format) == (b.width, b.height, b.format)
    assert set(a.scores) == set(b.scores)
    for category in a.scores:
        assert abs(a.scores[category] - b.scores[category]) <= tolerance, category


def test_loads_the_tiny_model(engine, tiny_model_path, tiny_model_info):
    # The weights' digest is computed at load; everything else is what the file says.
    assert engine.info == replace(tiny_model_info, weights_sha256=compute_weights_sha256(tiny_model_path))
    assert engine.info.category_ids == CATEGORY_IDS
    assert engine.path == tiny_model_path
    scores, cams = engine.run(np.zeros((2, 3, 260, 260), dtype=np.float32))
    assert scores.shape == (2, len(CATEGORY_IDS))
    assert cams.shape == (2, len(CATEGORY_IDS), CAM_CELLS, CAM_CELLS)


def test_a_file_whose_weights_differ_from_its_stamp_is_refused(write_model):
    changed = write_model(override={"weights_sha256": '"' + "0" * 64 + '"'})
    with pytest.raises(ModelLoadError, match="changed after export"):
        Engine(changed)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        Engine(tmp_path / "nope.onnx")


def test_folder_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        Engine(tmp_path)


def test_random_bytes_are_not_a_model(write_model):
    path = write_model(raw=np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError, match="cannot load model"):
        Engine(path, threads=1)


def test_onnx_without_metadata_names_the_missing_fields(write_model):
    path = write_model(metadata=None)
    with pytest.raises(ModelLoadError) as caught:
        Engine(path, threads=1)
    message = str(caught.value)
    assert "not a flexguard model" in message
    assert str(path) in message
    for key in REQUIRED_KEYS:
        assert KEY_PREFIX + key in message


def test_onnx_missing_one_field_names_it(write_model):
    with pytest.raises(ModelLoadError, match=KEY_PREFIX + "thresholds") as caught:
        Engine(write_model(drop=("thresholds",)), threads=1)
    assert KEY_PREFIX + "taxonomy" not in str(caught.value)


def test_onnx_with_malformed_metadata(write_model):
    with pytest.raises(ModelLoadError, match=KEY_PREFIX + "preprocess"):
        Engine(write_model(override={"preprocess": "{oops"}), threads=1)
    with pytest.raises(ModelLoadError, match="malformed"):
        Engine(write_model(override={"thresholds": '{"review": 0.9, "block": 0.1}'}), threads=1)
    with pytest.raises(ModelLoadError, match="not supported"):
        Engine(write_model(override={"format_version": '"99"'}), threads=1)


@pytest.mark.parametrize("names", [{"cam_name": "heatmap"}, {"scores_name": "logits_out"}, {"input_name": "pixels"}])
def test_onnx_with_wrong_tensor_names(write_model, names):
    with pytest.raises(ModelLoadError, match="expected input"):
        Engine(write_model(**names), threads=1)


# --- scoring ----------------------------------------------------------------------------------


def test_scores_follow_the_photo(engine, red_jpeg, grey_png, tiny_model_info):
    red, grey = engine.score([red_jpeg, grey_png])
    assert isinstance(red, ImageScore) and isinstance(grey, ImageScore)
    assert set(red.scores) == set(CATEGORY_IDS)
    assert red.scores["luxury_car"] > 0.85 > max(v for k, v in red.scores.items() if k != "luxury_car")
    assert red.risk == red.scores["luxury_car"] == max(red.scores.values())
    assert red.decision == "block"
    assert grey.risk < tiny_model_info.thresholds.review
    assert grey.decision == "allow"
    assert grey.evidence == []
    assert (red.width, red.height, red.format) == (400, 300, "JPEG")
    assert (grey.width, grey.height, grey.format) == (400, 300, "PNG")


def test_custom_thresholds(engine, red_jpeg):
    (result,) = engine.score([red_jpeg], Policy(Thresholds(review=0.99, block=1.0)))
    assert result.decision == "allow"
    assert result.evidence == []
    (result,) = engine.score([red_jpeg], Policy(Thresholds(review=0.0, block=1.0)))
    assert result.decision == "review"
    assert {e.category for e in result.evidence} == set(CATEGORY_IDS)
    evidence_scores = [e.score for e in result.evidence]
    assert evidence_scores == sorted(evidence_scores, reverse=True)  # strongest first
    assert result.evidence[0].category == "luxury_car"


def test_empty_input(engine):
    assert engine.score([]) == []
    assert engine.score_prepared([]) == []


def test_bad_photos_keep_their_place(engine, red_jpeg, grey_png, tmp_path):
    truncated = red_jpeg[: len(red_jpeg) // 2]
    path = tmp_path / "grey.png"
    path.write_bytes(grey_png)
    sources = [b"", red_jpeg, truncated, b"hello, this is text, not a photo\n", str(path), grey_png, tmp_path / "missing.jpg"]
    results = engine.score(sources)
    assert len(results) == len(sources)
    kinds = [r.code if isinstance(r, ImageError) else r.format for r in results]
    assert kinds == ["unsupported_format", "JPEG", "decode_failed", "unsupported_format", "PNG", "PNG", "decode_failed"]
    for result in results:
        if isinstance(result, ImageError):
            assert result.message and str(result) == result.message
    # The good photos score the same as when scored on their own.
    alone = engine.score([red_jpeg, grey_png])
    assert_same_score(results[1], alone[0])
    assert_same_score(results[4], alone[1])
    assert_same_score(results[5], alone[1])


def test_too_many_pixels(tiny_model_path, encoder):
    small = Engine(tiny_model_path, threads=1, max_pixels=100 * 100)
    ok, too_big = small.score([encoder(photo((100, 100)), "PNG"), encoder(photo((101, 100)), "PNG")])
    assert isinstance(ok, ImageScore)
    assert isinstance(too_big, ImageError) and too_big.code == "too_many_pixels"
    assert "101x100" in too_big.message


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data needed to read the header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_too_many_pixels(tiny_model_path):
    # Over Pillow's own hard limit (2 x MAX_IMAGE_PIXELS) but under the engine's: Pillow refuses it on open.
    lenient = Engine(tiny_model_path, threads=1, max_pixels=10**12)
    (result,) = lenient.score([png_header_only(40_000, 40_000)])
    assert isinstance(result, ImageError) and result.code == "too_many_pixels"


def test_header_size_is_checked_before_decoding(engine):
    # 80 MP: over the engine's default 64 MP limit, under Pillow's own; the header alone decides.
    (result,) = engine.score([png_header_only(10_000, 8_000)])
    assert isinstance(result, ImageError) and result.code == "too_many_pixels"
    assert "10000x8000" in result.message


def test_prepare(engine, red_jpeg):
    prepared = engine.prepare(red_jpeg)
    assert isinstance(prepared, Prepared)
    assert prepared.tensor.shape == (3, 260, 260) and prepared.tensor.dtype == np.float32
    assert prepared.placement == Placement(0.0, 32 / 260, 1.0, 195 / 260)
    assert (prepared.width, prepared.height, prepared.format) == (400, 300, "JPEG")
    with pytest.raises(ImageError) as caught:
        engine.prepare(b"GIF89a broken")
    assert caught.value.code in ("decode_failed", "unsupported_format")


def test_reported_size_is_the_photo_as_displayed(engine, encoder):
    """A big JPEG is decoded at a reduced DCT scale; the result still reports the photo's own size."""
    stored = photo((2000, 1000), red_box=(0, 0, 1000, 1000))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    upright, sideways, png = engine.score(
        [encoder(stored, "JPEG"), encoder(stored, "JPEG", exif=exif), encoder(stored, "PNG")]
    )
    assert (upright.width, upright.height, upright.format) == (2000, 1000, "JPEG")
    assert (sideways.width, sideways.height, sideways.format) == (1000, 2000, "JPEG")
    assert (png.width, png.height, png.format) == (2000, 1000, "PNG")
    assert abs(upright.risk - png.risk) < 0.01


def test_batch_of_one_equals_batch_of_many(engine, coffee, chelsea, astronaut, encoder):
    photos = [encoder(image, "PNG") for image in (coffee, chelsea, astronaut)] + [encoder(photo(red_box=(0, 0, 200, 300)), "PNG")]
    prepared = [engine.prepare(p) for p in photos]
    batch = np.stack([p.tensor for p in prepared])
    scores, cams = engine.run(batch)
    for i, p in enumerate(prepared):
        one_scores, one_cams = engine.run(p.tensor[None])
        np.testing.assert_allclose(one_scores[0], scores[i], atol=1e-5)
        np.testing.assert_allclose(one_cams[0], cams[i], atol=1e-5)
    together = engine.score(photos)
    for source, result in zip(photos, together):
        (alone,) = engine.score([source])
        assert_same_score(alone, result)  # scores are rounded to 4 places


def test_exif_rotated_jpeg_scores_like_its_upright_twin(engine, coffee, twins):
    upright = coffee.crop((0, 0, 592, 400))
    # Make it red on the left so orientation matters to the evidence box too.
    upright.paste(RED, (0, 0, 200, 400))
    upright_jpeg, sideways_jpeg = twins(upright)
    a, b = engine.score([upright_jpeg, sideways_jpeg])
    assert_same_score(a, b, tolerance=1e-3)
    assert [e.category for e in a.evidence] == [e.category for e in b.evidence]
    for ea, eb in zip(a.evidence, b.evidence):
        np.testing.assert_allclose(ea.box, eb.box, atol=0.12)


# --- evidence ----------------------------------------------------------------------------------


def check_box(box: tuple[float, float, float, float]) -> None:
    left, top, right, bottom = box
    assert 0.0 <= left < right <= 1.0
    assert 0.0 <= top < bottom <= 1.0


def test_evidence_for_categories_over_review(engine, encoder, tiny_model_info):
    # Red on the left half of a wide, grey photo: luxury_car over review, the rest under.
    (result,) = engine.score([encoder(photo((400, 300), red_box=(0, 0, 200, 300)), "PNG")])
    review = tiny_model_info.thresholds.review
    over = {cid for cid, s in result.scores.items() if s >= review}
    assert over == {"luxury_car"}
    assert [e.category for e in result.evidence] == ["luxury_car"]
    (evidence,) = result.evidence
    assert isinstance(evidence, Evidence)
    assert evidence.score == result.scores["luxury_car"]
    check_box(evidence.box)
    left, top, right, bottom = evidence.box
    # The box covers the red left half of the photo (to the 9x9 map's resolution), top to bottom.
    assert left == 0.0 and top == 0.0 and bottom == 1.0
    assert 0.4 <= right <= 0.6


@pytest.mark.parametrize(
    ("size", "red_box", "expected"),
    [
        ((300, 300), (150, 150, 300, 300), (0.5, 0.5, 1.0, 1.0)),  # bottom-right quarter
        ((300, 600), (0, 0, 300, 300), (0.0, 0.0, 1.0, 0.5)),  # tall photo, top half
        ((600, 300), (300, 0, 600, 300), (0.5, 0.0, 1.0, 1.0)),  # wide photo, right half
    ],
)
def test_evidence_box_lands_on_the_red_part(engine, encoder, size, red_box, expected):
    (result,) = engine.score([encoder(photo(size, red_box=red_box), "PNG")], Policy(Thresholds(0.0, 1.0)))
    by_category = {e.category: e for e in result.evidence}
    assert set(by_category) == set(CATEGORY_IDS)  # review 0: every category gets a box
    for evidence in result.evidence:
        check_box(evidence.box)
    np.testing.assert_allclose(by_category["luxury_car"].box, expected, atol=1 / CAM_CELLS + 0.02)


def test_evidence_box_on_a_square_photo_maps_cells_directly():
    cam = np.zeros((CAM_CELLS, CAM_CELLS), dtype=np.float32)
    cam[0, 0] = 1.0
    assert evidence_box(cam, Placement(0.0, 0.0, 1.0, 1.0)) == (0.0, 0.0, round(1 / 9, 4), round(1 / 9, 4))
    cam = np.zeros((CAM_CELLS, CAM_CELLS), dtype=np.float32)
    cam[8, 8] = 1.0
    assert evidence_box(cam, Placement(0.0, 0.0, 1.0, 1.0)) == (round(8 / 9, 4), round(8 / 9, 4), 1.0, 1.0)


def test_evidence_box_maps_through_letterbox_placement():
    # A wide photo: content on rows 2/9..7/9 of the input (top 2/9, height 5/9).
    placement = Placement(0.0, 2 / 9, 1.0, 5 / 9)
    cam = np.zeros((CAM_CELLS, CAM_CELLS), dtype=np.float32)
    cam[2, 8] = 1.0  # top-right corner cell of the content
    left, top, right, bottom = evidence_box(cam, placement)
    assert (left, top, right, bottom) == (round(8 / 9, 4), 0.0, 1.0, round(1 / 5, 4))

    # A tall photo: content on columns 3/9..6/9 (left 3/9, width 3/9); peak at the bottom-left corner.
    placement = Placement(3 / 9, 0.0, 3 / 9, 1.0)
    cam = np.zeros((CAM_CELLS, CAM_CELLS), dtype=np.float32)
    cam[8, 3] = 1.0
    assert evidence_box(cam, placement) == (0.0, round(8 / 9, 4), round(1 / 3, 4), 1.0)


def test_evidence_box_keeps_to_the_peak_region():
    cam = np.zeros((CAM_CELLS, CAM_CELLS), dtype=np.float32)
    cam[1:3, 1:4] = 0.8  # the object around the peak, above half the peak
    cam[2, 2] = 1.0  # the peak
    cam[7, 7] = 0.9  # strong but not connected to the peak: left out
    cam[5, 5] = 0.4  # under half the peak: left out
    box = evidence_box(cam, Placement(0.0, 0.0, 1.0, 1.0))
    assert box == (round(1 / 9, 4), round(1 / 9, 4), round(4 / 9, 4), round(3 / 9, 4))


def test_evidence_box_of_a_flat_map_is_the_whole_photo():
    cam = np.full((CAM_CELLS, CAM_CELLS), 0.3, dtype=np.float32)
    assert evidence_box(cam, Placement(0.25, 0.0, 0.5, 1.0)) == (0.0, 0.0, 1.0, 1.0)


def test_engine_cam_follows_the_photo(engine):
    # Sanity check of the tiny model itself: red in the top-left corner peaks the luxury_car map there.
    image = photo((260, 260), red_box=(0, 0, 58, 58))
    tensor, placement = preprocess(image, engine.info.preprocess)
    _, cams = engine.run(tensor[None])
    peak = np.unravel_index(int(np.argmax(cams[0, 0])), cams[0, 0].shape)
    assert peak[0] < 2 and peak[1] < 2
    assert evidence_box(cams[0, 0], placement) == (0.0, 0.0, round(2 / 9, 4), round(2 / 9, 4))


# --- limits, formats, timing ----------------------------------------------------------------------


def test_default_threads_are_the_cores_this_process_may_use(tiny_model_path):
    engine = Engine(tiny_model_path)
    assert engine.session.get_session_options().intra_op_num_threads == available_cores() >= 1


def test_too_large_is_checked_before_decoding(tiny_model_path, grey_png, tmp_path):
    small = Engine(tiny_model_path, threads=1, max_bytes=len(grey_png) - 1)
    path = tmp_path / "grey.png"
    path.write_bytes(grey_png)
    for source in (grey_png, bytearray(grey_png), memoryview(grey_png), path, str(path)):
        with pytest.raises(ImageError) as caught:
            small.prepare(source)
        assert caught.value.code == "too_large"
        assert str(len(grey_png)) in caught.value.message
    exact = Engine(tiny_model_path, threads=1, max_bytes=len(grey_png))
    assert isinstance(exact.prepare(grey_png), Prepared)


@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PCX", "PPM"])
def test_formats_outside_the_supported_ones_are_refused(engine, encoder, fmt):
    data = encoder(photo((64, 48), colour=RED), fmt)
    with pytest.raises(ImageError) as caught:
        engine.prepare(data)
    assert caught.value.code == "unsupported_format"
    assert fmt in caught.value.message and "JPEG" in caught.value.message
    assert fmt not in SUPPORTED_FORMATS


def test_results_carry_their_timing(engine, red_jpeg, grey_png):
    red, grey = engine.score([red_jpeg, grey_png])
    for result in (red, grey):
        assert isinstance(result.timing, Timing)
        assert result.timing.decode_ms > 0 and result.timing.model_ms > 0
        assert result.timing.queue_ms == 0 and result.timing.batch_size == 2
    assert red.timing.model_ms == grey.timing.model_ms  # one model call for both


def test_result_from_raw_outputs_is_what_score_gives(engine, red_jpeg):
    """The service builds results from batched rows with ``result``; it must agree with ``score``."""
    prepared = engine.prepare(red_jpeg)
    scores, cams = engine.run(prepared.tensor[None])
    timing = Timing(1.0, 2.0, 3.0, 4)
    built = engine.result(prepared, scores[0], cams[0], Policy(engine.info.thresholds), timing)
    (scored,) = engine.score([red_jpeg])
    assert built.timing == timing
    assert (built.risk, built.decision, built.scores, built.evidence) == (scored.risk, scored.decision, scored.scores, scored.evidence)


def test_warm_up_runs_one_blank_inference_of_the_models_input_size(engine, monkeypatch):
    shapes = []
    real_run = engine.run
    monkeypatch.setattr(engine, "run", lambda batch: shapes.append((batch.shape, float(abs(batch).max()))) or real_run(batch))
    engine.warm_up()
    size = engine.info.preprocess.size
    assert shapes == [((1, 3, size, size), 0.0)]
