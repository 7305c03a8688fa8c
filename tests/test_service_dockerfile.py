"""The Dockerfile's promises that can be checked without Docker (the fresh-venv test checks the install itself)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

DOCKERFILE = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()
INSTRUCTIONS_TEXT = "\n".join(line.strip() for line in DOCKERFILE.splitlines())
INSTRUCTIONS = [line for line in DOCKERFILE.replace("\\\n", " ").splitlines() if line and not line.startswith("#")]


def dockerfile_healthcheck() -> list[str]:
    """The exec-form command of the Dockerfile's HEALTHCHECK."""
    (healthcheck,) = instructions("HEALTHCHECK")
    match = re.search(r" CMD (\[.*\])$", healthcheck)
    assert match, "the Dockerfile has no exec-form HEALTHCHECK"
    return json.loads(match.group(1))


def instructions(keyword: str) -> list[str]:
    return [line[len(keyword):].strip() for line in INSTRUCTIONS if line.startswith(keyword + " ")]


def test_slim_python_311_base():
    assert all(base.startswith("python:3.11-slim") for base in instructions("FROM"))


def test_serving_dependencies_only():
    installs = [run for run in instructions("RUN") if "pip " in run]
    assert installs and not any("torch" in run or re.search(r"\.\[|whl\[", run) for run in installs)


def test_runs_as_non_root_on_port_8000():
    (user,) = instructions("USER")
    assert user not in ("root", "0")
    assert instructions("EXPOSE") == ["8000"]
    assert instructions("CMD")[-1] == '["flexguard", "serve"]'
    assert "COPY models ./models" in INSTRUCTIONS


def test_the_build_copies_every_package_folder():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    folders = {Path(folder).parts[0] for folder in pyproject["tool"]["setuptools"]["package-dir"].values()}
    assert {f"COPY {folder} ./{folder}" for folder in folders} <= set(INSTRUCTIONS_TEXT.splitlines()), folders


class _Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_follows_readyz(status, healthy):
    handler = type("Handler", (_Answer,), {"status": status})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        command = dockerfile_healthcheck()
        env = {"FLEXGUARD_PORT": str(server.server_address[1])}
        result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True)
    finally:
        server.shutdown()
    assert (result.returncode == 0) is healthy
