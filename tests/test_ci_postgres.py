"""`make test`'s PostgreSQL is a throwaway: its own folder, a free port, a random password, and gone after.

Runs `.ci/test-postgres.sh` as `make test` does; skips where Debian's PostgreSQL is not installed.
"""

from __future__ import annotations

import glob
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "test-postgres.sh"

pytestmark = pytest.mark.skipif(not glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                                reason="PostgreSQL is not installed: `make system-deps` installs Debian's postgresql")


def cluster(action: str, folder: Path) -> str:
    environment = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}  # not the FLEXGUARD_TEST_POSTGRES_URL of this run
    return subprocess.run(["sh", str(SCRIPT), action, str(folder)], check=True, capture_output=True, text=True,
                          env=environment).stdout.strip()


def running_in(folder: Path) -> bool:
    return str(folder) in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_each_start_is_a_new_server_that_stop_removes():
    # Folders as `make test` makes them (mktemp -d): pytest's own tmp_path sits below folders only
    # root may enter, and the server runs as the `postgres` user.
    first, second = Path(tempfile.mkdtemp(prefix="flexguard-postgres.")), Path(tempfile.mkdtemp(prefix="flexguard-postgres."))
    try:
        urls = [urlparse(cluster("start", first)), urlparse(cluster("start", second))]
        assert all(url.hostname == "127.0.0.1" for url in urls)
        assert urls[0].port != urls[1].port and urls[0].password != urls[1].password
        assert len(urls[0].password) >= 32 and urls[0].password not in SCRIPT.read_text()
        assert running_in(first) and running_in(second)
    finally:
        cluster("stop", first)
        cluster("stop", second)
    assert not first.exists() and not second.exists()
    assert not running_in(first) and not running_in(second)
