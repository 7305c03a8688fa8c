"""The benchmark results as markdown: machine, commands, one table per benchmark, and every target.

Reads the JSON the benchmarks wrote under runs/bench/, writes runs/bench/summary.md and prints it.
With ``--docs docs/performance.md`` it also replaces the generated block of that page (between the
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` markers) and leaves everything else on the page,
the scan section and the hand-written analysis included, as it is.

    .venv/bin/python benchmarks/report.py [--docs docs/performance.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import common

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
COMMANDS = {
    "model": ".venv/bin/python benchmarks/bench_model.py",
    "decode": ".venv/bin/python benchmarks/bench_decode.py",
    "http": ".venv/bin/python benchmarks/bench_http.py",
    "soak": ".venv/bin/python benchmarks/soak_rss.py",
    "scan": ".venv/bin/python benchmarks/bench_scan.py --photos runs/bench/scan-photos --json runs/bench/scan.json",
    "video": ".venv/bin/python benchmarks/bench_video.py",
}


def load(name: str) -> dict | None:
    path = common.RUNS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**MISS**"


def _load(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def machine_section(results: dict[str, dict]) -> str:
    first = next(iter(results.values()))["machine"]
    loads = ", ".join(f"{name} {_load(r['machine'].get('load_average_1m_at_start'))}→"
                      f"{_load(r['machine'].get('load_average_1m_at_end'))}" for name, r in results.items())
    return "\n".join([
        f"- **Machine:** {first['nproc']} cores (`nproc`), CPU `{first['cpu']}` (from /proc/cpuinfo)",
        f"- **Software:** Python {first['python']}, onnxruntime {first['onnxruntime']}, Pillow {first['pillow']}, "
        f"numpy {first.get('numpy', '?')}",
        f"- **Run:** {first.get('started', '?')}; 1-minute load average at start→end of each benchmark: {loads}",
        "- **Commands:** `make bench`, which runs, in this order:",
        "",
        "```sh",
        *(COMMANDS[name] for name in COMMANDS if name in results or name == "scan"),
        ".venv/bin/python benchmarks/report.py",
        "```",
    ])


def model_section(model: dict) -> str:
    batches = list(next(iter(model["variants"].values()))["images_per_s_by_batch"])
    rows = []
    for name, v in model["variants"].items():
        val = v["validation"]
        rows.append([name, f"{v['size_mb']} MB", *(v["images_per_s_by_batch"][b] for b in batches), v["best_batch"],
                     f"{val['roc_auc']:.4f}", f"{val['recall_at_fpr_5pct']:.4f}", f"{val['mean_average_precision']:.4f}",
                     f"{v['mean_abs_score_diff_vs_fp32']:.4f}"])
    speedup = ", ".join(f"batch {b}: {r}×" for b, r in model["int8_speedup_by_batch"].items())
    return "\n".join([
        f"onnxruntime on preprocessed tensors ({model['input']}), {model['threads']} intra-op threads, median of "
        f"{len(next(iter(model['variants'].values()))['rounds_by_batch'][batches[0]])} interleaved rounds. Accuracy: the "
        "validation metrics stamped into each model file by `flexguard evaluate` on the same grouped split "
        f"({next(iter(model['variants'].values()))['validation']['n']} photos).",
        "",
        common.table(["model", "file", *(f"batch {b} img/s" for b in batches), "best batch", "val ROC-AUC",
                      "recall @ 5% FPR", "mAP", "mean abs score diff vs fp32"], rows),
        "",
        f"INT8 speed-up: {speedup}.",
    ])


def decode_section(decode: dict) -> str:
    threads = decode["thread_counts"]
    ways = list(next(iter(decode["sets"].values()))["images_per_s"])
    rows = []
    for name, s in decode["sets"].items():
        rows.append([name, s["size"], s["mean_mb"], *(s["images_per_s"][w][str(t)] for w in ways for t in threads),
                     f"{s['service_vs_full_decode']:.2f}×" + ("" if s["draft_applies"] else " (no draft for this format)")])
    return "\n".join([
        "Bytes in memory to the model's input tensor, images/s on 1 thread and on one thread per core. `service` is "
        "`Engine.prepare` (draft decoding for JPEG); `full decode` the same preprocessing with every pixel decoded; "
        "`naive` the naive peer's `Image.open().convert(\"RGB\")` + torchvision Resize/CenterCrop/ToTensor/Normalize.",
        "",
        common.table(["set", "size", "MB/photo", *(f"{w} {t}T" for w in ways for t in threads),
                      f"service / full ({threads[-1]}T)"], rows),
    ])


def http_section(http: dict) -> str:
    rows = []
    for name, server in http["servers"].items():
        for set_name, by_level in server["results"].items():
            for level, e in by_level.items():
                lat = e["latency_ms"]
                rows.append([name, set_name, level, e["ok"], e["errors"], e["throughput_per_s"], lat["p50"], lat["p95"],
                             lat["p99"], e.get("mean_batch_size") or "–", e.get("server_cpu_ms_per_request", "–"),
                             round(e["client_cpu_s"] / max(e["ok"], 1) * common.MS_PER_S, 1), e["wall_s"]])
    ceiling = ", ".join(f"{v}: {m['best_images_per_s']} img/s at batch {m['best_batch']}" for v, m in http["model_only"].items())
    return "\n".join([
        "One server at a time on 127.0.0.1, one photo per request (multipart field `files`), a closed-loop async "
        "httpx client sending pre-encoded bodies, after a warm-up. `flexguard` is `flexguard serve` with default "
        "settings; `naive-peer` is `benchmarks/naive_peer.py` under uvicorn. Server and load generator share the "
        "same cores: `client CPU ms/req` is what the load generator took from them per request, `server CPU ms/req` "
        "what the server used per request (both over the timed requests only); `mean batch` is photos per "
        "onnxruntime call (from the service's /metrics). `flexguard-spinning` is the same service with onnxruntime's "
        "thread spinning turned back on (`benchmarks/serve_spinning.py`), i.e. before the one service change made "
        "for these targets.",
        "",
        f"Model-only ceiling measured in the same run: {ceiling}.",
        "",
        common.table(["server", "photos", "concurrency", "ok", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms",
                      "mean batch", "server CPU ms/req", "client CPU ms/req", "wall s"], rows),
    ])


def soak_section(soak: dict) -> str:
    rss, load_ = soak["rss_mb"], soak["load"]
    trace = " → ".join(f"{mb:.0f}" for _, mb in rss["samples"][:: max(1, len(rss["samples"]) // 10)])
    return "\n".join([
        f"`flexguard serve` (defaults, fp32), {soak['requests']} requests at concurrency {soak['concurrency']} "
        f"({soak['photos']}), after a warm-up at concurrency 32 and {soak['concurrency']}.",
        "",
        common.table(["requests", "errors", "req/s", "RSS at start MB", "RSS after warm-up MB", "max sampled MB",
                      "RSS after soak MB", "growth MB"],
                     [[soak["requests"], load_["errors"], load_["throughput_per_s"], rss["at_start"], rss["after_warmup"],
                       rss["max_sampled"], rss["after_soak"], soak["targets"]["rss_growth"]["growth_mb"]]]),
        "",
        f"RSS (MB) every {soak['requests'] // max(1, len(rss['samples']) - 1)} requests, sampled: {trace}",
    ])


def video_section(video: dict) -> str:
    clip, ours, naive = video["clip"], video["flexguard"], video["every_frame"]
    rows = [
        ["flexguard over HTTP (INT8, default settings)", ours["frames_sampled"], ours["wall_s"], ours["server_cpu_s"]],
        ["every frame decoded (PyAV) and scored, in-process", naive["frames"], naive["wall_s"], naive["cpu_s"]],
    ]
    return (f"One {clip['seconds']} s clip, {clip['size'][0]}x{clip['size'][1]}, {clip['fps']} frames a second, "
            f"{clip['codec']} with a keyframe every {clip['gop']} frames ({clip['megabytes']} MB), posted as a raw "
            f"video/mp4 body; medians.\n\n"
            + common.table(["how", "frames scored", "wall s per clip", "CPU s per clip"], rows))


def targets_section(results: dict[str, dict]) -> str:
    rows = []
    http = results.get("http", {}).get("targets", {})
    if "e2e_vs_model_only_fp32" in http:
        t = http["e2e_vs_model_only_fp32"]
        rows.append(["End-to-end HTTP throughput, 12 MP JPEG ≥ 60% of model-only at the best batch", f"{t['ratio']:.0%}",
                     verdict(t["pass"]), t["what"]])
    if "vs_naive_flexguard" in http:
        t = http["vs_naive_flexguard"]
        rows.append(["≥ 8× the naive peer, 12 MP JPEG, concurrency 8", f"{t['ratio']}×", verdict(t["pass"]), t["what"]])
    if "model" in results:
        t = results["model"]["targets"]["int8_vs_fp32"]
        rows.append(["INT8 model-only ≥ 1.8× fp32", f"{t['ratio']}×", verdict(t["pass"]), t["what"]])
    scan = results.get("scan")
    if scan and "model_only" in scan:
        small = next((s for name, s in scan["sets"].items() if not name.startswith("12 MP")), None)
        if small:
            ratio = small["scan"]["files_per_s_scanning"] / scan["model_only"]["best_images_per_s"]
            # The CPU bound (decoding and the model as the scan runs it, perfectly overlapped), where measured.
            bound = (f"; CPU bound {small['bound_files_per_s']} files/s, scan at "
                     f"{small['scan']['files_per_s_scanning'] / small['bound_files_per_s']:.0%} of it"
                     if "bound_files_per_s" in small else "")
            rows.append(["Scan of 1080 px JPEGs ≥ 80% of model-only", f"{ratio:.0%}", verdict(ratio >= 0.8),
                         f"bench_scan.py in the same run: scan {small['scan']['files_per_s_scanning']} files/s "
                         f"({small['scan']['files']} × 1440x1080) against model-only {scan['model_only']['best_images_per_s']} "
                         f"images/s at batch {scan['model_only']['best_batch']}{bound}; analysis in the scan section"])
    else:
        rows.append(["Scan of 1080 px JPEGs ≥ 80% of model-only", "see the Scan section", "–", "benchmarks/bench_scan.py"])
    if "video" in results:
        video = results["video"]
        t = video["targets"]
        rows.append(["Video, 30 s 1080p H.264 over HTTP: ≥ 5× faster than decoding and scoring every frame",
                     f"{t['speedup']['ratio']}×", verdict(t["speedup"]["pass"]),
                     f"{video['flexguard']['wall_s']} s a clip against {video['every_frame']['wall_s']} s; {t['speedup']['what']}"])
        rows.append(["Video: under 2 s of service CPU per 30 s clip", f"{t['server_cpu']['seconds']} s",
                     verdict(t["server_cpu"]["pass"]), t["server_cpu"]["what"]])
    if "soak" in results:
        t = results["soak"]["targets"]["rss_growth"]
        rows.append(["Service RSS after 10,000 requests within 50 MB of RSS after warm-up", f"{t['growth_mb']:+.1f} MB",
                     verdict(t["pass"]), t["what"]])
    return common.table(["target", "measured", "result", "how"], rows)


def render(results: dict[str, dict]) -> str:
    parts = ["### Machine and commands", "", machine_section(results), "", "### Targets", "", targets_section(results)]
    sections = (("model", "### 1. Model only", model_section), ("decode", "### 2. Decode + preprocess", decode_section),
                ("http", "### 3–4. End to end over HTTP, and the naive peer", http_section),
                ("soak", "### Service memory under a soak", soak_section),
                ("video", "### Video posts", video_section))
    for name, title, section in sections:
        if name in results:
            parts += ["", title, "", section(results[name])]
    return "\n".join(parts) + "\n"


def update_docs(path: Path, block: str) -> None:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{path}: no {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n<!-- Generated by benchmarks/report.py from runs/bench/*.json; "
                    f"edit around this block, not inside it. -->\n\n{block}\n{END}{tail}")
    print(f"updated {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, help="also replace the generated block of this markdown page")
    args = parser.parse_args()
    results = {name: r for name in COMMANDS if (r := load(name)) is not None}
    if not results:
        sys.exit("no results under runs/bench/: run `make bench` first")
    block = render(results)
    (common.RUNS / "summary.md").write_text(block)
    print(block)
    print(f"wrote {(common.RUNS / 'summary.md').relative_to(common.ROOT)}")
    if args.docs:
        update_docs(args.docs, block)


if __name__ == "__main__":
    main()
