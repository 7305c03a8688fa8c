"""The try-it page in a real browser: Debian's chromium driven by Playwright (tests/browser.py), against a
real uvicorn.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flexguard.models.vocabulary import DECISION_WORDS, ERROR_WORDS, Decision, ErrorCode
from browser import require_chromium

require_chromium()

from playwright.sync_api import Browser, FileChooser, Page, expect  # noqa: E402

# The fixtures are used by their names (browser, page, problems), not as imported.
from browser import PHONE, browser_fixture, opened_page, page_fixture, problems_fixture, rect  # noqa: E402, F401
from flexguard.service.settings import Settings  # noqa: E402
from live_server import serving  # noqa: E402
from review_world import grey_photo as grey_png  # noqa: E402
from review_world import red_photo as red_png  # noqa: E402
from videos import GREY, RED, clip  # noqa: E402

# A red "car" on a grey street: the tiny model (tests/conftest.py) scores red high on luxury_car, and
# the evidence box covers only part of the photo. A plain grey photo scores low on everything.
RED_SIZE = (480, 320)
RED_RECT = (24, 60, 300, 290)
GREY_SIZE = (300, 400)  # portrait, unlike the red one


def red_photo() -> dict:
    return {"name": "merah.png", "mimeType": "image/png", "buffer": red_png(RED_SIZE, RED_RECT)}


def grey_photo() -> dict:
    return {"name": "abu-abu.png", "mimeType": "image/png", "buffer": grey_png(GREY_SIZE)}


def broken_photo() -> dict:
    return {"name": "rusak.jpg", "mimeType": "image/jpeg", "buffer": b"this is not a photo at all"}


# ---- fixtures: one server and one browser for the module, a fresh context per test ----

@pytest.fixture(scope="module")
def base_url(tiny_model_path: Path):
    with serving(Settings(model_path=tiny_model_path)) as (base, _app):
        yield base


def cards(page: Page):
    return page.locator("#results > li.card")


def choose(page: Page, photos: list[dict]) -> dict:
    """Put photos on the file input, wait for the cards, return the service's JSON answer."""
    with page.expect_response("**/v1/score") as answer:
        page.locator("#files").set_input_files(photos)
    expect(page.locator("#results > li.card:not(.pending)")).to_have_count(len(photos))
    expect(page.locator("#results")).not_to_have_attribute("aria-busy", "true")
    return answer.value.json()


# ---- tests ----

def test_static_files_are_served_with_their_types(page: Page, base_url: str):
    index = page.request.get("/")
    assert index.status == 200
    assert index.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in index.headers["content-security-policy"]
    for name, kind in (("common.js", "text/javascript"), ("app.js", "text/javascript"), ("style.css", "text/css")):
        response = page.request.get(f"/static/{name}")
        assert response.status == 200 and response.headers["content-type"].startswith(kind)
    for name in ("index.html", "nope.js", "..%2Fpage.py"):
        assert page.request.get(f"/static/{name}").status == 404


