"""Dynamic batching without HTTP: the Batcher on a fake model, and the Scorer pipeline on the tiny model."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from PIL import Image

from flexguard.models.metadata import Thresholds
from flexguard.models.policy import Policy
from flexguard.inference.batching import Batcher, BatcherClosed, BatchOutput
from flexguard.inference.engine import Engine, ImageError, ImageScore
from flexguard.inference.pipeline import Scorer

MAX_BATCH = 8
# Long enough that concurrent submissions all arrive within it on a busy 2-core machine.
WAIT_S = 0.05
TIMEOUT_S = 10.0


class FakeModel:
    """Doubles its input and returns its per-row sum as a second output; records every call's size."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False):
        self.calls: list[int] = []
        self.delay_s = delay_s
        self.fail = fail

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(batch))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model failed")
        return batch * 2, batch.reshape(len(batch), -1).sum(axis=1)


def tensor(value: float) -> np.ndarray:
    return np.full((2, 3), value, dtype=np.float32)


@pytest.fixture
def make_batcher():
    made: list[Batcher] = []

    def make(model, max_batch=MAX_BATCH, max_wait_s=WAIT_S, on_batch=None) -> Batcher:
        batcher = Batcher(model, max_batch, max_wait_s, on_batch)
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close(TIMEOUT_S)


async def submit_all(batcher: Batcher, values) -> list[BatchOutput]:
    return await asyncio.gather(*(batcher.submit(tensor(v)) for v in values))


def test_concurrent_submits_share_model_calls(make_batcher):
    model = FakeModel()
    observed: list[tuple[int, float]] = []
    batcher = make_batcher(model, on_batch=lambda size, seconds: observed.append((size, seconds)))
    values = list(range(20))
    outputs = asyncio.run(submit_all(batcher, values))
    # Fewer, larger calls, none over the limit, every input run exactly once.
    assert len(model.calls) < len(values)
    assert max(model.calls) == MAX_BATCH
    assert sum(model.calls) == len(values)
    assert [size for size, _ in observed] == model.calls
    # Each caller gets its own rows back.
    for value, output in zip(values, outputs):
        doubled, total = output.rows
        np.testing.assert_array_equal(doubled, tensor(value) * 2)
        assert total == pytest.approx(value * 6)
        assert 1 <= output.batch_size <= MAX_BATCH
        assert output.queue_s >= 0 and output.run_s >= 0


def test_a_lone_input_waits_at_most_max_wait(make_batcher):
    model = FakeModel()
    batcher = make_batcher(model, max_wait_s=WAIT_S)
    start = time.perf_counter()
    output = batcher.submit_nowait(tensor(1)).result(TIMEOUT_S)
    assert output.batch_size == 1 and model.calls == [1]
    assert time.perf_counter() - start < WAIT_S + 1.0  # not stuck waiting for company


def test_no_wait_still_batches_what_queued_meanwhile(make_batcher):
    model = FakeModel(delay_s=0.05)
    batcher = make_batcher(model, max_wait_s=0.0)
    futures = [batcher.submit_nowait(tensor(v)) for v in range(10)]
    assert [f.result(TIMEOUT_S).rows[1] for f in futures] == pytest.approx([v * 6 for v in range(10)])
    # The first call may run alone; the rest queued while it ran and go in together.
    assert len(model.calls) < 10


def test_errors_reach_every_caller_of_the_batch_and_the_worker_survives(make_batcher):
    model = FakeModel(fail=True)
    batcher = make_batcher(model)

    async def scenario():
        return await asyncio.gather(*(batcher.submit(tensor(v)) for v in range(3)), return_exceptions=True)

    errors = asyncio.run(scenario())
    assert all(isinstance(e, RuntimeError) and str(e) == "model failed" for e in errors)
    model.fail = False
    assert batcher.submit_nowait(tensor(5)).result(TIMEOUT_S).rows[1] == pytest.approx(30)


def test_mismatched_shapes_fail_their_batch_only(make_batcher):
    batcher = make_batcher(FakeModel(), max_wait_s=0.2)
    good = batcher.submit_nowait(tensor(1))
    odd = batcher.submit_nowait(np.zeros((5,), dtype=np.float32))
    with pytest.raises(ValueError):
        odd.result(TIMEOUT_S)
    with pytest.raises(ValueError):
        good.result(TIMEOUT_S)
    assert batcher.submit_nowait(tensor(2)).result(TIMEOUT_S).rows[1] == pytest.approx(12)


