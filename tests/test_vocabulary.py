"""One vocabulary: the decisions, categories and error codes people read come from one table.

``flexguard.models.vocabulary`` (with the taxonomy's names) is that table. These tests fail when the
API, the pages or the scan report say something else, or keep a copy of the words of their own.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flexguard.models.taxonomy import CATEGORIES
from flexguard.models.vocabulary import DECISION_WORDS, DECISIONS, ERROR_WORDS, ErrorCode, words_script, words_table
from flexguard.service.app import create_app
from flexguard.service.errors import CODES
from flexguard.service.settings import Settings
from test_scan import _scan_ok
from test_scan_report import scanned  # noqa: F401  (fixture)

STATIC = Path(__file__).resolve().parents[1] / "service" / "static"


@pytest.fixture(scope="module")
def client(tiny_model_path):
    with TestClient(create_app(Settings(model_path=tiny_model_path, threads=1, decode_threads=1))) as started:
        yield started


def test_every_code_has_words_in_both_languages():
    assert set(ERROR_WORDS) == set(ErrorCode)
    assert set(CODES) <= set(ErrorCode)
    assert all(words.en and words.id and words.en != words.id for words in ERROR_WORDS.values())
    assert list(DECISION_WORDS) == list(DECISIONS)


def test_the_pages_get_the_table_and_keep_no_copy(client):
    served = client.get("/static/words.js")
    assert served.status_code == 200 and served.text == words_script()
    table = json.loads(served.text.split("=", 1)[1].rstrip().rstrip(";"))
    assert table == words_table()
    for page in ("index.html", "review.html"):
        text = (STATIC / page).read_text(encoding="utf-8")
        assert text.index("words.js") < text.index("common.js"), page
    scripts = "".join(path.read_text(encoding="utf-8") for path in STATIC.glob("*.js"))
    for words in (*DECISION_WORDS.values(), *ERROR_WORDS.values()):
        assert words.id not in scripts and words.en not in scripts, words
    for category in CATEGORIES:
        assert category.name_id not in scripts and category.name_en not in scripts


def test_the_api_speaks_the_table(client, encoder):
    from PIL import Image

    model = client.get("/v1/model").json()
    assert [(c["id"], c["name_en"], c["name_id"]) for c in model["categories"]] == [
        (c.id, c.name_en, c.name_id) for c in CATEGORIES]
    photo = encoder(Image.new("RGB", (64, 64), (255, 0, 0)), "PNG")
    (result,) = client.post("/v1/score", files=[("files", ("a.png", photo, "image/png"))]).json()["results"]
    assert result["decision"] in DECISIONS
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["Decision"]["enum"] == [d.value for d in DECISIONS]


def test_the_scan_report_speaks_the_table(scanned, tmp_path):  # noqa: F811
    _, argv = scanned
    report = tmp_path / "report.html"
    _scan_ok([*argv, "--report", str(report)])
    page = html.unescape(report.read_text(encoding="utf-8"))
    for decision, words in DECISION_WORDS.items():
        assert f'value="{decision}"' in page
        assert re.search(rf'<span class="l-id">{re.escape(words.id)}</span><span class="l-en">{re.escape(words.en)}</span>', page)
    assert "Izinkan" not in page and "Blokir" not in page  # the report's old, second wording
