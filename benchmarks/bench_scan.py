"""How fast ``flexguard scan`` goes on this machine, and how close that is to the model's own speed.

Generates two reproducible sets of photos (seeded): 12 MP phone-size JPEGs (4032x3024, 2-4 MB, with
photo-like texture so the JPEG decoder has real work) and small 1440x1080 JPEGs (social-media size).
Times ``python -m flexguard scan`` (local engine, fresh process) on each, with the CPU time it took, and
in the same run measures what bounds it: decoding + preprocessing alone (``engine.prepare`` in the scan's
worker threads), model-only onnxruntime throughput on preprocessed tensors at the best batch size (one
call at a time on all cores: the target's yardstick), and the model as the scan runs it (one call per
worker side by side, one onnxruntime thread each, at the scan's batch size). Prints a table and writes
JSON. Not a test: numbers depend on the machine and on what else it is doing.

    .venv/bin/python benchmarks/bench_scan.py --json runs/bench_scan.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
import PIL
from PIL import Image, ImageDraw

from flexguard.models import shipped_model_path
from flexguard.inference.engine import Engine
from flexguard.scan.runner import ScanOptions
from flexguard.scan.local import MODEL_THREADS_PER_CALL

SEED = 20240601
LARGE_SIZE = (4032, 3024)  # a 12 MP phone photo
SMALL_SIZE = (1440, 1080)  # what social apps keep of it
DEFAULT_LARGE = 200
DEFAULT_SMALL = 500
JPEG_QUALITY = 90
# Photo-like texture: luminance detail at several scales with falling amplitude (natural images are
# roughly 1/f), a soft colour cast, a lighting gradient, some hard-edged objects, then sensor grain,
# which is what makes real phone JPEGs 2-4 MB at this size.
LUMINANCE_OCTAVES = ((1024, 45.0), (256, 30.0), (64, 18.0), (16, 10.0), (4, 5.0))  # (cell px, amplitude)
COLOUR_CELL_PX, COLOUR_AMPLITUDE = 768, 30.0
GRADIENT_AMPLITUDE = 40.0
SHAPES = 10
GRAIN_SIGMA = 4.0
MID_GREY = 128.0
MODEL_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
MODEL_SECONDS_PER_SIZE = 3.0
# One configuration instead of six batch sizes, so it gets a longer window (two runs of it agreed within 3%).
MODEL_AS_SCANNED_SECONDS = 6.0
MODEL_SAMPLE_PHOTOS = 32
DECODE_SAMPLE_PHOTOS = 48
SUMMARY_RATE = re.compile(r"^scanned (\d+) files .* in [\d:]+, ([\d.]+) files/s$", re.M)
BYTES_PER_MB = 1e6
MS_PER_S = 1000.0


def _field(rng: np.random.Generator, size: tuple[int, int], cell: int, amplitude: float, channels: int) -> np.ndarray:
    """Smooth random detail at one scale: noise on a coarse grid, upsampled bicubically."""
    width, height = size
    coarse = np.clip(MID_GREY + rng.normal(0.0, amplitude, (height // cell + 2, width // cell + 2, channels)), 0, 255)
    image = Image.fromarray(coarse.astype(np.uint8).squeeze(axis=2) if channels == 1 else coarse.astype(np.uint8))
    field = np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) - MID_GREY
    return field[..., None] if channels == 1 else field


def make_photo(index: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(SEED + index)
    width, height = size
    pixels = rng.uniform(60, 190, 3).astype(np.float32) + _field(rng, size, COLOUR_CELL_PX, COLOUR_AMPLITUDE, 3)
    for cell, amplitude in LUMINANCE_OCTAVES:
        pixels += _field(rng, size, cell, amplitude, 1)
    pixels += np.linspace(-GRADIENT_AMPLITUDE, GRADIENT_AMPLITUDE, height, dtype=np.float32)[:, None, None]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(SHAPES):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(width // 20, width // 4)), y0 + int(rng.integers(height // 20, height // 4))
        fill = tuple(int(v) for v in rng.integers(20, 236, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    grain = rng.normal(0.0, GRAIN_SIGMA, (height, width, 1)).astype(np.float32)
    pixels = np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def generate(folder: Path, count: int, size: tuple[int, int], first_index: int, workers: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"IMG_{first_index + i:05d}.jpg" for i in range(count)]

    def write(item: tuple[int, Path]) -> None:
        index, path = item
        if not path.exists():  # --photos reuses what an earlier run generated
            path.write_bytes(make_photo(first_index + index, size))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(write, enumerate(paths)))
    return paths


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_scan(folder: Path, out: Path, workers: int) -> dict:
    # The command as a user runs it: default batch size, a fresh process (model load and walk included).
    command = [sys.executable, "-m", "flexguard", "scan", str(folder), "--out", str(out), "--force", "--workers", str(workers)]
    cpu_before, start = _children_cpu_s(), time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    cpu = _children_cpu_s() - cpu_before
    match = SUMMARY_RATE.search(finished.stdout)
    if match is None:
        raise RuntimeError(f"no summary line in the scan's output:\n{finished.stdout}")
    files = int(match.group(1))
    return {"command": " ".join(command[1:]), "files": files, "wall_s": round(wall, 2),
            "files_per_s_end_to_end": round(files / wall, 2), "files_per_s_scanning": float(match.group(2)),
            # Process start and model load included: 0.3-0.4 core-s, ~0.7 core-ms per file of 500.
            "cpu_ms_per_file": round(cpu / files * MS_PER_S, 2)}


def time_decode(engine: Engine, paths: list[Path], workers: int) -> float:
    """Decode + preprocess alone (read, hash-free), in ``workers`` threads as the scan does: images/s."""
    sample = paths[:DECODE_SAMPLE_PHOTOS]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda p: engine.prepare(p.read_bytes()), sample[:workers]))  # warm-up
        start = time.perf_counter()
        list(pool.map(lambda p: engine.prepare(p.read_bytes()), sample))
    return len(sample) / (time.perf_counter() - start)


def time_model(engine: Engine, paths: list[Path]) -> dict[int, float]:
    """Model-only images/s per batch size, on tensors already preprocessed."""
    tensors = [engine.prepare(p.read_bytes()).tensor for p in paths[:MODEL_SAMPLE_PHOTOS]]
    rates = {}
    for batch_size in MODEL_BATCH_SIZES:
        batch = np.stack([tensors[i % len(tensors)] for i in range(batch_size)])
        engine.run(batch)  # warm-up: first call allocates
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < MODEL_SECONDS_PER_SIZE:
            engine.run(batch)
            done += batch_size
        rates[batch_size] = round(done / (time.perf_counter() - start), 2)
    return rates


def time_model_as_scanned(engine: Engine, paths: list[Path], workers: int, batch_size: int) -> float:
    """Images/s of ``workers`` threads each calling ``engine`` (one onnxruntime thread) on its own batches."""
    tensors = [engine.prepare(p.read_bytes()).tensor for p in paths[:MODEL_SAMPLE_PHOTOS]]
    batch = np.stack([tensors[i % len(tensors)] for i in range(batch_size)])
    engine.run(batch)  # warm-up: first call allocates
    deadline = time.perf_counter() + MODEL_AS_SCANNED_SECONDS

    def calls() -> int:
        done = 0
        while time.perf_counter() < deadline:
            engine.run(batch)
            done += batch_size
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        done = sum(pool.map(lambda _: calls(), range(workers)))
    return done / (time.perf_counter() - start)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "load_average_1m_at_start": os.getloadavg()[0],
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "pillow": PIL.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", type=int, default=DEFAULT_LARGE, help=f"12 MP photos (default {DEFAULT_LARGE})")
    parser.add_argument("--small", type=int, default=DEFAULT_SMALL, help=f"1440x1080 photos (default {DEFAULT_SMALL})")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="scan workers (default: CPU count)")
    parser.add_argument("--photos", type=Path, help="keep the generated photos here and reuse them (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    if load > len(os.sched_getaffinity(0)) / 2:
        print(f"warning: 1-minute load average is {load:.2f}: other work shares the cores and lowers every number",
              file=sys.stderr)
    folder = args.photos or Path(tempfile.mkdtemp(prefix="flexguard-bench-"))
    results: dict = {"machine": machine(), "sets": {}}
    try:
        sets = {
            f"12 MP JPEG {LARGE_SIZE[0]}x{LARGE_SIZE[1]}": generate(folder / "large", args.large, LARGE_SIZE, 0, args.workers),
            f"small JPEG {SMALL_SIZE[0]}x{SMALL_SIZE[1]}": generate(folder / "small", args.small, SMALL_SIZE, args.large, args.workers),
        }
        engine = Engine(shipped_model_path(), threads=args.workers)
        for name, paths in sets.items():
            sizes = [p.stat().st_size for p in paths]
            entry = {"mean_mb": round(float(np.mean(sizes)) / BYTES_PER_MB, 2), "min_mb": round(min(sizes) / BYTES_PER_MB, 2),
                     "max_mb": round(max(sizes) / BYTES_PER_MB, 2)}
            entry["scan"] = time_scan(paths[0].parent, folder / f"{paths[0].parent.name}.jsonl", args.workers)
            entry["decode_only_images_per_s"] = round(time_decode(engine, paths, args.workers), 2)
            results["sets"][name] = entry
        rates = time_model(engine, next(iter(sets.values())))
        best = max(rates, key=rates.get)
        results["model_only"] = {"images_per_s_by_batch": rates, "best_batch": best, "best_images_per_s": rates[best],
                                 "input_px": engine.info.preprocess.size, "threads": args.workers}
        scan_engine = Engine(shipped_model_path(), threads=MODEL_THREADS_PER_CALL)
        batch_size = ScanOptions.LOCAL_BATCH_SIZE
        as_scanned = time_model_as_scanned(scan_engine, next(iter(sets.values())), args.workers, batch_size)
        results["model_as_scanned"] = {"images_per_s": round(as_scanned, 2), "batch": batch_size, "workers": args.workers,
                                       "onnxruntime_threads_per_call": MODEL_THREADS_PER_CALL}
        for entry in results["sets"].values():
            # Decoding and the model on the same cores, perfectly overlapped: their times per photo add up.
            entry["bound_files_per_s"] = round(1 / (1 / entry["decode_only_images_per_s"] + 1 / as_scanned), 2)
        results["machine"]["load_average_1m_at_end"] = os.getloadavg()[0]
    finally:
        if args.photos is None:
            shutil.rmtree(folder, ignore_errors=True)

    print(f"machine: {results['machine']['nproc']} x {results['machine']['cpu']}, "
          f"load {results['machine']['load_average_1m_at_start']:.1f} -> {results['machine']['load_average_1m_at_end']:.1f}")
    model = results["model_only"]
    print(f"{'set':<28}{'files':>7}{'MB/file':>9}{'scan files/s':>14}{'end-to-end':>12}{'CPU ms/file':>13}"
          f"{'decode-only':>13}{'bound':>8}{'scan/bound':>12}{'scan/model-only':>17}")
    for name, entry in results["sets"].items():
        scan = entry["scan"]
        rate, bound = scan["files_per_s_scanning"], entry["bound_files_per_s"]
        print(f"{name:<28}{scan['files']:>7}{entry['mean_mb']:>9.2f}{rate:>14.1f}{scan['files_per_s_end_to_end']:>12.1f}"
              f"{scan['cpu_ms_per_file']:>13.1f}{entry['decode_only_images_per_s']:>13.1f}{bound:>8.1f}"
              f"{rate / bound:>12.0%}{rate / model['best_images_per_s']:>17.0%}")
    print(f"model only (onnxruntime, {model['input_px']} px, {model['threads']} threads): "
          f"{model['best_images_per_s']:.1f} images/s at batch {model['best_batch']}  "
          + " ".join(f"b{size}={rate:.0f}" for size, rate in model["images_per_s_by_batch"].items()))
    scanned = results["model_as_scanned"]
    print(f"model as the scan runs it ({scanned['workers']} calls side by side, {scanned['onnxruntime_threads_per_call']} "
          f"onnxruntime thread each, batch {scanned['batch']}): {scanned['images_per_s']:.1f} images/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
