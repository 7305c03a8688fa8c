"""``flexguard scan --engine ray`` on a local Ray (2 CPUs): the same rows as the local engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_scan import _scan_ok, make_tree, read_csv, read_jsonl

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'flexguard[ray]'")

RAY_CPUS = "2"
# Ray's own DataContext warns about its own deprecated settings.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def no_ray_left():
    yield
    if ray.is_initialized():  # only if the scan failed to stop the Ray it started
        ray.shutdown()
        pytest.fail("the scan left Ray running")


def test_ray_rows_equal_local_rows(no_ray_left, tmp_path: Path):
    root = tmp_path / "export"
    root.mkdir()
    make_tree(root)
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.csv"
    _scan_ok([str(root), "--out", str(local)])
    # No --ray-address: the scan starts Ray here with --workers CPUs, and stops it at the end. Small
    # batches so both actors get work; CSV on this side shows the format does not depend on the engine.
    printed = _scan_ok([str(root), "--out", str(distributed), "--engine", "ray", "--workers", RAY_CPUS, "--batch-size", "2"])
    assert "scanned 11 files (6 scored, 5 errors)" in printed
    assert read_csv(distributed) == read_jsonl(local)
