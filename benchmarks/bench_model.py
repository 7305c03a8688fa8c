"""Model only: onnxruntime images/s at batch 1, 8 and 32 on preprocessed tensors, fp32 against INT8.

The ceiling for everything else: no decoding, no HTTP, just ``Engine.run`` (the service's own
onnxruntime session and settings, one intra-op thread per core) on tensors made by the service's own
preprocessing from the 1080 px photo set. The two variants and the batch sizes are measured in
interleaved rounds and each figure is the median round, so a burst of background work hits both
variants alike rather than whichever ran at the time. Accuracy is read from each model file's stamped
validation metrics (``flexguard evaluate --stamp`` on the grouped split), so speed and accuracy are
reported side by side.

    .venv/bin/python benchmarks/bench_model.py            # writes runs/bench/model.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import common
from flexguard.models import SHIPPED_MODELS, shipped_model_path
from flexguard.inference.engine import Engine

BATCH_SIZES = (1, 8, 32)
VARIANTS = tuple(SHIPPED_MODELS)  # fp32, int8
DEFAULT_ROUNDS = 3
DEFAULT_SECONDS = 1.5  # per variant, batch size and round
SAMPLE_SET = "jpeg-1080"


def images_per_s(engine: Engine, batch: np.ndarray, seconds: float) -> float:
    engine.run(batch)  # a new shape: onnxruntime sets it up on the first call
    done, start = 0, time.perf_counter()
    while True:
        engine.run(batch)
        done += len(batch)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and done >= 2 * len(batch):
            return done / elapsed


def measure(threads: int, rounds: int, seconds: float) -> dict:
    engines = {v: Engine(shipped_model_path(v), threads=threads) for v in VARIANTS}
    photos = common.photo_set(SAMPLE_SET)
    tensors = [engines["fp32"].prepare(p).tensor for p in photos]
    batches = {b: np.stack([tensors[i % len(tensors)] for i in range(b)]) for b in BATCH_SIZES}
    samples: dict[str, dict[int, list[float]]] = {v: {b: [] for b in BATCH_SIZES} for v in VARIANTS}
    for _ in range(rounds):
        for b in BATCH_SIZES:
            for v in VARIANTS:
                samples[v][b].append(images_per_s(engines[v], batches[b], seconds))

    # The two variants' scores on the same photos: how far quantisation moves them.
    reference = batches[max(BATCH_SIZES)]
    fp32_scores = engines["fp32"].run(reference)[0]
    variants = {}
    for v in VARIANTS:
        engine = engines[v]
        rates = {b: round(statistics.median(samples[v][b]), 2) for b in BATCH_SIZES}
        best = max(rates, key=rates.get)
        metrics = engine.info.validation_metrics
        variants[v] = {
            "model": str(engine.path.relative_to(common.ROOT)) if engine.path.is_relative_to(common.ROOT) else str(engine.path),
            "size_mb": round(engine.path.stat().st_size / common.BYTES_PER_MB, 1),
            "images_per_s_by_batch": rates,
            "rounds_by_batch": {b: [round(r, 2) for r in samples[v][b]] for b in BATCH_SIZES},
            "ms_per_batch": {b: round(b / rates[b] * common.MS_PER_S, 2) for b in BATCH_SIZES},
            "best_batch": best,
            "best_images_per_s": rates[best],
            "validation": {k: metrics.get(k) for k in ("roc_auc", "recall_at_fpr_5pct", "recall_at_fpr_1pct",
                                                       "mean_average_precision", "n")},
            "max_abs_score_diff_vs_fp32": round(float(np.abs(engine.run(reference)[0] - fp32_scores).max()), 4),
            "mean_abs_score_diff_vs_fp32": round(float(np.abs(engine.run(reference)[0] - fp32_scores).mean()), 4),
        }
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=common.cores(), help="onnxruntime intra-op threads (default: cores)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per variant, batch size and round")
    args = parser.parse_args()
    common.warn_if_busy()
    machine = common.machine()
    variants = measure(args.threads, args.rounds, args.seconds)
    fp32, int8 = variants["fp32"], variants["int8"]
    speedup = {b: round(int8["images_per_s_by_batch"][b] / fp32["images_per_s_by_batch"][b], 2) for b in BATCH_SIZES}
    best_ratio = round(int8["best_images_per_s"] / fp32["best_images_per_s"], 2)
    result = {
        "benchmark": "model-only",
        "machine": common.finish_machine(machine),
        "threads": args.threads,
        "input": f"(N, 3, 260, 260) float32 from {SAMPLE_SET}",
        "variants": variants,
        "int8_speedup_by_batch": speedup,
        "targets": {
            "int8_vs_fp32": {"ratio": best_ratio, "target": 1.8, "pass": best_ratio >= 1.8,
                              "what": "INT8 model-only images/s at its best batch / fp32 at its best batch"},
        },
    }
    rows = []
    for v, entry in variants.items():
        val = entry["validation"]
        rows.append([v, f"{entry['size_mb']} MB", *(entry["images_per_s_by_batch"][b] for b in BATCH_SIZES),
                     entry["best_batch"], f"{val['roc_auc']:.4f}", f"{val['recall_at_fpr_5pct']:.4f}",
                     f"{entry['mean_abs_score_diff_vs_fp32']:.4f} / {entry['max_abs_score_diff_vs_fp32']:.4f}"])
    print(common.table(["model", "file", *(f"b{b} img/s" for b in BATCH_SIZES), "best batch", "val ROC-AUC",
                        "recall@5% FPR", "|Δscore| vs fp32 mean / max"], rows))
    print(f"INT8 / fp32 at best batch: {best_ratio}x (by batch: {speedup}); target >= 1.8x: "
          f"{'PASS' if best_ratio >= 1.8 else 'MISS'}")
    common.write_json("model", result)


if __name__ == "__main__":
    main()
