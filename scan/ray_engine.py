"""Scoring on a Ray cluster through Ray Data (``flexguard scan --engine ray``), for scans one machine
cannot finish in time. Needs the optional extra: ``pip install 'flexguard[ray]'``.

This process still walks the folders and keeps the output file, exactly as with the local engine;
Ray only scores. The paths to score become a dataset, and ``map_batches`` runs them through a pool of
actors that each load the engine once and read, decode and score their batches with the same
``rows`` functions as the local engine. Rows come back as JSON text (nested fields cross Arrow
untouched, floats exactly as the engine rounded them) and are appended as they stream in.

Paths rather than ``ray.data.read_binary_files``: a read task that meets an unreadable file fails its
whole block, where the scan must give that one file an error row and go on; and reading inside the
actor keeps photo bytes out of Ray's object store. So every node must see the files at the same path
(a shared filesystem); docs/scan.md covers clusters and object storage.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from flexguard.inference.engine import Engine
from .rows import ModelIdentity, ScanError, load, score_loaded

# Ray schedules one actor per CPU; more onnxruntime threads per actor would only fight over cores.
ACTOR_CPUS = 1
ACTOR_THREADS = 1
ROW_COLUMN = "row"
PATH_COLUMN = "path"


class _ScoreActor:
    """One engine per actor, loaded once; scores a batch of paths into JSON rows."""

    def __init__(self, model_bytes: bytes):
        # The model travels with the actor, so a --model file does not have to exist on every node.
        # The engine takes a path; onnxruntime has read the file by the time the constructor returns.
        with tempfile.NamedTemporaryFile(suffix=".onnx") as handle:
            handle.write(model_bytes)
            handle.flush()
            self.engine = Engine(handle.name, threads=ACTOR_THREADS)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        loaded = [load(self.engine, str(path)) for path in batch[PATH_COLUMN]]
        return {ROW_COLUMN: [json.dumps(row) for row in score_loaded(self.engine, loaded)]}


class RayScorer:
    def __init__(self, model_path: str | os.PathLike, address: str | None, workers: int | None, batch_size: int):
        try:
            import ray
            import ray.data
        except ImportError:
            raise ScanError("--engine ray needs Ray: pip install 'flexguard[ray]'") from None
        self._ray = ray
        # Loaded here too, to check the model before anything is written and to learn its identity.
        self.model = ModelIdentity.from_info(Engine(model_path, threads=ACTOR_THREADS).info)
        self.model_bytes = Path(model_path).read_bytes()
        self.batch_size = batch_size
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            try:
                # Without an address Ray starts on this machine, limited to --workers CPUs if given.
                ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                         logging_level=logging.WARNING, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise ScanError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {error}") from None
        # The scan draws its own progress; Ray Data's bars and chatter would garble it. Its failures
        # still surface, as exceptions from the dataset.
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        self.actors = workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // ACTOR_CPUS)

    def rows(self, paths: Iterable[str]) -> Iterator[dict[str, Any]]:
        """One row per path, in whatever order the actors finish."""
        items = [{PATH_COLUMN: path} for path in paths]
        if not items:
            return
        dataset = self._ray.data.from_items(items).map_batches(
            _ScoreActor,
            fn_constructor_args=(self.model_bytes,),
            batch_size=self.batch_size,
            batch_format="numpy",
            compute=self._ray.data.ActorPoolStrategy(size=min(self.actors, len(items))),
            num_cpus=ACTOR_CPUS,
        )
        for record in dataset.iter_rows():
            yield json.loads(record[ROW_COLUMN])

    def close(self) -> None:
        if self.started_ray:
            self._ray.shutdown()
