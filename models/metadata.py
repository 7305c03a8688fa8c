"""The ONNX file describes itself: what its outputs mean and how to feed it.

Export writes a ``ModelInfo`` into the ONNX file's metadata (one JSON value per key, so tools such
as Netron show each field); the service, the scanner and evaluation read it back and refuse a file
with a missing or malformed field, naming it, instead of guessing defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
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
        return {KEY_PREFIX + key: json.dumps(value, ensure_ascii=False) for key, value in values.items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str = "model") -> "ModelInfo":
        missing = [KEY_PREFIX + key for key in REQUIRED_KEYS if KEY_PREFIX + key not in metadata]
        if missing:
            raise ModelMetadataError(
                f"{source} is not a flexguard model: its ONNX metadata lacks {', '.join(missing)} "
                "(export it with `flexguard export`)"
            )
        values: dict[str, Any] = {}
        for key in REQUIRED_KEYS:
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
        )


# Reading and writing the metadata of an ONNX file needs the ``onnx`` package (the ``eval`` extra),
# imported here only when called: serving reads the metadata through onnxruntime instead.


def read_info(path: str | Path) -> ModelInfo:
    """The ``ModelInfo`` stamped into an ONNX file, without loading its weights into a runtime."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return ModelInfo.from_metadata({p.key: p.value for p in model.metadata_props}, source=str(path))


def stamp(path: str | Path, info: ModelInfo) -> None:
    """(Re)write ``info`` into the ONNX file's metadata, leaving the graph untouched."""
    import onnx

    model = onnx.load(str(path))
    fields = info.to_metadata()
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
