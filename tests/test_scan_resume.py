"""A scan killed part-way and rerun ends with every file exactly once and the rows of an uninterrupted scan.

The scan runs as ``python -m flexguard scan`` in a subprocess and is killed (SIGKILL, no chance to
clean up) or interrupted (SIGINT, as Ctrl-C) once some rows are in the output.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from flexguard.models import shipped_model_path
from flexguard.models.metadata import compute_weights_sha256, read_info, stamp
from test_scan import _scan_ok, noise_photo, read_csv, read_jsonl
from videos import GREY, RED, clip

N_PHOTOS = 200
N_VIDEOS = 6
KILL_AFTER_ROWS = 30
# Small batches so rows trickle out and the kill lands mid-scan.
BATCH_SIZE = "4"
POLL_S = 0.01
TIMEOUT_S = 120
SIGINT_STATUS = 130
SEED = 11
SHIPPED_MODEL = shipped_model_path("fp32")
USER_ERROR_STATUS = 2


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("resume") / "photos"
    rng = np.random.default_rng(SEED)
    for index in range(N_PHOTOS):
        subfolder = folder / f"album-{index % 7}"
        subfolder.mkdir(parents=True, exist_ok=True)
        width, height = int(rng.integers(64, 200)), int(rng.integers(64, 200))
        noise_photo(rng, width, height).save(subfolder / f"{index:04d}.jpg", quality=85)
    (folder / "album-0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    # Videos among the photos: a kill may land while one is being sampled, and each still gets one row.
    for index in range(N_VIDEOS):
        colours = [GREY, RED if index % 2 else GREY, GREY]
        (folder / f"album-{index % 7}" / f"reel-{index}.mp4").write_bytes(clip(colours, fps=5))
    return folder


@pytest.fixture(scope="module")
def uninterrupted(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("reference") / "scan.jsonl"
    _scan_ok([str(photos), "--out", str(out), "--batch-size", BATCH_SIZE])
    rows = read_jsonl(out)
    assert len(rows) == N_PHOTOS + 1 + N_VIDEOS
    return rows


def _command(photos: Path, out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "flexguard", "scan", str(photos), "--out", str(out), "--batch-size", BATCH_SIZE,
            "--workers", "2", *options]


def _complete_rows(out: Path) -> int:
    try:
        return out.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_part_way(photos: Path, out: Path, sig: signal.Signals, *options: str) -> subprocess.CompletedProcess:
    # Ctrl-C as a terminal sends it: a test run started in the background (`make test &`) inherits SIGINT
    # ignored, and Python then never raises KeyboardInterrupt, so the child gets the default back.
    process = subprocess.Popen(_command(photos, out, *options), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_default_sigint)
    deadline = time.monotonic() + TIMEOUT_S
    while _complete_rows(out) < KILL_AFTER_ROWS:
        assert process.poll() is None, f"the scan ended before it could be stopped: {process.communicate()}"
        assert time.monotonic() < deadline, "the scan wrote no rows in time"
        time.sleep(POLL_S)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _resume(photos: Path, out: Path) -> subprocess.CompletedProcess:
    finished = subprocess.run(_command(photos, out), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert finished.returncode == 0, finished.stderr
    return finished


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_sigkill_then_rerun_gives_every_file_once_with_the_same_rows(photos, uninterrupted, tmp_path, suffix):
    out = tmp_path / f"scan{suffix}"
    killed = _stop_part_way(photos, out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    partial = _complete_rows(out)
    assert KILL_AFTER_ROWS <= partial < N_PHOTOS
    # As if the kill had landed in the middle of a write: half a row at the end, no newline.
    with open(out, "ab") as handle:
        handle.write(b'{"path": "/half/a/row' if suffix == ".jsonl" else b'/half/a/row,12,"abc')
    resumed = _resume(photos, out)
    assert "cut a half-written last row" in resumed.stderr
    assert "from earlier runs" in resumed.stdout
    rows = read_jsonl(out) if suffix == ".jsonl" else read_csv(out)  # both fail on a path seen twice
    assert rows == uninterrupted


def test_ctrl_c_stops_cleanly_and_the_rerun_finishes(photos, uninterrupted, tmp_path):
    out = tmp_path / "scan.jsonl"
    interrupted = _stop_part_way(photos, out, signal.SIGINT)
    assert interrupted.returncode == SIGINT_STATUS
    assert "rerun the same command to continue" in interrupted.stderr
    assert interrupted.stderr.rstrip().endswith("flexguard scan: interrupted")
    assert out.read_bytes().endswith(b"\n")
    _resume(photos, out)
    assert read_jsonl(out) == uninterrupted


def _retrain_with_the_same_name_and_version(out: Path) -> Path:
    """What a 1-epoch retrain exported with a fixed --model-version looked like: the shipped file's name and
    version over different weights (stamped with their own digest, as every export stamps it)."""
    model = onnx.load(str(SHIPPED_MODEL))
    weight = next(t for t in reversed(model.graph.initializer) if t.data_type == onnx.TensorProto.FLOAT and t.dims)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + np.float32(0.5), weight.name))
    path = out / "retrain.onnx"
    onnx.save(model, str(path))
    stamp(path, read_info(path))
    return path


def test_a_scan_resumed_with_other_weights_under_the_same_version_is_refused(photos, tmp_path):
    out = tmp_path / "scan.jsonl"
    killed = _stop_part_way(photos, out, signal.SIGKILL, "--model", str(SHIPPED_MODEL))
    assert killed.returncode == -signal.SIGKILL
    partial = out.read_bytes()
    retrain = _retrain_with_the_same_name_and_version(tmp_path)
    shipped, other = read_info(SHIPPED_MODEL), read_info(retrain)
    assert (shipped.name, shipped.version) == (other.name, other.version)

    refused = subprocess.run(_command(photos, out, "--model", str(retrain)), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert refused.returncode == USER_ERROR_STATUS
    message = refused.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    shipped_weights, other_weights = compute_weights_sha256(SHIPPED_MODEL), compute_weights_sha256(retrain)
    assert shipped_weights != other_weights
    assert f"weights {shipped_weights[:12]}" in message and f"weights {other_weights[:12]}" in message
    assert "--force to start over" in message
    assert out.read_bytes() == partial  # nothing was mixed in

    started_over = subprocess.run(_command(photos, out, "--model", str(retrain), "--force"),
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
    assert started_over.returncode == 0, started_over.stderr
    rows = read_jsonl(out)
    assert len(rows) == N_PHOTOS + 1 + N_VIDEOS
    assert {row["model_weights_sha256"] for row in rows.values()} == {other_weights}