def test_photos_scored_in_both_languages(page: Page, problems: list[str], tmp_path: Path):
    page.goto("/")
    # Bahasa Indonesia first.
    expect(page.locator("html")).to_have_attribute("lang", "id")
    expect(page.get_by_text("Foto tidak disimpan.")).to_be_visible()
    expect(page.get_by_label("Pilih foto")).to_be_attached()
    lang = page.get_by_role("button", name="English")
    lang.click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_text("Photos are not stored.")).to_be_visible()
    expect(page.get_by_role("button", name="Bahasa Indonesia")).to_be_visible()

    answer = choose(page, [red_photo(), grey_photo()])
    red_result, grey_result = answer["results"]
    assert red_result["ok"] and grey_result["ok"]
    assert max(red_result["categories"], key=lambda c: c["score"])["id"] == "luxury_car"
    assert red_result["evidence"] and not grey_result["evidence"]

    red, grey = cards(page).nth(0), cards(page).nth(1)
    expect(red.locator("h3")).to_have_text("merah.png")
    expect(red.locator(".decision")).to_have_text(DECISION_WORDS[red_result["decision"]].en)
    expect(grey.locator(".decision")).to_have_text(DECISION_WORDS[Decision.ALLOW].en)
    expect(red.locator(".risk")).to_contain_text(f"Risk: {round(red_result['risk'] * 100)}%")
    expect(page.locator("#status")).to_have_text("Done: 2 photos scored.")
    expect(page.locator("#model")).to_have_text(f"Model: {answer['model']['name']} {answer['model']['version']}")

    # One bar per category, named from the response, filled in proportion to the score.
    for card, result in ((red, red_result), (grey, grey_result)):
        bars = card.locator(".bars > li")
        expect(bars).to_have_count(len(result["categories"]))
        for category in result["categories"]:
            bar = card.locator(f'.bars > li[data-category="{category["id"]}"]')
            expect(bar.locator(".bar-name")).to_have_text(category["name_en"])
            fill, track = rect(bar.locator(".bar-fill")), rect(bar.locator(".bar-track"))
            assert fill["width"] == pytest.approx(category["score"] * track["width"], abs=1.5)
    top_bar = red.locator(".bars > li").first
    expect(top_bar).to_have_attribute("data-category", "luxury_car")
    expect(top_bar).to_have_class("bar flagged")

    # The evidence box is drawn on the photo, where the service put it.
    image = red.locator("img")
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == list(RED_SIZE)
    box = red.locator(".box")
    expect(box).to_have_count(1)
    expect(box).to_be_visible()
    expect(box).to_have_attribute("data-category", "luxury_car")
    expect(box.locator(".box-label")).to_contain_text("Luxury car")
    img, drawn = rect(image), rect(box)
    left, top, right, bottom = red_result["evidence"][0]["box"]
    assert drawn["x"] >= img["x"] - 0.5 and drawn["y"] >= img["y"] - 0.5
    assert drawn["x"] + drawn["width"] <= img["x"] + img["width"] + 0.5
    assert drawn["y"] + drawn["height"] <= img["y"] + img["height"] + 0.5
    assert drawn["x"] == pytest.approx(img["x"] + left * img["width"], abs=1.5)
    assert drawn["y"] == pytest.approx(img["y"] + top * img["height"], abs=1.5)
    assert drawn["width"] == pytest.approx((right - left) * img["width"], abs=1.5)
    assert drawn["height"] == pytest.approx((bottom - top) * img["height"], abs=1.5)
    expect(grey.locator(".box")).to_have_count(0)
    expect(red.locator("figcaption")).to_contain_text("Luxury car")

    # Back to Bahasa Indonesia: the same results, re-labelled, category names from the response.
    page.get_by_role("button", name="Bahasa Indonesia").click()
    expect(page.locator("html")).to_have_attribute("lang", "id")
    expect(red.locator(".decision")).to_have_text(DECISION_WORDS[red_result["decision"]].id)
    expect(grey.locator(".decision")).to_have_text(DECISION_WORDS[Decision.ALLOW].id)
    expect(red.locator(".box-label")).to_contain_text("Mobil mewah")
    expect(red.locator('.bars > li[data-category="luxury_car"] .bar-name')).to_have_text("Mobil mewah")
    expect(page.locator("#status")).to_have_text("Selesai: 2 foto dinilai.")
    expect(page.locator("#results")).to_have_attribute("aria-live", "polite")

    page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
    assert not problems


