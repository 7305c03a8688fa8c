"""Scores one exact ONNX file already gave one exact photo, kept so that scoring them again costs nothing.

`make model` scores each fold's fp32 model twice: in `make crossval`, and again in `make crossval-int8`,
where those scores are the reference the INT8 copies are held to. The second pass took about 10 of
crossval-int8's 18 minutes on 2 cores for 21,926 photos. A score is a function of the model's bytes and
the photo's bytes only, so both key the cache: a retrained or re-stamped model has other bytes and is
scored afresh, and a photo edited in place is too. Batching can move a score by a float32 rounding
(~1e-7), far below anything a threshold or a metric resolves.

One ``.npz`` per model: the photos' sha256 and their (N, categories) scores. It is rewritten whole
through a temporary file and a rename, so a run killed while saving leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

KEY_CHARS = 16  # 64 bits of the model's sha256 name its file: collisions are out of reach for a cache


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class ScoreCache:
    """The scores of one model file, by photo sha256, in ``folder``."""

    def __init__(self, folder: Path, model_path: Path) -> None:
        self.path = folder / f"scores-{file_sha256(model_path)[:KEY_CHARS]}.npz"
        self._scores: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path) as stored:
                self._scores = dict(zip(stored["photos"].tolist(), stored["scores"]))

    def scores(self, photos: Sequence[Path], compute: Callable[[list[int]], np.ndarray]) -> np.ndarray:
        """Every photo's scores: cached ones looked up, ``compute(indices)`` for the rest, which are then saved."""
        keys = [file_sha256(photo) for photo in photos]
        missing = [index for index, key in enumerate(keys) if key not in self._scores]
        if missing:
            self._scores.update(zip((keys[index] for index in missing), compute(missing)))
            self._save()
        if not keys:
            return compute([])  # an empty array of the model's own (0, categories) shape
        return np.stack([self._scores[key] for key in keys])

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".npz.partial")
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, photos=np.array(list(self._scores)), scores=np.stack(list(self._scores.values())))
            os.replace(temporary, self.path)
        except BaseException:
            os.unlink(temporary)
            raise
