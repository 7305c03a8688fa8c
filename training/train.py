"""``flexguard train``: fine-tune Lite2 on a labelled manifest, on CPU in minutes.

Stages:
1. Cache the frozen front's activations for the clean view and augmented views of each photo
   (``features.py``).
2. Linear probe: fit the head on the clean view's pooled features with the tail frozen. It is the
   baseline the fine-tuned model must beat, and the head's starting point.
3. Fine-tune the tail and head on the cached views, sampling strata (each category, hard negatives,
   other ordinary photos) in fixed shares and large groups less than their size, so that a few big
   sources cannot dominate what the model learns.

Validation uses whole held-out groups (``datasets/splits.py``); the checkpoint of the last epoch is
kept (no picking the best epoch on validation), so the reported figures are not selected on it.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from flexguard.datasets.manifest import Manifest, load_manifests
from flexguard.datasets.splits import group_split, random_split
from flexguard.models.metadata import overall_risk
from flexguard.models.preprocessing import PreprocessSpec
from flexguard.models.taxonomy import CATEGORY_IDS

from .augment import AugmentConfig
from .backbone import DEFAULT_TUNE_FROM_BLOCK, INPUT_SPEC, FlexguardNet
from .features import front_activations
from .metrics import choose_thresholds, recall_at_fpr

# Share of each training batch drawn from each stratum. Flex categories get half between them, hard
# negatives a quarter (they are what the model confuses), other ordinary photos the rest.
FLEX_SHARE = 0.5
HARD_NEGATIVE_SHARE = 0.25
ORDINARY_SHARE = 0.25
# Within a stratum a group of n photos weighs sqrt(n) rather than n: big sources still count more,
# but a 400-photo source no longer outweighs a hundred small ones.
GROUP_WEIGHT_POWER = 0.5
TAIL_BATCH = 128
REPORT_FPR = 0.05
# What a checkpoint trained on every photo says of its provisional thresholds and figures.
NO_VALIDATION = ("no validation (trained on every photo); the thresholds are the training photos' and only provisional: "
                 "stamp the cross-validation ones with `flexguard evaluate --split folds --stamp-into`")


@dataclass
class TrainConfig:
    manifests: list[str]
    out_dir: str = "runs/train"
    cache_dir: str = ".cache/flexguard"
    seed: int = 0
    n_folds: int = 5
    # None: train on every photo, with no validation (the model that ships; its figures and thresholds come
    # from cross-validation, `flexguard evaluate --split folds --stamp-into`).
    val_fold: int | None = 0
    train_only_groups: list[str] = field(default_factory=list)
    # "group" or "source": what validation holds out whole (datasets/splits.py).
    split_by: str = "group"
    keep_subgroups: list[str] = field(default_factory=list)
    views: int = 6
    epochs: int = 10
    steps_per_epoch: int = 40
    batch_size: int = 64
    lr_head: float = 1e-3
    lr_tail: float = 2e-4
    weight_decay: float = 1e-4
    probe_steps: int = 400
    dropout: float = 0.2
    tune_from_block: int = DEFAULT_TUNE_FROM_BLOCK
    # Ship the average of the fine-tuned and the linear-probe branches (see FlexguardNet).
    anchored: bool = True
    # "finetune" (this module) or "ensemble" (frozen Lite0 and Lite2 and heads over them: training/ensemble.py).
    recipe: str = "finetune"
    heads: str = "mlp"  # the ensemble's heads: "mlp" (one two-layer network) or "linear" (one per category)
    heads_c: float = 0.01  # the ensemble's linear heads' inverse L2 strength
    # The ensemble's two-layer heads: how many, fitted from successive seeds, logits averaged. Three: out of
    # fold by unseen source, every fold rose over one head, twice (training/ensemble.py, models/MODEL_CARD.md).
    head_seeds: int = 3
    spec: PreprocessSpec = INPUT_SPEC
    workers: int = max(1, (os.cpu_count() or 1))
    augment: dict = field(default_factory=lambda: asdict(AugmentConfig()))


def sample_weights(manifest: Manifest) -> np.ndarray:
    """Per-photo sampling weight: fixed shares per stratum, sub-linear in group size within it."""
    labels = manifest.labels()
    hard = manifest.hard_negatives()
    strata = np.where(
        labels.any(axis=1), labels.argmax(axis=1), np.where(hard, len(CATEGORY_IDS), len(CATEGORY_IDS) + 1)
    )
    shares = [FLEX_SHARE / len(CATEGORY_IDS)] * len(CATEGORY_IDS) + [HARD_NEGATIVE_SHARE, ORDINARY_SHARE]
    groups = manifest.groups()
    group_sizes = Counter(groups.tolist())
    raw = np.array([group_sizes[g] ** (GROUP_WEIGHT_POWER - 1) for g in groups])  # n**p spread over n photos
    weights = np.zeros(len(manifest))
    for stratum, share in enumerate(shares):
        members = strata == stratum
        if members.any():
            weights[members] = share * raw[members] / raw[members].sum()
    return weights / weights.sum()


def _pooled(net: FlexguardNet, activations: np.ndarray) -> torch.Tensor:
    net.tail.eval()
    with torch.no_grad():
        return torch.cat([
            net.tail(torch.from_numpy(np.asarray(activations[i:i + TAIL_BATCH], dtype=np.float32))).mean(dim=(2, 3))
            for i in range(0, len(activations), TAIL_BATCH)
        ])


def _scores(net: FlexguardNet, activations: np.ndarray) -> np.ndarray:
    """Scores of the whole network (both branches when anchored) from cached front activations."""
    net.tail.eval()
    net.head.eval()
    with torch.no_grad():
        return torch.cat([
            torch.sigmoid(net.cam_from_front(torch.from_numpy(np.asarray(activations[i:i + TAIL_BATCH], dtype=np.float32))).mean(dim=(2, 3)))
            for i in range(0, len(activations), TAIL_BATCH)
        ]).numpy()


def _validation_figures(labels: np.ndarray, scores: np.ndarray) -> dict:
    """The two headline figures, for the training log; ``flexguard evaluate`` computes the full set."""
    from sklearn.metrics import roc_auc_score

    is_flex, risk = labels.any(axis=1), overall_risk(scores)
    recall = recall_at_fpr(is_flex, risk, REPORT_FPR)
    both_classes = 0 < is_flex.sum() < len(is_flex)
    return {
        "roc_auc": round(float(roc_auc_score(is_flex, risk)), 4) if both_classes else None,
        "recall_at_fpr_5pct": None if recall is None else round(recall, 4),
    }


def _fit_probe(linear: nn.Linear, pooled: torch.Tensor, labels: torch.Tensor, weights: np.ndarray, config: TrainConfig):
    """Fit ``linear`` on frozen pooled features with the stratified sample weights; returns a scorer."""
    optimizer = torch.optim.AdamW(linear.parameters(), lr=config.lr_head * 10, weight_decay=config.weight_decay)
    weight_tensor = torch.from_numpy(weights * len(weights)).float()[:, None]
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    for _ in tqdm(range(config.probe_steps), desc="linear probe", unit="step", leave=False):
        loss = (loss_fn(linear(pooled), labels) * weight_tensor).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def score(features: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(linear(features)).numpy()

    return score


def _save_checkpoint(path: Path, net: FlexguardNet, config: TrainConfig, manifest: Manifest,
                     val_labels: np.ndarray, val_scores: np.ndarray, validation: dict) -> None:
    """Weights plus what export needs to describe them: config, data hash, provisional thresholds and figures."""
    thresholds = choose_thresholds(val_labels.any(axis=1), overall_risk(val_scores))
    torch.save(
        {"state_dict": net.state_dict(), "config": {**asdict(config), "anchored": net.anchor is not None},
         "preprocess": config.spec.to_dict(), "manifest_sha256": manifest.sha256,
         "thresholds": asdict(thresholds), "validation": validation},
        path,
    )


def _freeze_batchnorm(module: nn.Module) -> None:
    # Batch statistics from 64 photos are noisier than ImageNet's: keep the running ones.
    for child in module.modules():
        if isinstance(child, nn.BatchNorm2d):
            child.eval()


def start_run(config: TrainConfig) -> tuple[Path, Manifest, np.ndarray, np.ndarray]:
    """What every recipe starts with: the run folder with its ``config.json``, the manifest, and the
    (train, validation) indices, validation empty when ``val_fold`` is None (train on every photo)."""
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    manifest = load_manifests([Path(m) for m in config.manifests])
    if config.val_fold is None:
        print(f"photos: {len(manifest)}, all trained on (no validation: cross-validation gives the figures)")
        return out_dir, manifest, np.arange(len(manifest)), np.arange(0)
    train_idx, val_idx = group_split(
        manifest, val_fold=config.val_fold, n_folds=config.n_folds, seed=config.seed,
        train_only=config.train_only_groups, by=config.split_by, keep_subgroups=config.keep_subgroups,
    )
    print(f"photos: {len(train_idx)} train, {len(val_idx)} validation (whole {config.split_by}s held out; "
          f"fold {config.val_fold} of {config.n_folds})")
    return out_dir, manifest, train_idx, val_idx


def train(config: TrainConfig) -> Path:
    """Run all stages; returns the run folder with ``checkpoint.pt``, ``probe.pt`` and ``config.json``."""
    if config.recipe == "ensemble":
        from . import ensemble

        return ensemble.train(config)
    started = time.time()
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    out_dir, manifest, train_idx, val_idx = start_run(config)
    train_set, val_set = manifest.subset(train_idx), manifest.subset(val_idx)
    validating = len(val_set) > 0

    net = FlexguardNet(len(CATEGORY_IDS), config.tune_from_block, config.dropout)
    spec = config.spec
    backgrounds = [r.path for r in train_set.records if not r.is_flex]
    common = dict(spec=spec, seed=config.seed, cfg=AugmentConfig(**config.augment), cache_dir=Path(config.cache_dir),
                  key_parts={"tune_from_block": config.tune_from_block}, workers=config.workers)
    train_acts = front_activations(net.front, [r.path for r in train_set.records], n_views=config.views,
                                   backgrounds=backgrounds, desc="caching training views", **common)
    # Without validation, the checkpoint's provisional thresholds come from the training photos' clean view.
    check_acts = (front_activations(net.front, [r.path for r in val_set.records], n_views=1, backgrounds=[],
                                    desc="caching validation photos", **common)[0] if validating else train_acts[0])
    check_set = val_set if validating else train_set
    train_labels = torch.from_numpy(train_set.labels())
    check_labels = check_set.labels()
    weights = sample_weights(train_set)
    history: list[dict] = []

    # Stage 2: linear probe on clean, frozen features.
    train_pooled = _pooled(net, train_acts[0])
    check_pooled = _pooled(net, check_acts) if validating else train_pooled
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    probe_scores = _fit_probe(net.head.linear, train_pooled, train_labels, weights, config)
    if validating:
        probe_figures = _validation_figures(check_labels, probe_scores(check_pooled))
        print(f"linear probe, validation by {config.split_by}: {probe_figures}")
        history.append({"stage": "linear_probe", "split": config.split_by, **probe_figures})
        _report_leak(net, manifest, train_idx, val_idx, train_pooled, check_pooled, config, history)
    else:
        history.append({"stage": "linear_probe", "split": "none"})
    _save_checkpoint(out_dir / "probe.pt", net, config, manifest, check_labels, probe_scores(check_pooled),
                     history[0] if validating else {"source": NO_VALIDATION})
    if config.anchored:
        net.set_anchor()

    # Stage 3: fine-tune tail + head on all cached views.
    params = [
        {"params": net.tail.parameters(), "lr": config.lr_tail},
        {"params": net.head.parameters(), "lr": config.lr_head},
    ]
    optimizer = torch.optim.AdamW(params, weight_decay=config.weight_decay)
    total_steps = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[config.lr_tail, config.lr_head], total_steps=total_steps, pct_start=0.1
    )
    rng = np.random.default_rng(config.seed)
    for epoch in range(config.epochs):
        net.tail.train()
        net.head.train()
        _freeze_batchnorm(net.tail)
        losses = []
        for _ in tqdm(range(config.steps_per_epoch), desc=f"fine-tune epoch {epoch + 1}/{config.epochs}", unit="step", leave=False):
            photos = np.sort(rng.choice(len(train_set), size=config.batch_size, p=weights))
            views = rng.integers(0, config.views, size=config.batch_size)
            batch = torch.from_numpy(np.stack([np.asarray(train_acts[v, i], dtype=np.float32) for v, i in zip(views, photos)]))
            logits = net.head.logits(net.tail(batch))
            loss = loss_fn(logits, train_labels[photos]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        record = {"stage": "fine_tune", "epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4)}
        if validating:
            record.update(_validation_figures(check_labels, _scores(net, check_acts)))
        history.append(record)
        print(f"epoch {epoch + 1}: " + ", ".join(f"{key} {value}" for key, value in record.items() if key not in ("stage", "epoch")))

    final = history[-1] if validating else {"source": NO_VALIDATION}
    _save_checkpoint(out_dir / "checkpoint.pt", net, config, manifest, check_labels, _scores(net, check_acts), final)
    with open(out_dir / "history.jsonl", "w") as f:
        f.writelines(json.dumps(h) + "\n" for h in history)
    print(f"done in {(time.time() - started) / 60:.1f} min; checkpoint: {out_dir / 'checkpoint.pt'}")
    return out_dir


def _report_leak(net: FlexguardNet, manifest: Manifest, train_idx: np.ndarray, val_idx: np.ndarray,
                 train_pooled: torch.Tensor, val_pooled: torch.Tensor, config: TrainConfig, history: list[dict]) -> None:
    """The same probe on a random split of the same photos: the gap to the held-out figure is what
    photo-style leakage is worth on this data (the random figure is an upper bound, not a result)."""
    all_pooled = torch.empty(len(manifest), train_pooled.shape[1])
    all_pooled[train_idx], all_pooled[val_idx] = train_pooled, val_pooled
    random_train, random_val = random_split(manifest, seed=config.seed)
    leak_head = nn.Linear(train_pooled.shape[1], len(CATEGORY_IDS))
    leak_scores = _fit_probe(leak_head, all_pooled[random_train], torch.from_numpy(manifest.labels()[random_train]),
                             sample_weights(manifest.subset(random_train)), config)
    leak_figures = _validation_figures(manifest.labels()[random_val], leak_scores(all_pooled[random_val]))
    print(f"linear probe, random split (leaks; upper bound): {leak_figures}")
    history.append({"stage": "linear_probe", "split": "random", **leak_figures})