def test_broken_file_shows_an_error_entry(page: Page, problems: list[str], tmp_path: Path):
    page.goto("/")
    answer = choose(page, [broken_photo(), grey_photo()])
    broken_result = answer["results"][0]
    assert broken_result["ok"] is False
    broken = cards(page).nth(0)
    expect(broken).to_have_class("card failed")
    expect(broken.locator("h3")).to_have_text("rusak.jpg")
    # The page's language from the words table; the service's English message only as a folded detail.
    code = broken_result["error"]["code"]
    expect(broken.locator(".error-title")).to_have_text(ERROR_WORDS[ErrorCode(code)].id)
    detail = broken.locator(".error-message details.service-detail")
    expect(detail.locator("summary")).to_have_text("Rincian dari layanan (bahasa Inggris)")
    expect(detail).to_contain_text(broken_result["error"]["message"])
    expect(detail.locator("span[lang=en]")).to_be_hidden()
    assert broken_result["error"]["message"] not in broken.inner_text()  # what is on screen is one language
    page.get_by_role("button", name="English").click()
    expect(broken.locator(".error-title")).to_have_text(ERROR_WORDS[ErrorCode(code)].en)
    page.get_by_role("button", name="Bahasa Indonesia").click()
    expect(broken.locator(".decision")).to_have_count(0)
    expect(broken.locator(".placeholder")).to_be_visible()  # the browser can't show it either
    expect(cards(page).nth(1).locator(".decision")).to_have_text("Aman")
    expect(page.locator("#status")).to_have_text("Selesai: 1 dari 2 foto dinilai, 1 tidak dapat dinilai.")
    page.screenshot(path=str(tmp_path / "broken.png"), full_page=True)
    assert not problems


def test_keyboard_picks_photos_on_a_phone(browser: Browser, base_url: str, problems: list[str], tmp_path: Path):
    with opened_page(browser, base_url, problems, **PHONE) as page:
        # Playwright asks chromium to intercept file choosers when the first "filechooser" listener is
        # added, without waiting for the answer: subscribing inside expect_file_chooser() right before the
        # key press races it, and a chooser that headless chromium opens before interception is on
        # never reaches the test (a 10 s timeout, seen once in CI). Subscribing before the page loads
        # leaves the whole navigation for the subscription to land.
        choosers: list[FileChooser] = []
        page.on("filechooser", lambda chooser: choosers.append(chooser))
        page.goto("/")
        for _ in range(6):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "files":
                break
        assert page.evaluate("document.activeElement.id") == "files", "the file picker is not reachable by Tab"
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Space")
        assert choosers == [chooser.value] and chooser.value.is_multiple()
        with page.expect_response("**/v1/score"):
            chooser.value.set_files([red_photo(), grey_photo()])
        expect(page.locator("#results > li.card:not(.pending)")).to_have_count(2)
        # Nothing sticks out sideways on a phone.
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        img, card = rect(cards(page).first.locator("img")), rect(cards(page).first)
        assert img["x"] >= card["x"] and img["x"] + img["width"] <= card["x"] + card["width"]
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert not problems


def test_api_key_is_sent_and_401_is_explained(page: Page, problems: list[str]):
    seen_keys: list[str | None] = []

    def refuse_without_key(route):
        key = route.request.headers.get("x-api-key")
        seen_keys.append(key)
        if key != "rahasia":
            route.fulfill(status=401, content_type="application/json",
                          body=json.dumps({"detail": "missing or wrong API key"}))
        else:
            route.continue_()

    page.route("**/v1/score", refuse_without_key)
    page.goto("/")
    with page.expect_response("**/v1/score"):
        page.locator("#files").set_input_files([grey_photo()])
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Kunci API diperlukan atau salah (401)")
    expect(cards(page)).to_have_count(0)
    expect(page.locator("#key-box")).to_have_attribute("open", "")
    expect(page.get_by_label("Kunci API", exact=True)).to_be_focused()

    page.get_by_role("button", name="English").click()
    expect(alert).to_contain_text("An API key is needed")

    page.get_by_label("API key", exact=True).fill("rahasia")
    choose(page, [grey_photo()])
    assert seen_keys == [None, "rahasia"]
    expect(alert).to_be_hidden()
    expect(cards(page).first.locator(".decision")).to_have_text("Allow")
    # The key lives in this tab's sessionStorage only.
    assert page.evaluate("sessionStorage.getItem('flexguard.apiKey')") == "rahasia"
    assert "rahasia" not in page.evaluate("JSON.stringify(localStorage)")
    page.reload()
    expect(page.locator("#api-key")).to_have_value("rahasia")
    assert not problems


