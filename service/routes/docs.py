"""The API reference at ``/docs`` (Swagger UI), offline: its files come from the service itself.

FastAPI's default page loads Swagger UI from a CDN, which an on-premise, offline deployment cannot
reach: the page stays blank. The ``fastapi-offline`` package ships the bundle (Swagger UI 5, which
reads the OpenAPI 3.1 document FastAPI writes, under Apache-2.0; the package under MIT); only its
files are used, served from ``/static/docs/`` (public, like the other static files), while ``/docs``
and ``/openapi.json`` stay behind the API keys when keys are on. ReDoc is not offered: its bundle
still fetches its logo from redocly's CDN.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

OPENAPI_URL = "/openapi.json"
TITLE = "flexguard API"
FAVICON = "/static/favicon.svg"
ASSETS_PREFIX = "/static/docs/"
BUNDLES = files("fastapi_offline").joinpath("static")
# The only files served, with their content types.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
# They change only with the installed package, so a browser may keep them a day.
ASSET_CACHE = "max-age=86400"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL, title=TITLE, swagger_js_url=f"{ASSETS_PREFIX}swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PREFIX}swagger-ui.css", swagger_favicon_url=FAVICON, oauth2_redirect_url=None,
    )


@router.get(ASSETS_PREFIX + "{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, "Not Found")
    return Response(BUNDLES.joinpath(name).read_bytes(), media_type=media_type, headers={"Cache-Control": ASSET_CACHE})
