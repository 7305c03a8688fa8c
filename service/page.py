"""The try-it page: one static, offline page (no build step, no CDN) served at ``/``."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
STATIC = files(__package__).joinpath("static")


@router.get("/", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    return HTMLResponse(STATIC.joinpath("index.html").read_text(encoding="utf-8"))
