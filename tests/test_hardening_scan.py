"""The scanner under faults: SIGKILL at random points (repeated), a disk that fills up mid-row, and a
read-only output. Every file ends up in the output exactly once, with the rows an uninterrupted scan
gives, and a failed write never leaves a damaged row behind.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flexguard.cli import main
from flexguard.scan import journal as scan_output
from test_scan import _scan_ok, noise_photo, read_jsonl

N_PHOTOS = 150
KILLS = 7
SEED = 20261126
POLL_S = 0.001
TIMEOUT_S = 120
USAGE_ERROR = 2


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kill") / "photos"
    rng = np.random.default_rng(SEED)
    for index in range(N_PHOTOS):
        sub = folder / f"set-{index % 5}"
        sub.mkdir(parents=True, exist_ok=True)
        # PNGs of a few hundred pixels (no JPEG draft shortcut): a few ms each, so a scan lasts long
        # enough for kills to land in the middle of it.
        noise_photo(rng, int(rng.integers(300, 480)), int(rng.integers(300, 480))).save(sub / f"{index:03d}.png")
    (folder / "set-0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    (folder / "set-1" / "notes.png").write_bytes(b"not a png")
    return folder


@pytest.fixture(scope="module")
def reference(photos, tiny_model_path, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("reference") / "scan.jsonl"
    _scan_ok([str(photos), "--out", str(out), "--model", str(tiny_model_path), "--batch-size", "2"])
    rows = read_jsonl(out)
    assert len(rows) == N_PHOTOS + 1  # notes.png is not an image by its content: skipped, no row
    return rows


def command(photos: Path, out: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "flexguard", "scan", str(photos), "--out", str(out), "--model", str(model),
            "--batch-size", "1", "--workers", "1"]


def complete_rows(out: Path) -> int:
    try:
        return out.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_sigkill_at_random_points_loses_and_repeats_nothing(photos, reference, tiny_model_path, tmp_path):
    out = tmp_path / "scan.jsonl"
    chooser = random.Random(SEED)
    kills = 0
    for attempt in range(KILLS):
        process = subprocess.Popen(command(photos, out, tiny_model_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt % 3 == 0:
            # By time: often lands while starting up, loading the model or walking the folders.
            time.sleep(chooser.uniform(0.02, 0.4))
        else:
            # By progress: lands between (or during) row writes.
            target = complete_rows(out) + chooser.randint(1, 15)
            deadline = time.monotonic() + TIMEOUT_S
            while complete_rows(out) < target and process.poll() is None:
                assert time.monotonic() < deadline, "no progress"
                time.sleep(POLL_S)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.communicate(timeout=TIMEOUT_S)
        # Whatever is complete on disk is valid: whole rows, each file at most once.
        text = out.read_bytes() if out.exists() else b""
        whole = text[: text.rfind(b"\n") + 1]
        lines = whole.decode("utf-8").splitlines()
        assert len({line for line in lines}) == len(lines)
    assert kills >= 5, f"only {kills} kills landed before the scan finished"
    finished = subprocess.run(command(photos, out, tiny_model_path), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert finished.returncode == 0, finished.stderr
    assert read_jsonl(out) == reference  # every file exactly once, with the uninterrupted scan's rows


def failing_write(after: int, error: int):
    """An os.write that works ``after`` times, then writes half a row, then fails with ``error``."""
    calls = {"n": 0}

    def write(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] <= after:
            return os.write(fd, data)
        if calls["n"] == after + 1 and error == errno.ENOSPC and len(data) > 1:
            return os.write(fd, data[: len(data) // 2])  # the disk fills up mid-row
        raise OSError(error, os.strerror(error))

    return write


@pytest.mark.parametrize(("error", "after"), [(errno.ENOSPC, 17), (errno.EROFS, 0), (errno.EIO, 5)])
def test_a_failed_write_stops_with_a_clear_error_and_no_damaged_row(
    photos, reference, tiny_model_path, tmp_path, monkeypatch, capsys, error, after,
):
    out = tmp_path / "scan.jsonl"
    argv = ["scan", str(photos), "--out", str(out), "--model", str(tiny_model_path), "--batch-size", "2"]
    monkeypatch.setattr(scan_output, "_write", failing_write(after, error))
    assert main(argv) == USAGE_ERROR
    err = capsys.readouterr().err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith("flexguard scan: error: cannot write") and os.strerror(error) in last, err
    assert "Traceback" not in err
    data = out.read_bytes()
    assert data == b"" or data.endswith(b"\n")  # no half row left behind
    rows = read_jsonl(out)
    assert len(rows) == after
    assert all(reference[path] == row for path, row in rows.items())
    # Once there is room again, the same command continues and finishes: every file exactly once.
    monkeypatch.setattr(scan_output, "_write", os.write)
    capsys.readouterr()
    assert main(argv) == 0
    assert read_jsonl(out) == reference


def test_an_unwritable_output_folder_is_one_clear_line(photos, tiny_model_path, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes through read-only permissions; the EROFS case above covers a read-only output")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main(["scan", str(photos), "--out", str(folder / "o.jsonl"), "--model", str(tiny_model_path)]) == USAGE_ERROR
    finally:
        folder.chmod(0o755)
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err
