"""Model swap and corrupt models.

Swapping the model is a setting (FLEXGUARD_MODEL_PATH or --model) plus a restart. The model is loaded
and checked completely before the server listens, and the running service holds it in memory, so:
a client never sees a half-loaded model (while starting it gets no connection, then the whole model);
overwriting the file under a running service changes nothing until a restart; and a corrupt or cut-short
model file is refused at startup with one clear line and exit status 2, without ever listening.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn

from flexguard.cli import main
from flexguard.service.app import create_app
from flexguard.service.settings import Settings

from live_server import free_port

TIMEOUT_S = 30.0
USAGE_ERROR = 2


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "no_metadata"])
def test_a_corrupt_model_is_refused_in_one_line(damage, tiny_model_path, write_model, tmp_path, capsys):
    good = tiny_model_path.read_bytes()
    if damage == "truncated":  # a copy interrupted half-way
        path = write_model(raw=good[: len(good) // 2])
    elif damage == "random":
        path = write_model(raw=os.urandom(4096))
    elif damage == "empty":
        path = write_model(raw=b"")
    else:
        path = write_model(metadata=None)
    assert main(["serve", "--model", str(path)]) == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("flexguard serve: error: ") and (str(path) in err or "flexguard." in err), err


def test_a_corrupt_model_exits_non_zero_without_listening(tiny_model_path, tmp_path):
    broken = tmp_path / "half.onnx"
    broken.write_bytes(tiny_model_path.read_bytes()[:5000])
    port = free_port()
    env = {**os.environ, "FLEXGUARD_PORT": str(port), "FLEXGUARD_MODEL_PATH": str(broken)}
    result = subprocess.run([sys.executable, "-m", "flexguard", "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == USAGE_ERROR
    assert result.stderr.startswith("flexguard serve: error: cannot load model") and "Traceback" not in result.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


class Watcher(threading.Thread):
    """Asks /v1/model and /v1/score without pause, recording what a client sees."""

    def __init__(self, base: str, photo: bytes):
        super().__init__(daemon=True)
        self.base, self.photo = base, photo
        self.stop = threading.Event()
        self.seen: list[tuple[str, object]] = []

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    model = client.get(f"{self.base}/v1/model")
                    score = client.post(f"{self.base}/v1/score", content=self.photo, headers={"Content-Type": "image/png"})
                except httpx.TransportError:
                    self.seen.append(("no connection", None))
                    time.sleep(0.005)
                    continue
                self.seen.append(("model", (model.status_code, model.json().get("version"))))
                self.seen.append(("score", (score.status_code, score.json().get("model", {}).get("version"))))


def serve_in_thread(settings: Settings, listener: socket.socket):
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    return server, thread


def test_swapping_the_model_by_restart_never_serves_a_half_loaded_one(tiny_model_path, write_model, tmp_path, encoder):
    from PIL import Image

    photo = encoder(Image.new("RGB", (40, 30), (250, 0, 0)), "PNG")
    serving_path = tmp_path / "serving.onnx"
    shutil.copy(tiny_model_path, serving_path)
    new_model = write_model(override={"version": '"0.0.2-new"'})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    watcher = Watcher(base, photo)
    watcher.start()
    after_overwrite = None
    for step, version in (("old", "0.0.1-test"), ("new", "0.0.2-new")):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        server, thread = serve_in_thread(Settings(model_path=serving_path, threads=1, decode_threads=1), listener)
        deadline = time.monotonic() + TIMEOUT_S
        while ("score", (200, version)) not in watcher.seen[-6:]:
            assert time.monotonic() < deadline, watcher.seen[-6:]
            time.sleep(0.02)
        if step == "old":
            # Overwriting the file under the running service changes nothing: the model is in memory.
            shutil.copy(new_model, serving_path)
            mark = len(watcher.seen)
            time.sleep(0.3)
            after_overwrite = {value for kind, value in watcher.seen[mark:] if kind != "no connection"}
        server.should_exit = True
        thread.join(TIMEOUT_S)
        listener.close()
    watcher.stop.set()
    watcher.join(TIMEOUT_S)
    assert after_overwrite and {version for _, version in after_overwrite} == {"0.0.1-test"}, after_overwrite
    statuses = {value[0] for kind, value in watcher.seen if kind != "no connection"}
    assert statuses == {200}, statuses  # never a 5xx, never a half-loaded answer
    answered = [value[1] for kind, value in watcher.seen if kind != "no connection"]
    # Old answers, then new ones: no mixing, and every answer names a whole model.
    first_new = answered.index("0.0.2-new")
    assert set(answered[:first_new]) == {"0.0.1-test"} and set(answered[first_new:]) == {"0.0.2-new"}
