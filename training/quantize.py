"""``flexguard quantize``: an INT8 copy of a model, calibrated on training photos.

EfficientNet-Lite was designed for integer inference (ReLU6, no squeeze-excite), so static INT8
quantisation with onnxruntime's own tools keeps its accuracy while cutting CPU time. Calibration
photos come from the *training* side of the split, never from validation, and pass through the one
preprocessing spec. The quantised file keeps the original's metadata, so it describes itself too.

Only the networks are quantised; what comes after their last convolution (pooling, the heads, the
sigmoid, the evidence maps) stays in float. Quantised, the scores sat on a 1/255 grid, so the block
threshold (0.9943) could only fall at 254/255 and photos tied at the top; it costs nothing measurable,
as the heads are a few million multiply-adds against the networks' hundreds of millions.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import replace
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from flexguard.datasets.manifest import Manifest
from flexguard.models.metadata import INPUT_NAME, read_info, stamp
from flexguard.models.preprocessing import PreprocessSpec, preprocess_file

INT8_SUFFIX = "-int8"
# A few hundred photos pin the activation ranges; more only slows calibration down.
DEFAULT_CALIBRATION_PHOTOS = 300
CALIBRATION_BATCH = 16


class _PhotoReader(CalibrationDataReader):
    """Feeds preprocessed calibration photos to onnxruntime's calibrator, a batch at a time."""

    def __init__(self, paths: list[Path], spec: PreprocessSpec):
        self._batches: Iterator[dict[str, np.ndarray]] = (
            {INPUT_NAME: np.stack([preprocess_file(p, spec) for p in paths[i:i + CALIBRATION_BATCH]])}
            for i in range(0, len(paths), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def calibration_paths(train_set: Manifest, count: int, seed: int) -> list[Path]:
    """A seeded sample of training photos, half flex and half ordinary, so both ends of the range are seen."""
    rng = random.Random(seed)
    flex = [r.path for r in train_set.records if r.is_flex]
    ordinary = [r.path for r in train_set.records if not r.is_flex]
    half = count // 2
    return rng.sample(flex, min(half, len(flex))) + rng.sample(ordinary, min(count - half, len(ordinary)))


def head_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes after the last convolution on every path to the outputs: the heads."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_a_conv: dict[str, bool] = {}
    for node in reversed(graph.node):  # ONNX keeps nodes in topological order
        feeds_a_conv[node.name] = any(
            after.op_type == "Conv" or feeds_a_conv[after.name]
            for output in node.output for after in consumers.get(output, ())
        )
    return [node.name for node in graph.node if node.op_type != "Conv" and not feeds_a_conv[node.name]]


def quantize(model: Path, out: Path, paths: list[Path], spec: PreprocessSpec) -> Path:
    """Write an INT8 (QDQ, per-channel weights) copy of ``model`` calibrated on ``paths``, heads in float."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared), load_external_data=False).graph
        if any(not node.name for node in graph.node):
            raise ValueError(f"{model}: every node needs a name to keep the heads out of quantisation")
        quantize_static(
            str(prepared), str(out), _PhotoReader(paths, spec),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=head_nodes(graph),
        )
    # The copy inherits the original's description under its own name; `flexguard evaluate --stamp`
    # then replaces the inherited thresholds and metrics with the INT8 model's own.
    info = read_info(model)
    stamp(out, replace(info, name=info.name + INT8_SUFFIX))
    return out
