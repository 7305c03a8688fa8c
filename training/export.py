"""``flexguard export``: a trained checkpoint (or the zero-training baseline) to a self-describing ONNX file.

The file carries its inputs' spec, taxonomy, thresholds, version, training-data hash and validation
metrics in its metadata (``models/metadata.py``), so whoever loads it needs nothing else.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import torch

from flexguard.models.metadata import (
    CAM_OUTPUT,
    INPUT_NAME,
    SCORES_OUTPUT,
    ModelInfo,
    Thresholds,
    compute_weights_sha256,
    derived_version,
    stamp,
)
from flexguard.models.preprocessing import PreprocessSpec
from flexguard.models.taxonomy import CATEGORIES, CATEGORY_IDS

from .backbone import INPUT_SPEC, FlexguardNet, ImageNetBaseline

# 18: the first with Resize's antialias, which the ensemble's in-graph shrinking needs (training/ensemble.py).
ONNX_OPSET = 18

# ImageNet-1k classes (torchvision's index order) that stand for each category in the zero-training
# baseline. ImageNet has no wristwatch or resort class, so the nearest ones are used.
IMAGENET_CLASSES_BY_CATEGORY = {
    # sports car, convertible, racer, limousine (not grille or car wheel: they fire on any car)
    "luxury_car": [817, 511, 751, 627],
    # purse, mailbag, wallet
    "designer_bag": [748, 636, 893],
    # analog clock, digital watch, stopwatch, necklace, chain
    "jewelry_watch": [409, 531, 826, 679, 488],
    # yawl, catamaran, trimaran, schooner, speedboat, liner, airliner, palace, castle, seashore, sandbar, boathouse, triumphal arch, obelisk
    "luxury_travel": [914, 484, 871, 780, 814, 628, 404, 698, 483, 978, 977, 449, 873, 682],
}


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, dict]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if checkpoint.get("recipe") == "ensemble":
        from .ensemble import net_from_checkpoint

        return net_from_checkpoint(checkpoint), checkpoint
    config = checkpoint["config"]
    net = FlexguardNet(len(CATEGORY_IDS), config["tune_from_block"], config["dropout"], config.get("anchored", False))
    net.load_state_dict(checkpoint["state_dict"])
    return net.eval(), checkpoint


def write_onnx(net: torch.nn.Module, info: ModelInfo, out: Path) -> Path:
    """Trace ``net`` (image -> scores, maps) to ONNX with a dynamic batch axis and stamp ``info`` into it.

    An empty ``info.version`` becomes one derived from today's date and the weights (``derived_version``).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    size = info.preprocess.size
    example = torch.zeros(1, 3, size, size)
    torch.onnx.export(
        net.eval(), example, str(out), dynamo=False, opset_version=ONNX_OPSET,
        input_names=[INPUT_NAME], output_names=[SCORES_OUTPUT, CAM_OUTPUT],
        dynamic_axes={INPUT_NAME: {0: "batch"}, SCORES_OUTPUT: {0: "batch"}, CAM_OUTPUT: {0: "batch"}},
    )
    if not info.version:
        info = replace(info, version=derived_version(compute_weights_sha256(out), date.today()))
    stamp(out, info)
    return out


def info_from_checkpoint(checkpoint: dict, name: str, version: str | None) -> ModelInfo:
    """Model description from the training run; thresholds and metrics are provisional until
    ``flexguard evaluate --stamp`` replaces them with the evaluated ones."""
    return ModelInfo(
        name=name,
        version=version or "",
        categories=CATEGORIES,
        preprocess=PreprocessSpec.from_dict(checkpoint["preprocess"]),
        thresholds=Thresholds(**checkpoint["thresholds"]),
        data_manifest_sha256=checkpoint["manifest_sha256"],
        validation_metrics={"source": "training validation (provisional)", **checkpoint["validation"]},
    )


def export_checkpoint(checkpoint_path: Path, out: Path, name: str, version: str | None = None) -> Path:
    net, checkpoint = load_checkpoint(checkpoint_path)
    return write_onnx(net, info_from_checkpoint(checkpoint, name, version), out)


def export_baseline(out: Path, thresholds: Thresholds) -> Path:
    """The zero-training baseline (ImageNet classes summed into our categories) as an ONNX file."""
    net = ImageNetBaseline([IMAGENET_CLASSES_BY_CATEGORY[c] for c in CATEGORY_IDS])
    info = ModelInfo(
        name="imagenet-zero-training", version="0", categories=CATEGORIES, preprocess=INPUT_SPEC,
        thresholds=thresholds, data_manifest_sha256="none", validation_metrics={},
    )
    return write_onnx(net, info, out)
