"""End to end over HTTP: real uvicorn servers on loopback, an async httpx load generator, and the naive peer.

In one run, on one machine:

1. the model-only ceiling (``bench_model.measure``: onnxruntime on preprocessed tensors, batch 1/8/32),
   which the end-to-end throughput is compared against;
2. ``flexguard serve`` (default settings, shipped fp32 model; then the INT8 model) in its own
   process, loaded at concurrency 1, 8 and 32 with 12 MP phone JPEGs and 1080 px JPEGs;
3. the naive peer (``benchmarks/naive_peer.py`` under uvicorn) under the same load.

Only one server runs at a time. The load generator is one asyncio process sending pre-encoded
multipart bodies (one photo per request, the field ``files`` both servers read) in a closed loop: each
of the ``concurrency`` workers sends its next request when its last one is answered. On a 2-core
machine the generator shares the CPU with the server; its CPU time is measured and reported.

    .venv/bin/python benchmarks/bench_http.py             # writes runs/bench/http.json
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
from pathlib import Path

import httpx

import bench_model
import common

LEVELS = (1, 8, 32)
SETS = ("jpeg-12mp", "jpeg-1080")
# Requests per concurrency level after the warm-up, sized so the whole benchmark takes a few minutes on
# 2 cores: the naive peer manages ~5 12 MP photos/s there, flexguard several times that.
REQUESTS = {
    "flexguard": {"jpeg-12mp": {1: 64, 8: 200, 32: 200}, "jpeg-1080": {1: 100, 8: 300, 32: 300}},
    "spinning": {"jpeg-12mp": {8: 200}, "jpeg-1080": {32: 300}},
    "naive": {"jpeg-12mp": {1: 24, 8: 48, 32: 64}, "jpeg-1080": {1: 32, 8: 96, 32: 96}},
}
E2E_TARGET = 0.60  # end-to-end 12 MP throughput / model-only at the best batch size
NAIVE_TARGET = 8.0  # flexguard / naive peer, 12 MP at concurrency 8
NAIVE_LEVEL = 8
PREVIOUS_TARGET = 0.80  # a retrained model keeps 12 MP throughput within 20% of the one it replaces (#11)
_METRIC = re.compile(r"^flexguard_batch_size_(sum|count) ([0-9.e+]+)$", re.M)


def batch_totals(url: str) -> tuple[float, float]:
    """(photos, model calls) so far, from the service's Prometheus batch-size histogram."""
    found = dict(_METRIC.findall(httpx.get(url + "/metrics", timeout=10).text))
    return float(found.get("sum", 0)), float(found.get("count", 0))


def load_server(server: common.Server, kind: str, sets: dict[str, list], levels: tuple[int, ...], scale: float) -> dict:
    results = {}
    for set_name, bodies in sets.items():
        results[set_name] = {}
        for level in levels:
            if level not in REQUESTS[kind].get(set_name, {}):
                continue
            requests = max(level, round(REQUESTS[kind][set_name][level] * scale))
            before = batch_totals(server.url) if kind != "naive" else None
            load = common.run_load(server.url + "/v1/score", bodies, level, requests, server.pid,
                                   warmup=max(level, len(bodies)))
            entry = load.summary()
            if before is not None:
                # Includes the warm-up's batches: how full the model calls were at this concurrency.
                photos, calls = (a - b for a, b in zip(batch_totals(server.url), before))
                entry["mean_batch_size"] = round(photos / calls, 2) if calls else None
            entry["server_cpu_ms_per_request"] = round(entry["server_cpu_s"] / entry["ok"] * common.MS_PER_S, 1) if entry["ok"] else None
            entry["server_rss_mb"] = round(common.rss_mb(server.pid), 1)
            results[set_name][level] = entry
            print(f"  {server.name:<16} {set_name:<10} c={level:<3} {entry['throughput_per_s']:7.1f} req/s  "
                  f"p50 {entry['latency_ms']['p50']:7.1f} ms  p99 {entry['latency_ms']['p99']:7.1f} ms  "
                  f"errors {entry['errors']}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every request count (default 1)")
    parser.add_argument("--no-int8", action="store_true", help="skip the INT8 service")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive peer")
    parser.add_argument("--previous", nargs=2, metavar=("FP32", "INT8"), type=str,
                        help="the model files shipped before a retrain: served too, under the same load, for the "
                             "within-20%% comparison of #11 (e.g. extracted with git show REV:models/flexguard.onnx)")
    parser.add_argument("--no-spinning", action="store_true",
                        help="skip the service with onnxruntime spinning back on (serve_spinning.py)")
    args = parser.parse_args()
    levels = tuple(args.levels)
    common.warn_if_busy()
    machine = common.machine()

    print("model only (ceiling) ...", flush=True)
    model_only = bench_model.measure(common.cores(), rounds=2, seconds=1.5)
    gc.collect()  # the engines are gone before any server starts
    for variant, entry in model_only.items():
        print(f"  {variant}: {entry['images_per_s_by_batch']} images/s by batch size", flush=True)

    photo_sets = {name: common.request_bodies(name, common.photo_set(name)) for name in args.sets}
    servers = {}
    plan = [("flexguard", "fp32")] + ([] if args.no_int8 else [("flexguard-int8", "int8")])
    for name, variant in plan:
        with common.flexguard_server(name, variant) as server:
            servers[name] = {"kind": "flexguard", "variant": variant, "settings": "defaults (max batch 16, wait 5 ms, "
                             "threads and decode threads = cores)", "results": load_server(server, "flexguard", photo_sets, levels, args.scale)}
    for variant, path in zip(("fp32", "int8"), args.previous or ()):
        name = f"previous-{variant}"
        with common.flexguard_server(name, variant, {"FLEXGUARD_MODEL_PATH": str(Path(path).resolve())}) as server:
            servers[name] = {"kind": "flexguard", "variant": f"{variant}, the model shipped before ({path})", "settings":
                             "defaults", "results": load_server(server, "flexguard", photo_sets, levels, args.scale)}
    if not args.no_spinning:
        # The service as it was before inference/engine.py turned onnxruntime's spinning off: same load.
        port = common.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXGUARD_")}
        env.update({"FLEXGUARD_HOST": "127.0.0.1", "FLEXGUARD_PORT": str(port)})
        command = [sys.executable, str(common.ROOT / "benchmarks" / "serve_spinning.py")]
        with common.Server("flexguard-spinning", command, port, env, "/readyz") as server:
            servers["flexguard-spinning"] = {"kind": "spinning", "variant": "fp32, onnxruntime spinning on (before the fix)",
                                             "results": load_server(server, "spinning", photo_sets, levels, args.scale)}
    if not args.no_naive:
        with common.naive_server("naive-peer") as server:
            servers["naive-peer"] = {"kind": "naive", "variant": "fp32 eager PyTorch, batch 1",
                                     "results": load_server(server, "naive", photo_sets, levels, args.scale)}

    result = {"benchmark": "http", "machine": common.finish_machine(machine), "levels": list(levels),
              "model_only": model_only, "servers": servers, "targets": targets(model_only, servers, levels)}
    print_tables(result)
    common.write_json("http", result)