def test_cancelled_inputs_are_not_run(make_batcher):
    release = threading.Event()
    model = FakeModel()

    def slow_model(batch):
        release.wait(TIMEOUT_S)
        return model(batch)

    batcher = make_batcher(slow_model, max_batch=1, max_wait_s=0.0)
    first = batcher.submit_nowait(tensor(1))  # occupies the worker
    time.sleep(0.05)
    cancelled = batcher.submit_nowait(tensor(2))
    kept = batcher.submit_nowait(tensor(3))
    assert cancelled.cancel()
    release.set()
    assert first.result(TIMEOUT_S).rows[1] == pytest.approx(6)
    assert kept.result(TIMEOUT_S).rows[1] == pytest.approx(18)
    assert model.calls == [1, 1]


def test_close_finishes_queued_inputs_then_refuses_new_ones():
    model = FakeModel(delay_s=0.02)
    batcher = Batcher(model, MAX_BATCH, WAIT_S)
    futures = [batcher.submit_nowait(tensor(v)) for v in range(5)]
    batcher.close(TIMEOUT_S)
    assert [f.result(0).rows[1] for f in futures] == pytest.approx([v * 6 for v in range(5)])
    with pytest.raises(BatcherClosed):
        batcher.submit_nowait(tensor(1))
    batcher.close(TIMEOUT_S)  # a second close is harmless
    assert not batcher._worker.is_alive()


@pytest.mark.parametrize(("max_batch", "max_wait_s"), [(0, 0.01), (4, -0.1)])
def test_invalid_settings(max_batch, max_wait_s):
    with pytest.raises(ValueError):
        Batcher(FakeModel(), max_batch, max_wait_s)


# --- the Scorer pipeline on the tiny model ------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_model_path) -> Engine:
    return Engine(tiny_model_path, threads=1)


@pytest.fixture
def scorer(engine):
    batches: list[int] = []
    made = Scorer(engine, MAX_BATCH, WAIT_S, decode_threads=2, on_batch=lambda size, _: batches.append(size))
    made.batches = batches
    yield made
    made.close()


def photos(encoder, count: int) -> list[bytes]:
    return [encoder(Image.new("RGB", (80 + i, 60), (255 - 10 * i, 60, 60)), "PNG") for i in range(count)]


def test_scorer_matches_the_engine(scorer, engine, encoder, red_jpeg_bytes):
    sources = [*photos(encoder, 5), b"broken", red_jpeg_bytes]
    got = asyncio.run(scorer.score(sources))
    want = engine.score(sources)
    assert len(got) == len(want) == len(sources)
    for a, b in zip(got, want):
        if isinstance(b, ImageError):
            assert isinstance(a, ImageError) and a.code == b.code
            continue
        assert isinstance(a, ImageScore)
        assert a.decision == b.decision and a.evidence == b.evidence
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
        assert (a.width, a.height, a.format) == (b.width, b.height, b.format)
        assert a.timing.batch_size >= 1 and a.timing.decode_ms > 0


def test_scorer_applies_thresholds(scorer, red_jpeg_bytes):
    (result,) = asyncio.run(scorer.score([red_jpeg_bytes], Policy(Thresholds(0.99, 1.0))))
    assert result.decision == "allow" and result.evidence == []


def test_concurrent_requests_share_model_calls(scorer, encoder):
    requests = [photos(encoder, 3) for _ in range(4)]

    async def all_at_once():
        return await asyncio.gather(*(scorer.score(r) for r in requests))

    results = asyncio.run(all_at_once())
    assert [len(r) for r in results] == [3] * 4
    assert sum(scorer.batches) == 12
    assert len(scorer.batches) < 12 and max(scorer.batches) <= MAX_BATCH


def test_scorer_warm_up(scorer):
    asyncio.run(scorer.warm_up())
    assert scorer.batches == []  # the warm-up is not a user's batch


@pytest.fixture(scope="module")
def red_jpeg_bytes(encoder) -> bytes:
    return encoder(Image.new("RGB", (400, 300), (255, 0, 0)), "JPEG", quality=95)
