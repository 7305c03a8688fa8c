"""The REST app: a thin HTTP client of the inference engine.

Decoding and the model run in a worker thread so the event loop only moves bytes.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import FastAPI, File, HTTPException, UploadFile
from starlette.concurrency import run_in_threadpool

from flexguard import __version__

from .engine import Engine, ImageError, ImageScore
from .page import router as page_router
from .settings import Settings, get_settings


def _result_json(result: ImageScore | ImageError, categories) -> dict:
    if isinstance(result, ImageError):
        return {"ok": False, "error": {"code": result.code, "message": result.message}}
    return {
        "ok": True,
        "risk": result.risk,
        "decision": result.decision,
        "categories": [
            {"id": c.id, "name_en": c.name_en, "name_id": c.name_id, "score": result.scores[c.id]} for c in categories
        ],
        "evidence": [asdict(e) for e in result.evidence],
        "image": {"width": result.width, "height": result.height, "format": result.format},
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = Engine(settings.model_path, threads=settings.threads, max_pixels=settings.max_pixels)
        yield

    app = FastAPI(title="flexguard", version=__version__, lifespan=lifespan,
                  description="Scores photos for displays of wealth before they are posted.")

    app.include_router(page_router)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/score")
    async def score(files: list[UploadFile] = File(..., description="one or more photos")) -> dict:
        if len(files) > settings.max_files:
            raise HTTPException(413, f"at most {settings.max_files} photos per request")
        payloads = []
        for upload in files:
            data = await upload.read(settings.max_bytes + 1)
            if len(data) > settings.max_bytes:
                raise HTTPException(413, f"{upload.filename!r} is over {settings.max_bytes} bytes")
            payloads.append(data)
        engine: Engine = app.state.engine
        results = await run_in_threadpool(engine.score, payloads)
        return {
            "model": {"name": engine.info.name, "version": engine.info.version},
            "results": [_result_json(r, engine.info.categories) for r in results],
        }

    return app
