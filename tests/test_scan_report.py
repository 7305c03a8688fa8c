"""The reviewer's HTML report: self-contained, sorted by risk, bounded, and working in a real browser.

Photos are scored with the tiny hand-weighted model from conftest.py, whose decisions are known
(red filling the frame: block as a luxury car, green: block as a designer bag, a red object on
grey: review, grey: allow), so the report
has flagged photos without depending on what the trained model thinks of synthetic images.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

import flexguard.scan.report as scan_report
from test_scan import _scan_ok

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GREY = (127, 127, 127)
PHOTO_SIZE = (400, 300)
# Full frame: the tiny model's block. As an object on grey (a partial evidence box): review.
OBJECT_SIZE, OBJECT_AT = (340, 250), (30, 25)
# name: (colour, fills the frame, decision on the tiny model)
PHOTOS = {
    "ferrari.png": ((255, 0, 0), True, "block"),
    "tas.png": ((0, 255, 0), True, "block"),
    "mobil-merah.png": ((255, 0, 0), False, "review"),
    "kantor.png": (GREY, True, "allow"),
    "rapat.png": ((120, 120, 130), True, "allow"),
}


def _photo(path: Path, colour: tuple[int, int, int], full_frame: bool) -> None:
    image = Image.new("RGB", PHOTO_SIZE, colour if full_frame else GREY)
    if not full_frame:
        image.paste(Image.new("RGB", OBJECT_SIZE, colour), OBJECT_AT)
    image.save(path)


@pytest.fixture
def scanned(tiny_model_path, tmp_path) -> tuple[Path, list[str]]:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, (colour, full_frame, _) in PHOTOS.items():
        _photo(folder / name, colour, full_frame)
    (folder / "rusak.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    return folder, [str(folder), "--out", str(tmp_path / "scan.jsonl"), "--model", str(tiny_model_path)]


def _cards(page: str) -> list[dict[str, str]]:
    pattern = r'<article class="card \w+" data-decision="(\w+)" data-categories="([\w ]*)" data-risk="([\d.]+)">(.*?)</article>'
    return [{"decision": d, "categories": c, "risk": r, "body": b} for d, c, r, b in re.findall(pattern, page, re.S)]


def test_report_is_self_contained_sorted_by_risk_and_lists_errors(scanned, tmp_path):
    folder, argv = scanned
    report = tmp_path / "report.html"
    printed = _scan_ok([*argv, "--report", str(report)])
    assert f"report: {report}" in printed
    page = report.read_text(encoding="utf-8")
    # Nothing to fetch: every picture is inline, no external script, style or font.
    assert re.findall(r'src="(?!data:image/jpeg;base64,)', page) == []
    assert "http://" not in page and "https://" not in page and "<link" not in page
    cards = _cards(page)
    assert [card["decision"] for card in cards] == ["block", "block", "review", "allow", "allow"]
    risks = [float(card["risk"]) for card in cards]
    assert risks == sorted(risks, reverse=True)
    flagged = [card for card in cards if card["decision"] != "allow"]
    assert all(card["body"].count('class="box"') == 1 for card in flagged)
    assert all('class="box"' not in card["body"] for card in cards if card["decision"] == "allow")
    assert "Mobil mewah" in page and "Luxury car" in page
    assert str(folder / "rusak.jpg") in page.split('id="errors"')[1]


def test_report_size_is_bounded(scanned, tmp_path, monkeypatch):
    monkeypatch.setattr(scan_report, "MAX_FLAGGED", 2)
    monkeypatch.setattr(scan_report, "ALLOWED_SAMPLE", 1)
    report = tmp_path / "report.html"
    _scan_ok([*scanned[1], "--report", str(report)])
    page = report.read_text(encoding="utf-8")
    assert [card["decision"] for card in _cards(page)] == ["block", "block", "allow"]
    assert "Showing the 2 highest-risk of 3 flagged photos." in page
    assert "Plus a sample of 1 of 2 allowed photos, as a check." in page


def test_a_photo_changed_since_the_scan_is_not_shown_with_stale_boxes(scanned, tmp_path):
    folder, argv = scanned
    _scan_ok(argv)
    _photo(folder / "ferrari.png", GREY, True)  # replaced after it was scored
    report = tmp_path / "report.html"
    _scan_ok([*argv, "--report", str(report)])  # nothing left to scan: the report alone is written
    ferrari = next(card for card in _cards(report.read_text(encoding="utf-8")) if "ferrari.png" in card["body"])
    assert "file changed since the scan" in ferrari["body"] and "<img" not in ferrari["body"]


def _browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (make system-deps installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (it is in the test extra)")
    return sync_api


def test_report_in_headless_chromium_shows_and_filters_the_flagged_photos(scanned, tmp_path):
    sync_api = _browser()
    report = tmp_path / "report.html"
    _scan_ok([*scanned[1], "--report", str(report)])
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            # Offline: any request other than the file itself would fail the test.
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.as_uri())
            assert all(url.startswith(("file://", "data:")) for url in requests), requests
            cards = page.locator(".card")
            assert cards.count() == len(PHOTOS)
            assert page.locator(".card:visible").count() == len(PHOTOS)
            assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert page.locator(".card.block:visible .box").count() == 2
            assert page.locator(".card.review:visible .box").count() == 1
            # The flagged photos come first, highest risk first.
            assert page.locator(".card").first.get_attribute("data-decision") == "block"

            page.uncheck("input[name=decision][value=allow]")
            page.uncheck("input[name=decision][value=review]")
            assert page.locator(".card:visible").count() == 2
            assert page.locator("#shown").inner_text() == f"2 / {len(PHOTOS)}"
            page.select_option("#category", "designer_bag")
            visible = page.locator(".card:visible")
            assert visible.count() == 1 and "tas.png" in visible.inner_text()

            # Bahasa Indonesia first; English on request.
            assert page.locator("h1").inner_text() == "flexguard: Laporan pemindaian foto"
            assert "Tas bermerek" in visible.inner_text()
            page.click("button[data-set-lang=en]")
            assert page.locator("h1").inner_text() == "flexguard: Photo scan report"
            assert "Designer bag" in visible.inner_text() and "Tas bermerek" not in visible.inner_text()
        finally:
            browser.close()
