"""Shared fixtures: a tiny, hand-weighted flexguard ONNX model, broken model files, and photo encoders.

The real model (models/flexguard.onnx) is trained and exported elsewhere; these tests build a small
valid stand-in with the ``onnx`` helper API (no torch) so the engine and the app can be tested
anywhere. Its weights are fixed, so its behaviour is known:

* ``cam``: one 29x29/stride-29 convolution (padded to 261 px) turns the 260 px input into a 4x9x9
  map; each cell is the mean over its window of ``own channel - (other two channels) / 2 - 0.5``
  for categories 0-2 (red, green, blue) and of the mean brightness - 0.5 for category 3.
* ``scores``: ``sigmoid(2 * mean(cam))`` per category.

So a bright red photo scores high on category 0 (luxury_car), a mid-grey one scores low on all.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import ExifTags, Image

from flexguard.models.metadata import CAM_OUTPUT, INPUT_NAME, SCORES_OUTPUT, ModelInfo, Thresholds
from flexguard.models.preprocessing import PreprocessSpec
from flexguard.models.taxonomy import CATEGORIES

INPUT_SIZE = 260
CAM_SIZE = 9
KERNEL = 29  # 9 * 29 = 261: one pixel of padding on the bottom/right gives a 9x9 map
CAM_BIAS = -0.5
SCORE_GAIN = 2.0
ONNX_OPSET = 13
ONNX_IR_VERSION = 8

TINY_THRESHOLDS = Thresholds(review=0.4, block=0.85)
TINY_INFO = ModelInfo(
    name="flexguard-tiny-test",
    version="0.0.1-test",
    categories=CATEGORIES,
    # The shipped backbone's numbers (training/backbone.py), written out: serving tests need no torch.
    preprocess=PreprocessSpec(size=INPUT_SIZE, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0)),
    thresholds=TINY_THRESHOLDS,
    data_manifest_sha256="0" * 64,
    validation_metrics={"macro_auc": 0.5, "note": "hand-weighted test model"},
)


def _conv_weights() -> np.ndarray:
    weights = np.zeros((len(CATEGORIES), 3, KERNEL, KERNEL), dtype=np.float32)
    for category in range(3):
        mix = np.full(3, -0.5, dtype=np.float32)
        mix[category] = 1.0
        weights[category] = mix[:, None, None]
    weights[3] = 1.0 / 3.0
    return weights / (KERNEL * KERNEL)


def build_tiny_model(
    metadata: dict[str, str] | None,
    input_name: str = INPUT_NAME,
    scores_name: str = SCORES_OUTPUT,
    cam_name: str = CAM_OUTPUT,
) -> onnx.ModelProto:
    """The tiny flexguard model; ``metadata`` None leaves the ONNX metadata empty."""
    n_categories = len(CATEGORIES)
    weights = numpy_helper.from_array(_conv_weights(), "cam_weight")
    bias = numpy_helper.from_array(np.full(n_categories, CAM_BIAS, dtype=np.float32), "cam_bias")
    gain = numpy_helper.from_array(np.array(SCORE_GAIN, dtype=np.float32), "score_gain")
    nodes = [
        helper.make_node(
            "Conv", [input_name, "cam_weight", "cam_bias"], [cam_name],
            kernel_shape=[KERNEL, KERNEL], strides=[KERNEL, KERNEL], pads=[0, 0, 1, 1],
        ),
        helper.make_node("ReduceMean", [cam_name], ["cam_mean"], axes=[2, 3], keepdims=0),
        helper.make_node("Mul", ["cam_mean", "score_gain"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], [scores_name]),
    ]
    graph = helper.make_graph(
        nodes,
        "flexguard_tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [
            helper.make_tensor_value_info(scores_name, TensorProto.FLOAT, ["N", n_categories]),
            helper.make_tensor_value_info(cam_name, TensorProto.FLOAT, ["N", n_categories, CAM_SIZE, CAM_SIZE]),
        ],
        initializer=[weights, bias, gain],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="flexguard-tests")
    model.ir_version = ONNX_IR_VERSION
    if metadata is not None:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="session", autouse=True)
def review_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every app a test starts (in process or as a subprocess) keeps its review data in a temporary
    SQLite file, never in ``flexguard.db`` in the working directory; tests of the review workflow
    make databases of their own."""
    url = f"sqlite:///{tmp_path_factory.mktemp('review') / 'flexguard.db'}"
    before = os.environ.get("FLEXGUARD_DATABASE_URL")
    os.environ["FLEXGUARD_DATABASE_URL"] = url
    yield url
    if before is None:
        del os.environ["FLEXGUARD_DATABASE_URL"]
    else:
        os.environ["FLEXGUARD_DATABASE_URL"] = before


