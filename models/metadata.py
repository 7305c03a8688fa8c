"""The ONNX file describes itself: what its outputs mean and how to feed it.

Export writes a ``ModelInfo`` into the ONNX file's metadata (one JSON value per key, so tools such
as Netron show each field); the service, the scanner and evaluation read it back and refuse a file
with a missing or malformed field, naming it, instead of guessing defaults.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from .preprocessing import PreprocessSpec
from .taxonomy import Category
from .vocabulary import Decision

FORMAT_VERSION = "1"
KEY_PREFIX = "flexguard."
# Output tensor names in every flexguard ONNX file.
SCORES_OUTPUT = "scores"
CAM_OUTPUT = "cam"
INPUT_NAME = "image"

REQUIRED_KEYS = (
    "format_version",
    "name",
    "version",
    "taxonomy",
    "preprocess",
    "thresholds",
    "data_manifest_sha256",
    "validation_metrics",
)
# Written by ``stamp`` since weights identity was added; files stamped before it lack it, and the engine
# computes it from the weights either way (and refuses a file whose stamp disagrees with them).
WEIGHTS_KEY = "weights_sha256"


class ModelMetadataError(ValueError):
    """An ONNX file that lacks what flexguard needs to use it."""


@dataclass(frozen=True)
class Thresholds:
    """Risk at or above ``review`` needs a person to look; at or above ``block`` it should not be posted."""

    review: float
    block: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.review <= self.block <= 1.0):
            raise ValueError(f"thresholds need 0 <= review <= block <= 1, got review={self.review}, block={self.block}")

    def decide(self, risk: float) -> Decision:
        if risk >= self.block:
            return Decision.BLOCK
        if risk >= self.review:
            return Decision.REVIEW
        return Decision.ALLOW


def overall_risk(scores: np.ndarray) -> np.ndarray:
    """A photo's risk is its highest category score: [..., C] scores -> [...] risks.

    One photo's (C,) scores give a 0-d array; a batch's (N, C) give (N,). Every client (the engine,
    training's validation, evaluation) takes the risk from here.
    """
    return np.asarray(scores, dtype=np.float64).max(axis=-1)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    categories: tuple[Category, ...]
    preprocess: PreprocessSpec
    thresholds: Thresholds
    data_manifest_sha256: str
    validation_metrics: dict[str, Any] = field(default_factory=dict)
    # SHA-256 of the weights (``weights_sha256``): with ``version`` it says exactly which model scored a
    # photo, since a version is a name people give and two retrains could be given the same one.
    weights_sha256: str = ""

    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.categories)

    def to_metadata(self) -> dict[str, str]:
        values = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "taxonomy": [c.to_dict() for c in self.categories],
            "preprocess": self.preprocess.to_dict(),
            "thresholds": {"review": self.thresholds.review, "block": self.thresholds.block},
            "data_manifest_sha256": self.data_manifest_sha256,
            "validation_metrics": self.validation_metrics,
        }
        if self.weights_sha256:
            values[WEIGHTS_KEY] = self.weights_sha256
        return {KEY_PREFIX + key: json.dumps(value, ensure_ascii=False) for key, value in values.items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str = "model") -> "ModelInfo":
        missing = [KEY_PREFIX + key for key in REQUIRED_KEYS if KEY_PREFIX + key not in metadata]
        if missing:
            raise ModelMetadataError(
                f"{source} is not a flexguard model: its ONNX metadata lacks {', '.join(missing)} "
                "(export it with `flexguard export`)"
            )
        values: dict[str, Any] = {WEIGHTS_KEY: ""}
        for key in (key for key in (*REQUIRED_KEYS, WEIGHTS_KEY) if KEY_PREFIX + key in metadata):
            try:
                values[key] = json.loads(metadata[KEY_PREFIX + key])
            except json.JSONDecodeError as error:
                raise ModelMetadataError(f"{source}: metadata field {KEY_PREFIX + key} is not valid JSON ({error})") from None
        if str(values["format_version"]) != FORMAT_VERSION:
            raise ModelMetadataError(
                f"{source}: metadata format {values['format_version']!r} is not supported (this flexguard reads {FORMAT_VERSION!r})"
            )
        try:
            categories = tuple(Category(**entry) for entry in values["taxonomy"])
            if not categories:
                raise ValueError("taxonomy is empty")
            preprocess = PreprocessSpec.from_dict(values["preprocess"])
            thresholds = Thresholds(float(values["thresholds"]["review"]), float(values["thresholds"]["block"]))
            if not isinstance(values["validation_metrics"], dict):
                raise ValueError("validation_metrics is not an object")
        except (TypeError, KeyError, ValueError) as error:
            raise ModelMetadataError(f"{source}: malformed metadata ({error.__class__.__name__}: {error})") from None
        return cls(
            name=str(values["name"]),
            version=str(values["version"]),
            categories=categories,
            preprocess=preprocess,
            thresholds=thresholds,
            data_manifest_sha256=str(values["data_manifest_sha256"]),
            validation_metrics=values["validation_metrics"],
            weights_sha256=str(values[WEIGHTS_KEY]),
        )


# Reading and writing an ONNX file's metadata and weights needs the ``onnx`` package, imported here only
# when called, so that the contract itself imports no model runtime.


def compute_weights_sha256(path: str | Path) -> str:
    """SHA-256 of an ONNX file's weights: every initializer's name, type, shape and values, in graph order.

    Metadata is left out, so restamping thresholds or metrics keeps the digest; any change to a weight
    (a retrain, INT8 quantisation) changes it.
    """
    import onnx
    from onnx import numpy_helper

    digest = hashlib.sha256()
    for tensor in onnx.load(str(path)).graph.initializer:
        values = numpy_helper.to_array(tensor)
        digest.update(f"{tensor.name}|{values.dtype.str}|{values.shape}|".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def derived_version(weights_digest: str, on: date) -> str:
    """A version that changes with every retrain without anyone choosing it: the export's date and the
    first 8 hex digits of the weights (``2026.11.30+3f9a0c1e``)."""
    return f"{on:%Y.%m.%d}+{weights_digest[:8]}"


def read_info(path: str | Path) -> ModelInfo:
    """The ``ModelInfo`` stamped into an ONNX file, without loading its weights into a runtime."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return ModelInfo.from_metadata({p.key: p.value for p in model.metadata_props}, source=str(path))


def stamp(path: str | Path, info: ModelInfo) -> None:
    """(Re)write ``info`` into the ONNX file's metadata, leaving the graph untouched.

    The weights digest is always computed here from the file itself, so a stamp never carries a stale one.
    """
    import onnx

    fields = replace(info, weights_sha256=compute_weights_sha256(path)).to_metadata()
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in fields]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in kept}, **fields})
    model.producer_name = "flexguard"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def stamp_evaluation(path: Path, evaluation: Path, model_name: str) -> ModelInfo:
    """Write one model's thresholds and metrics from ``flexguard evaluate``'s metrics.json into its file."""
    evaluated = json.loads(Path(evaluation).read_text())
    figures = evaluated["models"][model_name]
    info = replace(
        read_info(path),
        thresholds=Thresholds(**figures["thresholds"]),
        validation_metrics={"evaluated_on": evaluated["notes"], **figures},
    )
    stamp(path, info)
    return info
