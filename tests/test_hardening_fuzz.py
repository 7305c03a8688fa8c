"""Property-based: valid photos and videos of every supported format, mutated (bit flips, byte overwrites,
truncations, splices of two files, inserted junk), through the engine. A mutant is scored or gets an
``ImageError`` with a documented per-photo code; nothing else may escape, and nothing may hang.

Several thousand cases in all (FUZZ_EXAMPLES per format family; FLEXGUARD_FUZZ_EXAMPLES overrides),
on 96x64 photos so each decode takes about a millisecond. No example database is written.
"""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
pytest.importorskip("hypothesis", reason="hypothesis is in the test extra (pyproject.toml)")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from flexguard.inference.engine import Engine, ImageError
from flexguard.inference.video import PreparedVideo
from flexguard.service.errors import CODES

# Pillow warns about the damage it skips over in mutated TIFF/EXIF tags; that is the point here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FUZZ_EXAMPLES = int(os.environ.get("FLEXGUARD_FUZZ_EXAMPLES", "1000"))
DOCUMENTED = {code for code, info in CODES.items() if info.status is None} | {"too_large", "too_long"}
SLOW_DECODE_S = 5.0
SIZE = (96, 64)
# Counted across the module for the closing note (see test_fuzz_case_count).
TRIED: dict[str, int] = {}


def _seeds() -> dict[str, bytes]:
    import pillow_heif

    pillow_heif.register_heif_opener()
    rng = np.random.default_rng(5)
    photo = Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8))
    out = {}
    for fmt, options in [
        ("JPEG", {"quality": 80}), ("PNG", {}), ("WEBP", {"quality": 70}), ("GIF", {}), ("BMP", {}),
        ("TIFF", {"compression": "tiff_lzw"}), ("HEIF", {"quality": 60}),
    ]:
        buffer = io.BytesIO()
        image = photo.convert("P") if fmt == "GIF" else photo
        if fmt == "GIF":
            image.save(buffer, fmt, save_all=True, append_images=[photo.convert("P").rotate(90)], duration=20)
        else:
            image.save(buffer, fmt, **options)
        out[fmt] = buffer.getvalue()
    return out


def _video_seeds() -> dict[str, bytes]:
    """Short, small videos of every container (one second, 5 frames a second, 64 x 48, a keyframe a second)."""
    from videos import clip

    rng = np.random.default_rng(6)

    def frame(i: int) -> np.ndarray:
        return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)

    return {
        "MP4": clip(frame, seconds=1, fps=5, size=(64, 48)),
        "MOV": clip(frame, seconds=1, fps=5, size=(64, 48), container="mov", codec="libx265"),
        "WEBM": clip(frame, seconds=1, fps=5, size=(64, 48), container="webm", codec="libvpx-vp9"),
        "3GP": clip(frame, seconds=1, fps=5, size=(176, 144), container="3gp", codec="h263"),
    }


SEEDS = {**_seeds(), **_video_seeds()}
FAMILIES = {
    "jpeg_webp": ("JPEG", "WEBP"),
    "png_gif_bmp": ("PNG", "GIF", "BMP"),
    "tiff_heif": ("TIFF", "HEIF"),
    "mp4_mov": ("MP4", "MOV"),
    "webm_3gp": ("WEBM", "3GP"),
}


@st.composite
def mutants(draw, formats: tuple[str, ...]) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(formats))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "overwrite", "truncate", "splice", "insert", "header_flip")))
        if not data:
            break
        if kind == "flip":
            for _ in range(draw(st.integers(1, 16))):
                position = draw(st.integers(0, len(data) - 1))
                data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "header_flip":  # the header and tables are where decoders trust the file most
            position = draw(st.integers(0, min(len(data), 256) - 1))
            data[position] = draw(st.integers(0, 255))
        elif kind == "overwrite":
            start = draw(st.integers(0, len(data) - 1))
            junk = draw(st.binary(min_size=1, max_size=64))
            data[start:start + len(junk)] = junk
        elif kind == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "splice":
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            cut_here = draw(st.integers(0, len(data)))
            cut_there = draw(st.integers(0, len(other)))
            data = data[:cut_here] + bytearray(other[cut_there:])
        else:
            position = draw(st.integers(0, len(data)))
            data[position:position] = draw(st.binary(min_size=1, max_size=256))
    return bytes(data)


@pytest.fixture(scope="module")
def engine(tiny_model_path) -> Engine:
    return Engine(tiny_model_path, threads=1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_mutated_photos_give_only_documented_codes(engine, family):
    formats = FAMILIES[family]
    seen: dict[str, int] = {}

    @settings(
        max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=mutants(formats))
    def check(data: bytes) -> None:
        start = time.perf_counter()
        try:
            prepared = engine.prepare(data)
        except ImageError as error:
            assert error.code in DOCUMENTED, (error.code, error.message)
            assert error.message
            outcome = str(error.code)
        else:
            tensors = [f.tensor for f in prepared.frames] if isinstance(prepared, PreparedVideo) else [prepared.tensor]
            assert tensors and all(t.shape == (3, 260, 260) and np.isfinite(t).all() for t in tensors)
            engine.score_prepared([prepared])
            outcome = "scored"
        assert time.perf_counter() - start < SLOW_DECODE_S
        seen[outcome] = seen.get(outcome, 0) + 1

    check()
    TRIED[family] = sum(seen.values())
    # The mutations must exercise both paths, or the property says little.
    assert seen.get("scored", 0) > 0 and sum(v for k, v in seen.items() if k != "scored") > 0, seen
    print(f"\nfuzz {family}: {seen}")


def test_fuzz_case_count():
    """Runs after the families (file order): several thousand cases in the default run."""
    if len(TRIED) < len(FAMILIES):
        pytest.skip("the fuzz families did not all run in this session")
    assert sum(TRIED.values()) >= len(FAMILIES) * FUZZ_EXAMPLES
