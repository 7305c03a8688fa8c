"""Service memory under sustained load: RSS after 10,000 requests against RSS after warm-up.

Starts ``flexguard serve`` (default settings, shipped fp32 model) on loopback, warms it up (batches of
every size up to the maximum, every connection opened, every photo seen), reads its resident set
size, then sends 10,000 single-photo requests of 1080 px JPEGs, one in 50 of them a truncated JPEG
(the per-photo error path has to free what it took too), and samples RSS every 500 requests. The
target: RSS after the soak within 50 MB of RSS after warm-up.

    .venv/bin/python benchmarks/soak_rss.py               # writes runs/bench/soak.json
"""

from __future__ import annotations

import argparse

import common

DEFAULT_REQUESTS = 10_000
CONCURRENCY = 16  # the service's default max batch: the model runs full batches, so the soak finishes sooner
WARMUP_REQUESTS = 600
SAMPLE_EVERY = 500
CORRUPT_EVERY = 50
TARGET_MB = 50.0
SET_NAME = "jpeg-1080"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args()
    common.warn_if_busy()
    machine = common.machine()
    spec = common.PHOTO_SETS[SET_NAME]
    photos = common.photo_set(SET_NAME)
    bodies = common.request_bodies(SET_NAME, photos)
    # Every CORRUPT_EVERY-th body: a JPEG cut in half (decode_failed for that photo, HTTP 200 for the request).
    corrupt = common.multipart(photos[0][: len(photos[0]) // 2], "truncated.jpg", spec.content_type)
    mixed = [corrupt if i % CORRUPT_EVERY == CORRUPT_EVERY - 1 else bodies[i % len(bodies)] for i in range(CORRUPT_EVERY * 4)]

    with common.flexguard_server("soak", "fp32") as server:
        started_mb = common.rss_mb(server.pid)
        url = server.url + "/v1/score"
        # Warm-up: the first at the maximum concurrency, so the model sees batches of every size up to the
        # maximum (onnxruntime keeps buffers per shape) before RSS is read.
        common.run_load(url, mixed, 32, WARMUP_REQUESTS // 2, warmup=0)
        common.run_load(url, mixed, args.concurrency, WARMUP_REQUESTS // 2, warmup=0)
        warm_mb = common.rss_mb(server.pid)
        samples = [(0, round(warm_mb, 1))]

        def progress(done: int) -> None:
            if done % SAMPLE_EVERY == 0:
                samples.append((done, round(common.rss_mb(server.pid), 1)))
                if done % (SAMPLE_EVERY * 4) == 0:
                    print(f"  {done:>6} requests: RSS {samples[-1][1]:.1f} MB", flush=True)

        print(f"soak: {args.requests} requests at concurrency {args.concurrency}, RSS after warm-up {warm_mb:.1f} MB",
              flush=True)
        load = common.run_load(url, mixed, args.concurrency, args.requests, server.pid, warmup=0, on_progress=progress)
        final_mb = common.rss_mb(server.pid)

    growth = round(final_mb - warm_mb, 1)
    summary = load.summary()
    result = {
        "benchmark": "soak-rss",
        "machine": common.finish_machine(machine),
        "photos": f"{SET_NAME}, 1 in {CORRUPT_EVERY} truncated",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rss_mb": {"at_start": round(started_mb, 1), "after_warmup": round(warm_mb, 1), "after_soak": round(final_mb, 1),
                   "max_sampled": max(mb for _, mb in samples), "samples": samples},
        "load": {k: summary[k] for k in ("ok", "errors", "wall_s", "throughput_per_s", "latency_ms", "error_samples")},
        "targets": {"rss_growth": {"growth_mb": growth, "target_mb": TARGET_MB, "pass": growth <= TARGET_MB,
                                   "what": f"RSS after {args.requests} requests minus RSS after warm-up"}},
    }
    print(common.table(["requests", "errors", "req/s", "RSS start MB", "RSS warm MB", "RSS max MB", "RSS end MB", "growth MB"],
                       [[args.requests, summary["errors"], summary["throughput_per_s"], round(started_mb, 1),
                         round(warm_mb, 1), result["rss_mb"]["max_sampled"], round(final_mb, 1), growth]]))
    print(f"RSS growth {growth} MB (target <= {TARGET_MB} MB): {'PASS' if growth <= TARGET_MB else 'MISS'}")
    common.write_json("soak", result)


if __name__ == "__main__":
    main()
