"""The README's supervisor-review walkthrough runs as written, so it cannot drift from the code.

The shell blocks of README.md's supervisor-review sections, from "Walkthrough with curl" on (reviewer
labels and the training export included), are run by bash (``set -euo pipefail``)
in a fresh folder against a live service, exactly as a reader in a second terminal would type them,
with only the port changed. The folder has the two photos the README asks for and a ``.venv`` that is
this test's own environment, so ``. .venv/bin/activate`` puts the same ``flexguard`` on PATH. The
service runs the tiny test model, which flags red, so ``mobil.jpg`` is a red car-sized rectangle.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from live_server import serving
from review_world import grey_photo
from flexguard.datasets import load_manifest
from flexguard.service.review.database import migrate, open_database
from flexguard.service.review.store import Principal, ReviewStore
from flexguard.service.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Walkthrough with curl"
README_URL = "http://127.0.0.1:8000"
# No delivery is attempted while the test runs: the README's receiver is a real domain, unreachable here.
WEBHOOK_POLL_S = 3600.0
TIMEOUT_S = 120


def walkthrough() -> tuple[list[str], str]:
    """The section's shell blocks, and its text (for the output shown in comments)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start)
    section = text[start:end]
    return re.findall(r"```sh\n(.*?)```", section, re.S), section


def red_jpeg() -> bytes:
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (480, 320), (128, 128, 128))
    ImageDraw.Draw(image).rectangle((24, 60, 300, 290), fill=(255, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (`make test` installs it)")
def test_the_readme_walkthrough_runs_as_written(tmp_path, tiny_model_path):
    blocks, section = walkthrough()
    assert len(blocks) >= 2 and ". .venv/bin/activate" in blocks[0]
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    (work / "kopi.jpg").write_bytes(grey_photo())
    (work / "mobil.jpg").write_bytes(red_jpeg())
    url = f"sqlite:///{work / 'flexguard.db'}"
    migrate(open_database(url))  # what `make serve` does when it starts

    settings = Settings(model_path=tiny_model_path, database_url=url, max_wait_ms=1.0, webhook_poll_s=WEBHOOK_POLL_S)
    with serving(settings) as (base, _):
        script = "set -euo pipefail\n" + "\n".join(blocks).replace(README_URL, base)
        environment = {**os.environ, "FLEXGUARD_DATABASE_URL": url}
        run = subprocess.run(["bash", "-c", script], cwd=work, env=environment, capture_output=True, text=True,
                             timeout=TIMEOUT_S)
    assert run.returncode == 0, f"the walkthrough failed:\n{run.stdout}\n{run.stderr}"

    # It did what the README says: one post cleared, two rejected by the unit head, the photo fetched, the
    # reviewer's label of the second one's car exported as a one-photo training batch, and, once the unit's
    # policy turned cars off, a car post cleared.
    store = ReviewStore(open_database(url))
    records, total = store.list_submissions(Principal.command_line("test"), None, 10, 0)
    assert total == 4
    assert sorted(record.status for record in records) == ["cleared", "cleared", "rejected", "rejected"]
    assert '"category_thresholds":{"luxury_car":' in run.stdout
    exported = load_manifest(work / "review-export" / "manifest.csv")
    assert len(exported) == 1 and exported.records[0].categories == ("luxury_car",)
    assert (work / "foto.jpg").read_bytes() == (work / "mobil.jpg").read_bytes()
    assert '"code":"conflict"' in run.stdout  # the second decision was refused
    with open(work / "audit.csv", newline="") as handle:
        actions = [row["action"] for row in csv.DictReader(handle)]
    assert actions[-3:] == ["submitted", "submitted", "rejected"]
    # Every field the README shows in its sample output is in the real output.
    shown = set(re.findall(r'"(\w+)":', "\n".join(line for line in section.splitlines() if line.startswith("#"))))
    assert shown, "the README shows no sample output"
    missing = {field for field in shown if f'"{field}":' not in run.stdout and f'""{field}"":' not in run.stdout}
    assert not missing, f"the README shows fields the service does not send: {sorted(missing)}"
