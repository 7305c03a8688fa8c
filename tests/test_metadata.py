"""The ONNX file describes itself: ModelInfo survives its metadata, and a broken field is named."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from flexguard.models.metadata import (
    FORMAT_VERSION,
    KEY_PREFIX,
    REQUIRED_KEYS,
    ModelInfo,
    ModelMetadataError,
    Thresholds,
    compute_weights_sha256,
    derived_version,
    read_info,
    stamp,
)
from flexguard.models.preprocessing import PreprocessSpec
from flexguard.models.taxonomy import CATEGORIES, CATEGORY_IDS

INFO = ModelInfo(
    name="flexguard-lite2",
    version="2024.06.1",
    categories=CATEGORIES,
    preprocess=PreprocessSpec(resize_mode="squash", size=224),
    thresholds=Thresholds(review=0.3, block=0.7),
    data_manifest_sha256="ab" * 32,
    validation_metrics={"macro_auc": 0.91, "per_category": {"luxury_car": {"auc": 0.95}}, "n": 812},
)


def metadata(**overrides: str) -> dict[str, str]:
    values = INFO.to_metadata()
    for key, value in overrides.items():
        values[KEY_PREFIX + key] = value
    return values


def test_round_trip():
    stored = INFO.to_metadata()
    assert set(stored) == {KEY_PREFIX + key for key in REQUIRED_KEYS}
    assert all(isinstance(value, str) for value in stored.values())
    assert json.loads(stored[KEY_PREFIX + "format_version"]) == FORMAT_VERSION
    restored = ModelInfo.from_metadata(stored)
    assert restored == INFO
    assert restored.category_ids == CATEGORY_IDS


def test_round_trip_keeps_non_ascii_text():
    stored = INFO.to_metadata()
    # Category descriptions contain "Hermès"; ensure_ascii=False keeps it readable in Netron.
    assert "Hermès" in stored[KEY_PREFIX + "taxonomy"]
    assert ModelInfo.from_metadata(stored).categories == CATEGORIES


def test_extra_keys_are_ignored():
    assert ModelInfo.from_metadata({**INFO.to_metadata(), "producer": "someone", KEY_PREFIX + "extra": "1"}) == INFO


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_each_missing_key_is_named(key):
    values = INFO.to_metadata()
    del values[KEY_PREFIX + key]
    with pytest.raises(ModelMetadataError) as caught:
        ModelInfo.from_metadata(values, source="some.onnx")
    message = str(caught.value)
    assert KEY_PREFIX + key in message
    assert "some.onnx" in message
    # Only the missing key is named.
    assert [k for k in REQUIRED_KEYS if KEY_PREFIX + k in message] == [key]


def test_all_missing_keys_are_named():
    with pytest.raises(ModelMetadataError) as caught:
        ModelInfo.from_metadata({})
    for key in REQUIRED_KEYS:
        assert KEY_PREFIX + key in str(caught.value)


def test_metadata_error_is_a_value_error():
    assert issubclass(ModelMetadataError, ValueError)


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_malformed_json_is_named(key):
    with pytest.raises(ModelMetadataError, match="not valid JSON") as caught:
        ModelInfo.from_metadata(metadata(**{key: "{not json"}))
    assert KEY_PREFIX + key in str(caught.value)


@pytest.mark.parametrize("version", ['"2"', '"0"', "2", '""'])
def test_wrong_format_version(version):
    with pytest.raises(ModelMetadataError, match="not supported"):
        ModelInfo.from_metadata(metadata(format_version=version))


@pytest.mark.parametrize(
    "thresholds",
    [
        {"review": 0.8, "block": 0.5},  # review above block
        {"review": -0.1, "block": 0.5},
        {"review": 0.5, "block": 1.5},
        {"review": 0.5},  # block missing
        {"review": "high", "block": 0.9},
        [0.3, 0.7],
    ],
)
def test_bad_thresholds(thresholds):
    with pytest.raises(ModelMetadataError, match="malformed metadata"):
        ModelInfo.from_metadata(metadata(thresholds=json.dumps(thresholds)))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("taxonomy", "[]"),
        ("taxonomy", json.dumps([{"id": "luxury_car"}])),
        ("taxonomy", json.dumps(["luxury_car"])),
        ("preprocess", json.dumps({"size": 260, "resize_mode": "crop", "mean": [127] * 3, "std": [128] * 3})),
        ("preprocess", json.dumps({"size": 260})),
        ("preprocess", json.dumps({"size": 0, "resize_mode": "letterbox", "mean": [127] * 3, "std": [128] * 3})),
        ("validation_metrics", "[1, 2]"),
    ],
)
def test_malformed_fields(key, value):
    with pytest.raises(ModelMetadataError, match="malformed metadata"):
        ModelInfo.from_metadata(metadata(**{key: value}))


def test_thresholds_validate_their_order():
    with pytest.raises(ValueError):
        Thresholds(review=0.9, block=0.1)
    assert Thresholds(review=0.5, block=0.5).decide(0.5) == "block"
    assert Thresholds(review=0.0, block=1.0).decide(0.0) == "review"


@pytest.mark.parametrize(
    ("risk", "decision"),
    [
        (0.0, "allow"),
        (0.2999, "allow"),
        (0.3, "review"),  # at the review threshold: review
        (0.5, "review"),
        (0.6999, "review"),
        (0.7, "block"),  # at the block threshold: block
        (1.0, "block"),
    ],
)
def test_decide_boundaries(risk, decision):
    assert INFO.thresholds.decide(risk) == decision


# --- model identity: the weights' digest and a version per retrain ---


def test_stamp_writes_the_digest_of_the_weights_and_restamping_keeps_it(tiny_model_path, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(tiny_model_path.read_bytes())
    weights = compute_weights_sha256(path)
    assert len(weights) == 64 and read_info(path).weights_sha256 == ""  # built by the tests, never stamped
    stamp(path, replace(read_info(path), weights_sha256="0" * 64))  # a stale claim is never written
    assert read_info(path).weights_sha256 == weights
    stamp(path, replace(read_info(path), thresholds=Thresholds(review=0.2, block=0.4)))
    assert read_info(path).weights_sha256 == compute_weights_sha256(path) == weights  # metadata is not weights


def test_any_changed_weight_changes_the_digest(tiny_model_path, tmp_path):
    model = onnx.load(str(tiny_model_path))
    gain = model.graph.initializer[-1]
    gain.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(gain) * np.float32(1.001), gain.name))
    changed = tmp_path / "changed.onnx"
    onnx.save(model, str(changed))
    assert compute_weights_sha256(changed) != compute_weights_sha256(tiny_model_path)


def test_derived_version_names_the_day_and_the_weights():
    assert derived_version("3f9a0c1e" + "0" * 56, date(2026, 11, 30)) == "2026.11.30+3f9a0c1e"


def test_a_malformed_weights_digest_is_named():
    with pytest.raises(ModelMetadataError, match="weights_sha256"):
        ModelInfo.from_metadata({**INFO.to_metadata(), KEY_PREFIX + "weights_sha256": "{not json"})