@pytest.fixture(scope="session")
def tiny_model_info() -> ModelInfo:
    return TINY_INFO


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "flexguard-tiny.onnx"
    onnx.save_model(build_tiny_model(TINY_INFO.to_metadata()), str(path))
    return path


@pytest.fixture(scope="session")
def write_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory for broken model files.

    ``write_model(metadata=None)`` writes the tiny graph without metadata; ``drop=("name",)`` removes
    keys from the valid metadata; ``override={"thresholds": "..."}`` replaces raw (JSON-text) values;
    ``raw=b"..."`` writes arbitrary bytes; other keywords go to ``build_tiny_model``.
    """
    folder = tmp_path_factory.mktemp("broken-models")
    counter = iter(range(1_000_000))

    def write(
        metadata: dict[str, str] | None | str = "valid",
        drop: tuple[str, ...] = (),
        override: dict[str, str] | None = None,
        raw: bytes | None = None,
        **graph_names: str,
    ) -> Path:
        path = folder / f"model-{next(counter)}.onnx"
        if raw is not None:
            path.write_bytes(raw)
            return path
        if metadata == "valid":
            metadata = TINY_INFO.to_metadata()
            for key in drop:
                del metadata["flexguard." + key]
            for key, value in (override or {}).items():
                metadata["flexguard." + key] = value
        onnx.save_model(build_tiny_model(metadata, **graph_names), str(path))
        return path

    return write


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def exif_twins(upright: Image.Image, quality: int = 95) -> tuple[bytes, bytes]:
    """The same photo as JPEG twice: stored upright, and stored on its side with EXIF Orientation=6.

    Orientation 6 means "rotate 90 degrees clockwise to display", so the stored pixels are the upright
    photo turned 90 degrees counter-clockwise.
    """
    options = {"quality": quality, "subsampling": 0}
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    return encode(upright, "JPEG", **options), encode(stored, "JPEG", exif=exif, **options)


@pytest.fixture(scope="session")
def encoder() -> Callable[..., bytes]:
    """``encoder(image, "PNG", **save_options)`` -> the encoded bytes."""
    return encode


@pytest.fixture(scope="session")
def twins() -> Callable[..., tuple[bytes, bytes]]:
    """``twins(upright)`` -> (upright JPEG, sideways JPEG with EXIF Orientation=6)."""
    return exif_twins


@pytest.fixture(scope="session")
def coffee() -> Image.Image:
    """A 600x400 colour photo that ships with scikit-image (no download)."""
    from skimage import data

    return Image.fromarray(data.coffee())


@pytest.fixture(scope="session")
def chelsea() -> Image.Image:
    """A 451x300 colour photo that ships with scikit-image (no download)."""
    from skimage import data

    return Image.fromarray(data.chelsea())


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    """A 512x512 colour photo that ships with scikit-image (no download)."""
    from skimage import data

    return Image.fromarray(data.astronaut())


# --- the review database, on SQLite and on PostgreSQL ----------------------------------------------

# `make test` starts a local PostgreSQL (Debian's) and says where in this variable; without it, the
# PostgreSQL cases skip with the reason.
POSTGRES_URL_VARIABLE = "FLEXGUARD_TEST_POSTGRES_URL"
DATABASES = ("sqlite", "postgresql")


def _postgres_url() -> str:
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set: `make test` starts a local PostgreSQL and sets it")
    return url


def _reset_postgres(url: str) -> None:
    """An empty database for each test: the public schema dropped and made again (tables, triggers and all)."""
    import sqlalchemy

    from flexguard.service.review.database import open_database

    engine = open_database(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
    except sqlalchemy.exc.OperationalError as error:
        pytest.skip(f"PostgreSQL at {POSTGRES_URL_VARIABLE} cannot be reached: {error.orig}")
    finally:
        engine.dispose()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty review database, one test at a time: a new SQLite file, or PostgreSQL emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    url = _postgres_url()
    _reset_postgres(url)
    return url


# --- a review world (two units, their keys, an admin key) and an app over it, per test and database ---


@pytest.fixture
def world(database_url: str):
    """Units dinkes and bappeda with submit and review keys, and an admin key, in an empty database."""
    from review_world import make_world

    return make_world(database_url)


@pytest.fixture
def client(world, tiny_model_path):
    """The app on the tiny model over ``world``'s database (a module may define its own ``client``)."""
    from fastapi.testclient import TestClient

    from flexguard.service.app import create_app

    with TestClient(create_app(world.settings(tiny_model_path))) as test_client:
        yield test_client
