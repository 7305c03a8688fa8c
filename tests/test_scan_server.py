"""``flexguard scan --server URL`` against a real service (uvicorn in a thread, shipped model): same rows as local."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import uvicorn

from flexguard.cli import main
from flexguard.models import shipped_model_path
from flexguard.service.app import create_app
from flexguard.service.settings import Settings

from test_scan import _scan_ok, make_tree, noise_photo, read_jsonl

STARTUP_TIMEOUT_S = 60
POLL_S = 0.05
USAGE_ERROR = 2
API_KEY = "kunci-rahasia"
SMALL_LIMIT_BYTES = 20_000


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The app on a free loopback port, in a thread; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(POLL_S)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("server") / "export"
    root.mkdir()
    make_tree(root)
    return root


def test_rows_through_the_service_equal_local_rows(tree, tmp_path):
    local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    _scan_ok([str(tree), "--out", str(local)])
    with serving(Settings(model_path=shipped_model_path(), threads=1)) as url:
        # A batch size that does not divide the file count, so the last request is a short one.
        _scan_ok([str(tree), "--out", str(remote), "--server", url, "--batch-size", "3"])
    assert read_jsonl(remote) == read_jsonl(local)


def test_api_key_comes_from_the_environment(tree, tmp_path, monkeypatch, capsys):
    out = tmp_path / "o.jsonl"
    with serving(Settings(model_path=shipped_model_path(), threads=1, api_keys=API_KEY)) as url:
        monkeypatch.delenv("FLEXGUARD_API_KEY", raising=False)
        assert main(["scan", str(tree), "--out", str(out), "--server", url]) == USAGE_ERROR
        assert "set FLEXGUARD_API_KEY" in capsys.readouterr().err
        monkeypatch.setenv("FLEXGUARD_API_KEY", API_KEY)
        _scan_ok([str(tree), "--out", str(out), "--server", url])
    assert read_jsonl(out)


def test_a_file_the_service_refuses_gets_an_error_row_and_the_rest_are_scored(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for index in range(5):
        noise_photo(rng, 96, 64).save(folder / f"small-{index}.jpg")
    noise_photo(rng, 1200, 900).save(folder / "big.png")
    assert (folder / "big.png").stat().st_size > SMALL_LIMIT_BYTES > (folder / "small-0.jpg").stat().st_size
    out = tmp_path / "o.jsonl"
    with serving(Settings(model_path=shipped_model_path(), threads=1, max_bytes=SMALL_LIMIT_BYTES)) as url:
        _scan_ok([str(folder), "--out", str(out), "--server", url])
    rows = read_jsonl(out)
    assert len(rows) == 6
    big = rows[str(folder / "big.png")]
    assert big["ok"] is False and big["size"] > SMALL_LIMIT_BYTES and big["sha256"]
    assert all(row["ok"] for path, row in rows.items() if "small" in path)
