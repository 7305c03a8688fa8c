"""The naive peer: the photo-scoring service most people would write first, for comparison only.

FastAPI with an ``UploadFile``, a full Pillow decode, the usual torchvision transforms and eager
PyTorch, one photo per forward pass. Same network as flexguard (``FlexguardNet(4)``; ImageNet
weights and an untrained head, which costs the same), same input size, same normalisation, same
multipart field name (``files``), so the same request works against both. Nothing here is
deliberately slow: torch uses every core, inference runs under ``inference_mode``, the model is
warmed up at start. What it lacks is what flexguard adds: JPEG draft decoding, a resize that shrinks
by an integer factor first, onnxruntime with graph optimisations, dynamic batching, and decoding
off the event loop.

    .venv/bin/python -m uvicorn naive_peer:app --app-dir benchmarks --port 8001
"""

from __future__ import annotations

import io
import os
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, File, UploadFile
from PIL import Image
from torchvision import transforms

from flexguard.training.backbone import FlexguardNet

INPUT_SIZE = 260
# EfficientNet-Lite's TF-style input, (x - 127) / 128, written as torchvision's Normalize on [0, 1].
MEAN = [127.0 / 255.0] * 3
STD = [128.0 / 255.0] * 3


def make_transform() -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize(INPUT_SIZE),
        transforms.CenterCrop(INPUT_SIZE),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


transform = make_transform()
model: FlexguardNet | None = None


@asynccontextmanager
async def lifespan(app: FastAPI):
    global model
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = FlexguardNet(4).eval()
    with torch.inference_mode():  # first-call set-up before the first request
        model(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
    yield


app = FastAPI(title="naive peer", lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@app.post("/v1/score")
async def score(files: UploadFile = File(...)) -> dict:
    data = await files.read()
    image = Image.open(io.BytesIO(data)).convert("RGB")
    batch = transform(image).unsqueeze(0)
    with torch.inference_mode():
        scores, _ = model(batch)
    return {"scores": [round(float(s), 4) for s in scores[0]]}
