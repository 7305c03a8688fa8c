"""What the Docker image does, without Docker: the serving dependencies alone install and serve.

A fresh virtual environment gets ``pip install .`` (the core dependencies only, no extras), must not
be able to import torch, and then ``flexguard serve`` on the shipped model must become ready and
score a JPEG exactly as the engine in this process does. The project is copied first so the build
leaves nothing (build/, *.egg-info) in the working tree.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from flexguard.models import shipped_model_path
from flexguard.inference.engine import Engine
from test_service_dockerfile import dockerfile_healthcheck

from live_server import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT_S = 900
READY_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30
SCORE_TOLERANCE = 1e-4


def copy_project(target: Path) -> Path:
    """The files ``pip install .`` reads: pyproject.toml, its readme, and every package folder it maps."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", target)
    readme = ROOT / pyproject["project"].get("readme", "README.md")
    if readme.is_file():
        shutil.copy2(readme, target)
    for folder in {Path(d).parts[0] for d in pyproject["tool"]["setuptools"]["package-dir"].values()}:
        shutil.copytree(ROOT / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("install")
    project = copy_project(base / "project")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(project)],
        check=True, timeout=INSTALL_TIMEOUT_S, cwd=base,
    )
    return venv


def test_serving_dependencies_exclude_torch(serving_venv):
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('torch') is None else 1)"
    assert subprocess.run([str(serving_venv / "bin" / "python"), "-c", probe]).returncode == 0


def test_serve_from_the_fresh_environment(serving_venv, coffee, encoder, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXGUARD_")}
    log = tmp_path / "server.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [str(serving_venv / "bin" / "flexguard"), "serve", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not ready in time:\n" + log.read_text()
            time.sleep(0.2)

        photo = encoder(coffee, "JPEG", quality=90)
        response = httpx.post(
            f"{base}/v1/score", files=[("files", ("private-name.jpg", photo, "image/jpeg"))], timeout=READY_TIMEOUT_S
        )
        assert response.status_code == 200, response.text
        body = response.json()
        engine = Engine(shipped_model_path())
        assert body["model"] == {"name": engine.info.name, "version": engine.info.version,
                                 "weights_sha256": engine.info.weights_sha256}
        (result,) = body["results"]
        (expected,) = engine.score([photo])
        assert result["ok"] is True and result["decision"] == expected.decision
        assert {c["id"]: c["score"] for c in result["categories"]} == pytest.approx(expected.scores, abs=SCORE_TOLERANCE)
        assert httpx.get(f"{base}/v1/model").json()["validation_metrics"] == engine.info.validation_metrics
        # The image's HEALTHCHECK, run as Docker would (python is the environment's own).
        command = dockerfile_healthcheck()
        assert command[0] == "python"
        check = subprocess.run([str(serving_venv / "bin" / "python"), *command[1:]], env={**env, "FLEXGUARD_PORT": str(port)})
        assert check.returncode == 0
    finally:
        server.send_signal(signal.SIGTERM)
        returncode = server.wait(STOP_TIMEOUT_S)
    text = log.read_text()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal, as a process killed by it would.
    assert returncode in (0, -signal.SIGTERM), text
    assert "Application shutdown complete" in text
    assert "serving model" in text and "private-name" not in text
