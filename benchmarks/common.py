"""Shared pieces of the benchmark suite: reproducible photo sets, the machine, servers, a load generator.

Not a test module and never imported by the package: the benchmarks run as scripts
(``.venv/bin/python benchmarks/bench_*.py``, or all of them with ``make bench``), so this folder is on
``sys.path`` and ``import common`` works.

Photos come from the scan benchmark's generator (``bench_scan.make_photo``: seeded, photo-like texture
and sensor grain, so a 12 MP JPEG is 2-4 MB and the decoder has real work). The other formats are
the same pixels re-encoded. Everything generated is cached under ``runs/bench/photos`` (git-ignored),
keyed by set name and index, so a second run reuses it; delete the folder to regenerate.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image

from bench_scan import LARGE_SIZE, SMALL_SIZE, make_photo  # the colleague's generator, reused as is

CLIENT_KEEPALIVE_S = 1.0  # under the service's keep-alive (see where it is used)
ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "bench"
PHOTOS = RUNS / "photos"
MS_PER_S = 1000.0
BYTES_PER_MB = 1e6
# Re-encoding settings for the non-JPEG formats: what phones and apps write.
WEBP_QUALITY = 85
HEIC_QUALITY = 85
PNG_COMPRESS_LEVEL = 6  # Pillow's default


@dataclass(frozen=True)
class PhotoSet:
    """A reproducible set of photos: ``count`` photos of ``size`` in ``format``."""

    name: str
    format: str  # Pillow's format name: JPEG, PNG, WEBP, HEIF
    size: tuple[int, int]
    count: int
    first_seed: int  # make_photo index of the first photo; sets of the same size share pixels
    description: str

    @property
    def suffix(self) -> str:
        return {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic"}[self.format]

    @property
    def content_type(self) -> str:
        return {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "HEIF": "image/heic"}[self.format]


# 12 MP: a phone camera's 4032x3024 (JPEG from Android, HEIC from iPhones). 1080 px: what social apps
# keep of a photo (1440x1080, the scan benchmark's small size, so the two benchmarks share a set).
# Photos of the same size share seeds: PNG/WebP/HEIC are the JPEG's pixels re-encoded.
SEED_12MP, SEED_1080 = 10_000, 20_000
PHOTO_SETS = {
    s.name: s
    for s in (
        PhotoSet("jpeg-12mp", "JPEG", LARGE_SIZE, 16, SEED_12MP, "12 MP phone JPEG, quality 90"),
        PhotoSet("heic-12mp", "HEIF", LARGE_SIZE, 4, SEED_12MP, "12 MP iPhone-style HEIC"),
        PhotoSet("jpeg-1080", "JPEG", SMALL_SIZE, 32, SEED_1080, "1080 px social-media JPEG, quality 90"),
        PhotoSet("png-1080", "PNG", SMALL_SIZE, 8, SEED_1080, "1080 px PNG (screenshot-style, lossless)"),
        PhotoSet("webp-1080", "WEBP", SMALL_SIZE, 8, SEED_1080, f"1080 px WebP, quality {WEBP_QUALITY}"),
        PhotoSet("heic-1080", "HEIF", SMALL_SIZE, 8, SEED_1080, f"1080 px HEIC, quality {HEIC_QUALITY}"),
    )
}


def _encode(jpeg: bytes, image_format: str) -> bytes:
    if image_format == "JPEG":
        return jpeg
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    out = io.BytesIO()
    if image_format == "PNG":
        image.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif image_format == "WEBP":
        image.save(out, format="WEBP", quality=WEBP_QUALITY)
    elif image_format == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
        image.save(out, format="HEIF", quality=HEIC_QUALITY)
    else:
        raise ValueError(f"no encoder for {image_format}")
    return out.getvalue()


def photo_set(name: str, count: int | None = None) -> list[bytes]:
    """The photos of set ``name`` as bytes, generating (and caching) any that are missing."""
    spec = PHOTO_SETS[name]
    count = spec.count if count is None else count
    folder = PHOTOS / name
    folder.mkdir(parents=True, exist_ok=True)

    def one(index: int) -> bytes:
        path = folder / f"{index:04d}.{spec.suffix}"
        if not path.exists():
            data = _encode(make_photo(spec.first_seed + index, spec.size), spec.format)
            partial = path.with_suffix(".partial")
            partial.write_bytes(data)
            partial.replace(path)  # never leave a half-written photo for the next run to reuse
        return path.read_bytes()

    with ThreadPoolExecutor(cores()) as pool:
        return list(pool.map(one, range(count)))


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    import numpy
    import onnxruntime

    import PIL

    return {
        "nproc": cores(),
        "cpu": cpu_model(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "pillow": PIL.__version__,
        "numpy": numpy.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def finish_machine(info: dict) -> dict:
    info["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return info


def warn_if_busy() -> None:
    """Benchmarks share the CPU with whatever else runs; say so when that is a lot."""
    load = os.getloadavg()[0]
    if load > 0.5 * cores():
        print(f"warning: load average {load:.1f} on {cores()} cores: other work is running, numbers will be low and noisy",
              file=sys.stderr)


def write_json(name: str, data: dict) -> Path:
    RUNS.mkdir(parents=True, exist_ok=True)
    path = RUNS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table (also readable on a terminal)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    numeric = [all(_is_number(row[i]) for row in cells[1:]) for i in range(len(headers))]
    lines += ["| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)) + " |"
              for row in cells[1:]]
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("×x%").replace(",", ""))
    except ValueError:
        return text in ("-", "–")
    return True


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


class Server:
    """A server in its own process on loopback; waits until ``ready_path`` answers 200. Use as a context manager."""

    def __init__(self, name: str, command: list[str], port: int, env: dict[str, str], ready_path: str,
                 timeout_s: float = 180.0):
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        RUNS.mkdir(parents=True, exist_ok=True)
        self.log_path = RUNS / f"server-{name}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(ready_path, timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_ready(self, path: str, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.url + path, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def flexguard_server(name: str, variant: str = "fp32", extra_env: dict[str, str] | None = None) -> Server:
    """``flexguard serve`` as deployed: default settings (no FLEXGUARD_* inherited), the shipped model of ``variant``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXGUARD_")}
    env.update({"FLEXGUARD_MODEL_VARIANT": variant, "FLEXGUARD_HOST": "127.0.0.1", "FLEXGUARD_PORT": str(port),
                # The review database of a benchmark server lives with the runs, not in the checkout.
                "FLEXGUARD_DATABASE_URL": f"sqlite:///{RUNS / 'review.db'}"})
    env.update(extra_env or {})
    return Server(name, [sys.executable, "-m", "flexguard", "serve"], port, env, "/readyz")


