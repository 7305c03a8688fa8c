"""Decode + preprocess: images/s per format and size, full decode against the service's draft-decoding path.

Three ways to turn a photo's bytes into the model's 260 px input, on the same photos in the same run:

* ``service``: ``Engine.prepare``, exactly what the REST service and the scanner run (format, size and
  pixel checks; for JPEG a reduced-scale DCT decode via Pillow's ``draft``; EXIF orientation; the
  letterbox resize with ``reducing_gap``; normalisation).
* ``full decode``: the same preprocessing without ``draft``: every pixel is decoded. For formats with
  no reduced-scale decode (PNG, WebP, HEIC) this is the same work as ``service``.
* ``naive``: what the naive peer does (``Image.open().convert("RGB")`` and torchvision's
  Resize(260) + CenterCrop(260) + ToTensor + Normalize).

Each is timed on one thread (cost per photo) and on one thread per core (what the service's decode pool
gets on this machine).

    .venv/bin/python benchmarks/bench_decode.py           # writes runs/bench/decode.json
"""

from __future__ import annotations

import argparse
import io
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from PIL import ImageOps

import common
from flexguard.models import shipped_model_path
from flexguard.models.preprocessing import open_image, preprocess, to_rgb
from flexguard.inference.engine import Engine

DEFAULT_SECONDS = 1.5  # at least this long (and at least one pass over the set) per set, path and thread count
SET_ORDER = ("jpeg-12mp", "heic-12mp", "jpeg-1080", "png-1080", "webp-1080", "heic-1080")


def paths(engine: Engine) -> dict[str, Callable[[bytes], object]]:
    spec = engine.info.preprocess

    def full_decode(data: bytes) -> object:
        with open_image(data) as image:
            return preprocess(to_rgb(ImageOps.exif_transpose(image)), spec)[0]

    import torch  # the naive path only; imported here so the other two never need it
    from PIL import Image

    from naive_peer import make_transform  # the peer's own transforms (importing it loads no model)

    naive_transform = make_transform()

    def naive(data: bytes) -> object:
        return naive_transform(Image.open(io.BytesIO(data)).convert("RGB"))

    torch.set_num_threads(1)  # ToTensor/Normalize on one thread: the pool below provides the parallelism
    return {"service": engine.prepare, "full decode": full_decode, "naive": naive}


def images_per_s(work: Callable[[bytes], object], photos: list[bytes], threads: int, seconds: float) -> float:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, photos[:threads]))  # warm-up
        done, start = 0, time.perf_counter()
        while True:
            list(pool.map(work, photos))
            done += len(photos)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--sets", nargs="+", default=list(SET_ORDER), choices=SET_ORDER)
    args = parser.parse_args()
    common.warn_if_busy()
    machine = common.machine()
    engine = Engine(shipped_model_path(), threads=1)
    ways = paths(engine)
    thread_counts = sorted({1, common.cores()})
    sets = {}
    rows = []
    for name in args.sets:
        spec = common.PHOTO_SETS[name]
        photos = common.photo_set(name)
        entry = {
            "format": spec.format, "size": f"{spec.size[0]}x{spec.size[1]}", "photos": len(photos),
            "description": spec.description,
            "mean_mb": round(sum(map(len, photos)) / len(photos) / common.BYTES_PER_MB, 2),
            "draft_applies": spec.format == "JPEG",
            "images_per_s": {way: {threads: round(images_per_s(work, photos, threads, args.seconds), 2)
                                   for threads in thread_counts} for way, work in ways.items()},
        }
        rates = entry["images_per_s"]
        entry["service_vs_full_decode"] = round(rates["service"][thread_counts[-1]] / rates["full decode"][thread_counts[-1]], 2)
        sets[name] = entry
        rows.append([name, entry["mean_mb"], *(rates[way][t] for way in ways for t in thread_counts),
                     f"{entry['service_vs_full_decode']:.2f}x" + ("" if entry["draft_applies"] else " (no draft)")])
    result = {"benchmark": "decode-preprocess", "machine": common.finish_machine(machine),
              "thread_counts": thread_counts, "sets": sets}
    headers = ["set", "MB/photo", *(f"{way} {t}T img/s" for way in ways for t in thread_counts),
               f"service / full ({thread_counts[-1]}T)"]
    print(common.table(headers, rows))
    common.write_json("decode", result)


if __name__ == "__main__":
    main()
