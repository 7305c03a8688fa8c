"""Scoring for asyncio callers: decode in a thread pool, run the model in the batcher, build results.

The REST app needs the engine's ``score`` without ever decoding or running the model on the event
loop, and with photos from concurrent requests sharing model calls. This module wires the three
steps together with the engine's own ``prepare`` and ``result``, so the service scores a photo
exactly as ``Engine.score`` does. No HTTP in here.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from flexguard.models.policy import Policy

from .batching import BatchObserver, Batcher
from .engine import Engine, ImageError, ImageScore, Timing, available_cores
from .video import PreparedVideo

_MS_PER_S = 1000.0


class Scorer:
    """An engine, a bounded decode pool and a batcher; ``close`` when done."""

    def __init__(
        self,
        engine: Engine,
        max_batch: int,
        max_wait_s: float,
        decode_threads: int | None = None,
        on_batch: BatchObserver | None = None,
    ):
        self.engine = engine
        # Bounded, unlike the framework's shared thread pool: each decode holds a full photo in memory,
        # and more decodes at once than cores only adds memory, not speed.
        self._pool = ThreadPoolExecutor(decode_threads or available_cores(), thread_name_prefix="flexguard-decode")
        self._batcher = Batcher(engine.run, max_batch, max_wait_s, on_batch)

    async def score(self, photos: Sequence[bytes | bytearray | ImageError], policy: Policy | None = None) -> list[ImageScore | ImageError]:
        """Score photos and videos in input order; one that cannot be read gets its ``ImageError`` in its place
        (as does an ``ImageError`` given in place of the bytes: a file refused while it was read).

        ``policy`` decides (default: the model's own thresholds for every category).
        """
        policy = policy or Policy(self.engine.info.thresholds)
        return list(await asyncio.gather(*(self._score_one(photo, policy) for photo in photos)))

    async def _score_one(self, photo: bytes | bytearray | ImageError, policy: Policy) -> ImageScore | ImageError:
        if isinstance(photo, ImageError):
            return photo
        loop = asyncio.get_running_loop()
        try:
            prepared = await loop.run_in_executor(self._pool, self.engine.prepare, photo)
        except ImageError as error:
            return error
        if isinstance(prepared, PreparedVideo):
            return await self._score_video(prepared, policy)
        # Each photo joins a batch as soon as it is decoded, so decoding overlaps the model's work.
        out = await self._batcher.submit(prepared.tensor)
        scores, cams = out.rows
        timing = Timing(prepared.decode_ms, out.queue_s * _MS_PER_S, out.run_s * _MS_PER_S, out.batch_size)
        return await loop.run_in_executor(self._pool, self.engine.result, prepared, scores, cams, policy, timing)

    async def _score_video(self, video: PreparedVideo, policy: Policy) -> ImageScore:
        """A video's frames join the batcher like photos (sharing calls with concurrent requests)."""
        loop = asyncio.get_running_loop()
        outs = await asyncio.gather(*(self._batcher.submit(frame.tensor) for frame in video.frames))
        timing = Timing(
            video.decode_ms,
            max(out.queue_s for out in outs) * _MS_PER_S,
            # Frames of one video mostly share calls: count each call once.
            sum({out.call: out.run_s for out in outs}.values()) * _MS_PER_S,
            max(out.batch_size for out in outs),
        )
        return await loop.run_in_executor(self._pool, self.engine.video_result, video, [out.rows for out in outs],
                                          policy, timing)

    async def warm_up(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self.engine.warm_up)

    def close(self) -> None:
        """Let queued photos finish, then stop the batcher and the decode threads."""
        self._batcher.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