def naive_server(name: str = "naive-peer") -> Server:
    """benchmarks/naive_peer.py under uvicorn, started the way its author would."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "naive_peer:app", "--app-dir", str(ROOT / "benchmarks"),
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return Server(name, command, port, dict(os.environ), "/healthz")


# --- load generator --------------------------------------------------------------------------------

BOUNDARY = "flexguard-bench-boundary-7d3f9a"
PHOTO_FIELD = "files"


def multipart(photo: bytes, filename: str, content_type: str) -> tuple[bytes, dict[str, str]]:
    """One photo as a multipart/form-data body (field ``files``), encoded once so the client only sends bytes."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{PHOTO_FIELD}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode()
    body = head + photo + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def request_bodies(set_name: str, photos: Sequence[bytes]) -> list[tuple[bytes, dict[str, str]]]:
    spec = PHOTO_SETS[set_name]
    return [multipart(p, f"{i:04d}.{spec.suffix}", spec.content_type) for i, p in enumerate(photos)]


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    ok: int
    errors: int
    wall_s: float
    latencies_ms: list[float]
    client_cpu_s: float
    server_cpu_s: float | None
    error_samples: list[str]

    def summary(self) -> dict:
        lat = self.latencies_ms
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 3),
            "throughput_per_s": round(self.ok / self.wall_s, 2),
            "latency_ms": {"p50": round(percentile(lat, 50), 1), "p95": round(percentile(lat, 95), 1),
                           "p99": round(percentile(lat, 99), 1),
                           "mean": round(statistics.fmean(lat), 1) if lat else None,
                           "max": round(max(lat), 1) if lat else None},
            # The load generator runs on the same cores as the server: its share is the cost of measuring.
            "client_cpu_s": round(self.client_cpu_s, 2),
            "server_cpu_s": None if self.server_cpu_s is None else round(self.server_cpu_s, 2),
            "error_samples": self.error_samples[:5],
        }


async def _load(url: str, bodies: Sequence[tuple[bytes, dict[str, str]]], concurrency: int, requests: int,
                warmup: int, server_pid: int | None, on_progress=None) -> LoadResult:
    import httpx

    # A client must drop an idle connection before the server does (FLEXGUARD_KEEP_ALIVE_S, 5 s): with
    # httpx's default of 5 s too, a request sent just as the server closes an idle connection is lost.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=CLIENT_KEEPALIVE_S)
    timeout = httpx.Timeout(300.0)
    latencies: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        counter = iter(range(warmup))

        async def worker(record: bool) -> None:
            for index in counter:
                body, headers = bodies[index % len(bodies)]
                start = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers=headers)
                    good = response.status_code == 200
                    detail = "" if good else f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as error:
                    good, detail = False, f"{type(error).__name__}: {error}"
                if record:
                    if good:
                        latencies.append((time.perf_counter() - start) * MS_PER_S)
                    else:
                        errors.append(detail)
                    if on_progress is not None:
                        on_progress(len(latencies) + len(errors))

        # Warm-up: every connection opened, every photo seen once, the server's pools and arenas grown.
        await asyncio.gather(*(worker(False) for _ in range(concurrency)))
        counter = iter(range(requests))
        cpu_before = time.process_time()
        server_before = process_cpu_s(server_pid) if server_pid else None
        start = time.perf_counter()
        await asyncio.gather(*(worker(True) for _ in range(concurrency)))
        wall = time.perf_counter() - start
        client_cpu = time.process_time() - cpu_before
        server_cpu = process_cpu_s(server_pid) - server_before if server_pid else None
    return LoadResult(concurrency, requests, len(latencies), len(errors), wall, latencies, client_cpu, server_cpu, errors)


def run_load(url: str, bodies: Sequence[tuple[bytes, dict[str, str]]], concurrency: int, requests: int,
             server_pid: int | None = None, warmup: int | None = None, on_progress=None) -> LoadResult:
    """``requests`` POSTs of the pre-encoded ``bodies`` (cycled), ``concurrency`` at a time, after a warm-up.

    Each of ``concurrency`` workers sends its next request as soon as its last one is answered (a closed
    loop): throughput is what the server sustains, latency includes queueing behind the other workers.
    """
    warmup = max(concurrency * 2, len(bodies)) if warmup is None else warmup
    return asyncio.run(_load(url, bodies, concurrency, requests, warmup, server_pid, on_progress))