def targets(model_only: dict, servers: dict, levels: tuple[int, ...]) -> dict:
    out = {}
    big = "jpeg-12mp"
    for variant, name in (("fp32", "flexguard"), ("int8", "flexguard-int8")):
        previous = f"previous-{variant}"
        if previous in servers and name in servers and big in servers[name]["results"]:
            level = max(servers[name]["results"][big])
            now, before = (servers[s]["results"][big][level]["throughput_per_s"] for s in (name, previous))
            ratio = round(now / before, 3)
            out[f"vs_previous_model_{variant}"] = {
                "ratio": ratio, "target": PREVIOUS_TARGET, "pass": ratio >= PREVIOUS_TARGET,
                "what": f"{name} 12 MP JPEG over HTTP at concurrency {level}: {now} req/s, against the model shipped "
                        f"before ({variant}): {before} req/s, same run",
            }
    for name, variant in (("flexguard", "fp32"), ("flexguard-int8", "int8")):
        if name not in servers or big not in servers[name]["results"]:
            continue
        by_level = servers[name]["results"][big]
        best_level = max(by_level, key=lambda c: by_level[c]["throughput_per_s"])
        e2e = by_level[best_level]["throughput_per_s"]
        ceiling = model_only[variant]["best_images_per_s"]
        ratio = round(e2e / ceiling, 3)
        out[f"e2e_vs_model_only_{variant}"] = {
            "ratio": ratio, "target": E2E_TARGET, "pass": ratio >= E2E_TARGET,
            "what": f"{name} 12 MP JPEG over HTTP at its best concurrency ({best_level}): {e2e} req/s, "
                    f"against {variant} model-only at its best batch ({model_only[variant]['best_batch']}): {ceiling} images/s",
        }
    naive = servers.get("naive-peer", {}).get("results", {}).get(big, {})
    if NAIVE_LEVEL in naive:
        for name in ("flexguard", "flexguard-int8"):
            mine = servers.get(name, {}).get("results", {}).get(big, {})
            if NAIVE_LEVEL not in mine:
                continue
            ratio = round(mine[NAIVE_LEVEL]["throughput_per_s"] / naive[NAIVE_LEVEL]["throughput_per_s"], 2)
            out[f"vs_naive_{name}"] = {
                "ratio": ratio, "target": NAIVE_TARGET, "pass": ratio >= NAIVE_TARGET,
                "what": f"{name} / naive peer, 12 MP JPEG at concurrency {NAIVE_LEVEL}: "
                        f"{mine[NAIVE_LEVEL]['throughput_per_s']} / {naive[NAIVE_LEVEL]['throughput_per_s']} req/s",
            }
    return out


def print_tables(result: dict) -> None:
    rows = []
    for name, server in result["servers"].items():
        for set_name, by_level in server["results"].items():
            for level, e in by_level.items():
                lat = e["latency_ms"]
                rows.append([name, set_name, level, e["ok"], e["errors"], e["throughput_per_s"], lat["p50"], lat["p95"],
                             lat["p99"], e.get("mean_batch_size") or "-", e["server_cpu_ms_per_request"],
                             round(e["client_cpu_s"] / max(e["ok"], 1) * common.MS_PER_S, 1), e["wall_s"]])
    print(common.table(["server", "photos", "conc.", "ok", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms",
                        "mean batch", "server CPU ms/req", "client CPU ms/req", "wall s"], rows))
    for key, t in result["targets"].items():
        print(f"{key}: {t['ratio']} (target {t['target']}): {'PASS' if t['pass'] else 'MISS'} - {t['what']}")


if __name__ == "__main__":
    main()