def test_a_refused_request_is_said_in_the_page_s_language(page: Page, problems: list[str]):
    message = "64 photos at most in one request, got 65"
    page.route("**/v1/score", lambda route: route.fulfill(
        status=413, content_type="application/json",
        body=json.dumps({"error": {"code": "too_many_files", "message": message}, "detail": message})))
    page.goto("/")
    with page.expect_response("**/v1/score"):
        page.locator("#files").set_input_files([grey_photo()])
    alert = page.get_by_role("alert")
    words = ERROR_WORDS[ErrorCode.TOO_MANY_FILES]
    expect(alert.locator(".message-text")).to_have_text(f"{words.id.rstrip('.')} (413).")
    expect(alert.locator("details.service-detail")).to_contain_text(message)
    assert message not in alert.inner_text()  # folded away until asked for
    alert.locator("summary").click()
    expect(alert.locator("details.service-detail span[lang=en]")).to_have_text(message)
    page.get_by_role("button", name="English").click()
    expect(alert.locator(".message-text")).to_have_text(f"{words.en.rstrip('.')} (413).")
    assert not problems


# The longest category name, in boxes at the photo's edges and narrower than their labels.
NARROW_BOXES = [[0.0, 0.0, 0.08, 0.1], [0.92, 0.3, 1.0, 0.4], [0.45, 0.85, 0.5, 1.0], [0.3, 0.4, 0.7, 0.6]]


def test_evidence_labels_fit_on_a_phone(browser: Browser, base_url: str, problems: list[str], tmp_path: Path):
    def answer_with_narrow_boxes(route):
        real = route.fetch().json()
        result = real["results"][0]
        result["evidence"] = [{"category": "jewelry_watch", "score": 1.0, "box": box} for box in NARROW_BOXES]
        route.fulfill(response=None, status=200, content_type="application/json", body=json.dumps(real))

    with opened_page(browser, base_url, problems, **PHONE) as page:
        page.route("**/v1/score", answer_with_narrow_boxes)
        page.goto("/")
        choose(page, [red_photo()])
        card = cards(page).first
        image = card.locator("img")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        labels = card.locator(".box-label")
        expect(labels).to_have_count(len(NARROW_BOXES))
        expect(labels.first).to_have_text("Perhiasan atau jam tangan mewah 100%")
        photo = rect(image)
        for index in range(len(NARROW_BOXES)):
            label = labels.nth(index)
            # Nothing hidden: the words are all laid out, and the label stays on the photo.
            assert label.evaluate("node => node.scrollWidth <= node.clientWidth && node.scrollHeight <= node.clientHeight")
            drawn = rect(label)
            assert photo["x"] - 0.5 <= drawn["x"] and drawn["x"] + drawn["width"] <= photo["x"] + photo["width"] + 0.5
            assert photo["y"] - 0.5 <= drawn["y"] and drawn["y"] + drawn["height"] <= photo["y"] + photo["height"] + 0.5
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        page.screenshot(path=str(tmp_path / "labels.png"), full_page=True)
    assert not problems


def test_a_video_is_scored_and_its_flagged_seconds_shown(page: Page, problems: list[str], tmp_path: Path):
    """A video picked on the page: previewed as a video, scored, and its flagged frames said with their times
    and shown in the strip from the answer (a data: image, allowed by the page's policy)."""
    page.goto("/")
    video = {"name": "reel.mp4", "mimeType": "video/mp4", "buffer": clip([GREY] * 3 + [RED] * 2 + [GREY] * 3, fps=10)}
    answer = choose(page, [video])
    [result] = answer["results"]
    assert result["video"]["flagged_frames"]
    card = cards(page).nth(0)
    expect(card.locator("video")).to_have_count(1)
    expect(card.locator(".decision")).to_have_text(DECISION_WORDS[result["decision"]].id)
    expect(card.locator(".video-facts")).to_contain_text("bingkai terburuk pada 3 dtk")
    expect(card.locator(".video-facts")).to_contain_text("Ditandai pada 3, 4 dtk")
    strip = card.locator(".video-facts img.strip")
    page.wait_for_function("img => img.complete && img.naturalHeight === 96", arg=strip.element_handle())
    page.screenshot(path=str(tmp_path / "video.png"), full_page=True)
    assert not problems
