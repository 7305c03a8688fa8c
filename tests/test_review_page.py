"""The reviewer page in a real browser: Debian's chromium driven by Playwright (tests/browser.py), against a
real uvicorn and a SQLite review database with two units (tests/review_world.py).

One server, one database and one browser serve the whole module; each test sends its own posts, under its own
account names, and finds them by those names.
"""

from __future__ import annotations

import re

import contextlib
from pathlib import Path

import httpx
import pytest

from flexguard.models.vocabulary import DECISION_WORDS
from browser import require_chromium

require_chromium()

from playwright.sync_api import Browser, Locator, Page, expect  # noqa: E402

# The fixtures are used by their names (browser, page, problems), not as imported.
from browser import PHONE, browser_fixture, opened_page, page_fixture, problems_fixture, rect  # noqa: E402, F401
from flexguard.service.review.store import Principal  # noqa: E402
from flexguard.service.review.tables import Role  # noqa: E402

from live_server import serving  # noqa: E402
from review_world import World, grey_photo, headers, make_world, photo_files, red_photo  # noqa: E402
from videos import GREY, RED, clip  # noqa: E402

PIXELS = 1.5  # how far a drawn box may be from where the fractions put it (borders, rounding)
RED_SIZE = (480, 320)  # review_world.red_photo()'s default size
UNIT, OTHER_UNIT = "dinkes", "bappeda"


# ---- fixtures: one server, database and browser for the module, a fresh context per test ----

@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(f"sqlite:///{tmp_path_factory.mktemp('review') / 'review.db'}")


@pytest.fixture(scope="module")
def base_url(world: World, tiny_model_path: Path):
    with serving(world.settings(tiny_model_path)) as (base, _app):
        yield base


# ---- helpers ----

def submit(base_url: str, world: World, account: str, caption: str, *photos: bytes, unit: str = UNIT) -> dict:
    """Send a post through the API with the unit's submit key, as an upload tool would."""
    answer = httpx.post(f"{base_url}/v1/submissions", headers=headers(world.submit[unit]),
                        data={"account": account, "caption": caption}, files=photo_files(*photos), timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.json()


def fetch(base_url: str, key: str, submission_id: str) -> dict:
    answer = httpx.get(f"{base_url}/v1/submissions/{submission_id}", headers=headers(key))
    assert answer.status_code == 200, answer.text
    return answer.json()


def sign_in(page: Page, key: str, reviewer: bool = True) -> None:
    """Sign in; a reviewer's key then loads the queue, any other key stops at the "who is this" check."""
    page.goto("/review")
    page.get_by_label("Kunci peninjau").fill(key)
    with page.expect_response("**/v1/me"):
        with page.expect_response("**/v1/submissions?status=pending*") if reviewer else contextlib.nullcontext():
            page.get_by_role("button", name="Masuk").click()
    expect(page.locator("#queue")).not_to_have_attribute("aria-busy", "true")


def queue_item(page: Page, account: str) -> Locator:
    return page.locator("#queue .queue-item", has_text=account)


def open_submission(page: Page, account: str) -> Locator:
    """Open a queued post; returns the detail section once its stored photos are shown."""
    queue_item(page, account).click()
    detail = page.locator("#detail")
    expect(detail.locator("#detail-title")).to_have_text(account)
    expect(detail.locator("#detail-title")).to_be_focused()
    expect(detail.locator("#photos")).not_to_have_attribute("aria-busy", "true")
    for image in detail.locator("img").all():
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    return detail


def photo_card(detail: Locator, position: int) -> Locator:
    return detail.locator(f'#photos > li[data-position="{position}"]')


# ---- tests ----

def test_review_page_is_served_with_its_policy(page: Page):
    review = page.request.get("/review")
    assert review.status == 200
    assert review.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in review.headers["content-security-policy"]
    assert "img-src 'self' blob:" in review.headers["content-security-policy"]
    script = page.request.get("/static/review.js")
    assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
    assert page.request.get("/static/review.html").status == 404


def test_reviewer_sees_the_flagged_photo_and_approves(page: Page, problems: list[str], base_url: str, world: World,
                                                       tmp_path: Path):
    posted = submit(base_url, world, "@dinkes.kunjungan", "Kunjungan kerja ke puskesmas", grey_photo(), red_photo())
    cleared = submit(base_url, world, "@dinkes.lolos", "Rapat koordinasi", grey_photo())
    elsewhere = submit(base_url, world, "@bappeda.rapat", "Musrenbang", red_photo(), unit=OTHER_UNIT)
    assert (posted["status"], cleared["status"], elsewhere["status"]) == ("pending", "cleared", "pending")

    sign_in(page, world.review[UNIT])
    expect(page.locator("html")).to_have_attribute("lang", "id")
    item = queue_item(page, "@dinkes.kunjungan")
    expect(item).to_contain_text("Kunjungan kerja ke puskesmas")
    expect(item).to_contain_text("2 foto, 1 ditandai")
    # Only this unit's pending posts: not the one cleared at once, not another unit's.
    expect(queue_item(page, "@dinkes.lolos")).to_have_count(0)
    expect(queue_item(page, "@bappeda.rapat")).to_have_count(0)

    detail = open_submission(page, "@dinkes.kunjungan")
    expect(item).to_have_attribute("aria-current", "true")
    expect(detail.locator(".fact-status")).to_have_text("Menunggu keputusan")
    expect(detail.locator("#detail-caption")).to_have_text("Kunjungan kerja ke puskesmas")

    # The whole post is shown: the photo the model allowed too, with no verdict to give on it.
    grey = photo_card(detail, 0)
    expect(grey.locator("img")).to_be_visible()
    expect(grey.locator(".decision")).to_have_text("Aman")
    expect(grey.locator("fieldset.photo-label")).to_have_count(0)

    # The flagged photo, fetched with the key, with its evidence box where the service put it.
    red_result = posted["photos"][1]
    red = photo_card(detail, 1)
    image = red.locator("img")
    expect(image).to_be_visible()
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == list(RED_SIZE)
    assert image.get_attribute("src").startswith("blob:")
    box = red.locator(".box")
    expect(box).to_have_count(1)
    expect(box).to_have_attribute("data-category", "luxury_car")
    expect(box.locator(".box-label")).to_contain_text("Mobil mewah")
    img, drawn = rect(image), rect(box)
    left, top, right, bottom = red_result["evidence"][0]["box"]
    assert drawn["x"] == pytest.approx(img["x"] + left * img["width"], abs=PIXELS)
    assert drawn["y"] == pytest.approx(img["y"] + top * img["height"], abs=PIXELS)
    assert drawn["width"] == pytest.approx((right - left) * img["width"], abs=PIXELS)
    assert drawn["height"] == pytest.approx((bottom - top) * img["height"], abs=PIXELS)
    expect(red.locator(".decision")).to_have_text(DECISION_WORDS[red_result["decision"]].id)
    expect(red.locator(".risk")).to_have_text(f"Risiko: {round(red_result['risk'] * 100)}%")
    expect(red.locator("figcaption")).to_contain_text("Mobil mewah")
    top_bar = red.locator(".bars > li").first
    expect(top_bar).to_have_attribute("data-category", "luxury_car")
    expect(top_bar.locator(".bar-name")).to_have_text("Mobil mewah")
    expect(red.locator(".bars > li")).to_have_count(len(red_result["categories"]))
    page.screenshot(path=str(tmp_path / "review.png"), full_page=True)

    page.get_by_label("Komentar").fill("Mobil dinas, boleh diunggah.")
    page.get_by_role("button", name="Setujui").click()
    expect(page.locator("#status")).to_have_text("Pengajuan disetujui.")
    expect(detail.locator(".fact-status")).to_have_text("Disetujui")
    expect(detail.locator(".decided-line")).to_contain_text("Disetujui oleh")
    expect(detail.locator(".decided-comment")).to_have_text("Komentar: Mobil dinas, boleh diunggah.")
    expect(page.locator("#decide-form")).to_be_hidden()
    expect(queue_item(page, "@dinkes.kunjungan")).to_have_count(0)
    decided = fetch(base_url, world.review[UNIT], posted["id"])
    assert (decided["status"], decided["comment"]) == ("approved", "Mobil dinas, boleh diunggah.")

    # The key lives in this tab's sessionStorage only, and a reload signs straight back in.
    assert page.evaluate("sessionStorage.getItem('flexguard.reviewKey')") == world.review[UNIT]
    assert world.review[UNIT] not in page.evaluate("JSON.stringify(localStorage)")
    page.reload()
    expect(page.locator("#review-key")).to_have_value(world.review[UNIT])
    expect(page.locator("#queue-count")).not_to_have_text("Masukkan kunci peninjau untuk melihat antrean unit Anda.")
    assert not problems


def test_rejecting_needs_a_comment(page: Page, problems: list[str], base_url: str, world: World):
    posted = submit(base_url, world, "@dinkes.jamtangan", "Hadiah ulang tahun", red_photo())
    sign_in(page, world.review[UNIT])
    detail = open_submission(page, "@dinkes.jamtangan")

    comment = page.get_by_label("Komentar")
    page.get_by_role("button", name="Tolak").click()
    expect(detail.get_by_role("alert")).to_have_text("Tulis alasan penolakan di kolom Komentar.")
    expect(comment).to_have_attribute("aria-invalid", "true")
    expect(comment).to_be_focused()
    assert fetch(base_url, world.review[UNIT], posted["id"])["status"] == "pending"

    comment.fill("Foto memamerkan barang mewah.")
    expect(detail.get_by_role("alert")).to_be_hidden()
    expect(comment).not_to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name="Tolak").click()
    expect(page.locator("#status")).to_have_text("Pengajuan ditolak.")
    expect(detail.locator(".fact-status")).to_have_text("Ditolak")
    expect(queue_item(page, "@dinkes.jamtangan")).to_have_count(0)
    decided = fetch(base_url, world.review[UNIT], posted["id"])
    assert (decided["status"], decided["comment"]) == ("rejected", "Foto memamerkan barang mewah.")
    assert not problems


def test_a_wrong_key_is_refused_and_a_unit_sees_only_its_own(page: Page, problems: list[str], base_url: str,
                                                              world: World):
    submit(base_url, world, "@bappeda.perjalanan", "Studi banding", red_photo(), unit=OTHER_UNIT)
    sign_in(page, "fgr_review_bukan-kunci", reviewer=False)
    expect(page.locator("#alert")).to_have_text(
        "Kunci peninjau salah atau sudah dicabut (401). Periksa kunci lalu masuk lagi.")
    expect(page.locator("#queue .queue-item")).to_have_count(0)
    expect(page.get_by_label("Kunci peninjau")).to_be_focused()

    # An upload tool's key is valid, but not for reviewing: said at sign-in, no queue shown.
    page.get_by_label("Kunci peninjau").fill(world.submit[OTHER_UNIT])
    page.get_by_role("button", name="Masuk").click()
    expect(page.locator("#alert")).to_contain_text("Ini kunci submit, bukan kunci peninjau")
    expect(page.locator("#queue .queue-item")).to_have_count(0)

    page.get_by_label("Kunci peninjau").fill(world.review[OTHER_UNIT])
    page.get_by_role("button", name="Masuk").click()
    expect(page.locator("#alert")).to_be_hidden()
    expect(queue_item(page, "@bappeda.perjalanan")).to_have_count(1)
    for account in page.locator("#queue .queue-account").all_text_contents():
        assert account.startswith("@bappeda."), f"{account} is another unit's"

    page.get_by_role("button", name="Lupakan kunci").click()
    expect(page.locator("#queue .queue-item")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('flexguard.reviewKey')") is None
    assert not problems


def test_english_on_request(page: Page, problems: list[str], base_url: str, world: World):
    submit(base_url, world, "@dinkes.bahasa", "Peresmian gedung", red_photo())
    photo_requests: list[str] = []
    page.on("request", lambda request: photo_requests.append(request.url) if "/photos/" in request.url else None)
    sign_in(page, world.review[UNIT])
    detail = open_submission(page, "@dinkes.bahasa")

    page.get_by_role("button", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text("Supervisor review")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    expect(page.get_by_label("Comment")).to_be_visible()
    expect(detail.locator(".fact-status")).to_have_text("Waiting for a decision")
    red = photo_card(detail, 0)
    expect(red.locator(".box-label")).to_contain_text("Luxury car")
    expect(red.locator('.bars > li[data-category="luxury_car"] .bar-name')).to_have_text("Luxury car")
    expect(queue_item(page, "@dinkes.bahasa")).to_contain_text("1 photo, 1 flagged")
    expect(red.locator("img")).to_be_visible()
    assert len(photo_requests) == 1, "the switch re-renders from the same blob: URL, without fetching again"

    # The choice is kept for the next visit, and Bahasa Indonesia is one click away.
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_role("button", name="Bahasa Indonesia").click()
    expect(page.locator("h1")).to_have_text("Tinjauan atasan")
    assert not problems


def test_a_decision_made_meanwhile_is_reported(page: Page, problems: list[str], base_url: str, world: World):
    posted = submit(base_url, world, "@dinkes.rebutan", "Liburan keluarga", red_photo())
    sign_in(page, world.review[UNIT])
    detail = open_submission(page, "@dinkes.rebutan")

    # A second reviewer of the unit rejects it while this page still shows it pending.
    deputy = world.store.create_key(Principal.command_line("test"), Role.REVIEW, UNIT, "wakil kepala").key
    answer = httpx.post(f"{base_url}/v1/submissions/{posted['id']}/reject", headers=headers(deputy),
                        json={"comment": "Terlalu mewah."})
    assert answer.status_code == 200, answer.text

    page.get_by_label("Komentar").fill("Tidak apa-apa.")
    page.get_by_role("button", name="Setujui").click()
    alert = detail.get_by_role("alert")
    # In the page's language; the service's English message ("already rejected by ...") only as a detail.
    expect(alert.locator(".message-text")).to_have_text("Pengajuan ini sudah diputuskan oleh peninjau lain (409).")
    expect(alert.locator("details.service-detail span[lang=en]")).to_contain_text("already rejected")
    assert "already rejected" not in alert.inner_text()
    # The page shows what the other reviewer decided, and the post has left the queue.
    expect(detail.locator(".fact-status")).to_have_text("Ditolak")
    expect(detail.locator(".decided-line")).to_contain_text("wakil kepala")
    expect(detail.locator(".decided-comment")).to_have_text("Komentar: Terlalu mewah.")
    expect(page.locator("#decide-form")).to_be_hidden()
    expect(queue_item(page, "@dinkes.rebutan")).to_have_count(0)
    assert fetch(base_url, world.review[UNIT], posted["id"])["comment"] == "Terlalu mewah."
    assert not problems


def test_fits_a_phone(browser: Browser, base_url: str, world: World, problems: list[str], tmp_path: Path):
    submit(base_url, world, "@dinkes.ponsel", "Dilihat dari ponsel " * 20, red_photo())
    with opened_page(browser, base_url, problems, **PHONE) as page:
        sign_in(page, world.review[UNIT])
        detail = open_submission(page, "@dinkes.ponsel")
        # Nothing sticks out sideways, and the photo stays inside its card.
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        card, image = rect(photo_card(detail, 0)), rect(photo_card(detail, 0).locator("img"))
        assert image["x"] >= card["x"] and image["x"] + image["width"] <= card["x"] + card["width"]
        # The evidence label is whole (nothing cut off) and on the photo.
        label = photo_card(detail, 0).locator(".box-label")
        expect(label).to_have_text(re.compile(r"^Mobil mewah \d+%$"))
        assert label.evaluate("node => node.scrollWidth <= node.clientWidth")
        drawn = rect(label)
        assert image["x"] - 0.5 <= drawn["x"] and drawn["x"] + drawn["width"] <= image["x"] + image["width"] + 0.5
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert not problems


def test_a_reviewer_marks_a_flag_as_a_false_alarm_and_another_as_correct(page: Page, problems: list[str],
                                                                         base_url: str, world: World):
    posted = submit(base_url, world, "@dinkes.label", "Acara kantor", grey_photo(), red_photo(),
                    red_photo((300, 300), (0, 0, 200, 200)))
    sign_in(page, world.review[UNIT])
    detail = open_submission(page, "@dinkes.label")
    # Bahasa Indonesia first; saying nothing is the default; the allowed photo takes no verdict.
    first, second = photo_card(detail, 1), photo_card(detail, 2)
    expect(first.get_by_role("group", name="Penilaian Anda atas tanda ini (boleh dilewati)")).to_be_visible()
    expect(first.get_by_label("Tidak menilai")).to_be_checked()
    expect(photo_card(detail, 0).locator("fieldset")).to_have_count(0)

    first.get_by_label("Bukan kemewahan (salah tanda)").check()
    expect(first.get_by_label("Bukan kemewahan (salah tanda)")).to_be_focused()  # the redraw keeps the focus
    # "Correct" asks what the photo shows, starting from what the model flagged.
    second.get_by_label("Benar, menampilkan kemewahan").check()
    shows = second.get_by_role("group", name="Yang terlihat di foto:")
    expect(shows.get_by_label("Mobil mewah")).to_be_checked()
    shows.get_by_label("Mobil mewah").uncheck()
    page.get_by_role("button", name="Setujui").click()
    expect(page.locator("#decide-alert")).to_contain_text("Foto 3: pilih kemewahan yang terlihat")
    shows.get_by_label("Wisata mewah").check()
    page.get_by_role("button", name="Setujui").click()
    expect(page.locator("#status")).to_have_text("Pengajuan disetujui.")

    decided = fetch(base_url, world.review[UNIT], posted["id"])
    assert [photo["review_label"] for photo in decided["photos"]] == [
        None, {"verdict": "false_alarm", "categories": []}, {"verdict": "correct", "categories": ["luxury_travel"]}]
    expect(first.locator(".review-label")).to_have_text("Penilaian peninjau: Bukan kemewahan (salah tanda)")
    expect(second.locator(".review-label")).to_have_text("Penilaian peninjau: Benar, menampilkan kemewahan (Wisata mewah)")
    assert not problems


def test_the_unit_summary_is_drawn_from_known_data(page: Page, problems: list[str], base_url: str, world: World,
                                                   tmp_path: Path):
    # A unit of its own, so that the module's other tests do not change its figures.
    operator = Principal.command_line("test")
    world.store.create_unit(operator, "dispar", "Dinas Pariwisata")
    submit_key = world.store.create_key(operator, Role.SUBMIT, "dispar").key
    review_key = world.store.create_key(operator, Role.REVIEW, "dispar", "Kepala Dinas Pariwisata").key

    def send(*photos: bytes) -> dict:
        answer = httpx.post(f"{base_url}/v1/submissions", headers=headers(submit_key), files=photo_files(*photos),
                            data={"account": "@dispar", "caption": "Promosi wisata"}, timeout=30)
        assert answer.status_code == 201, answer.text
        return answer.json()

    def decide(submission: dict, verb: str, verdict: str, categories: list[str]) -> None:
        body = {"comment": "alasan", "labels": [{"position": 0, "verdict": verdict, "categories": categories}]}
        answer = httpx.post(f"{base_url}/v1/submissions/{submission['id']}/{verb}", headers=headers(review_key), json=body)
        assert answer.status_code == 200, answer.text

    send(grey_photo())
    send(grey_photo())
    send(red_photo())
    decide(send(red_photo()), "approve", "false_alarm", [])
    decide(send(red_photo()), "reject", "correct", ["luxury_car"])

    sign_in(page, review_key)
    summary = page.locator("#summary")
    expect(summary.locator("h2")).to_have_text("Ringkasan unit (12 minggu terakhir)")
    this_week = summary.locator("svg").first.locator("rect[data-week]")
    expect(this_week).to_have_count(4)  # one segment per outcome that week, none for expired
    counts = {bar.get_attribute("data-outcome"): bar.get_attribute("data-count") for bar in this_week.all()}
    assert counts == {"cleared": "2", "pending": "1", "approved": "1", "rejected": "1"}
    expect(summary.locator('rect.chart-bar[data-category="luxury_car"]').first).to_have_attribute("data-value", "3")
    expect(summary.get_by_role("img", name=re.compile("^Salah tanda menurut penilaian peninjau"))).to_contain_text(
        "Mobil mewah: 50% (1/2)")
    expect(summary.locator(".summary-timing")).to_contain_text("(2 keputusan)")
    page.get_by_role("button", name="English").click()
    expect(summary.locator("h2")).to_have_text("Unit summary (last 12 weeks)")
    expect(summary.get_by_role("img", name=re.compile("^False alarms"))).to_contain_text("Luxury car: 50% (1/2)")
    page.screenshot(path=str(tmp_path / "summary.png"), full_page=True)
    assert not problems


def test_a_reviewer_sees_a_flagged_video_s_frames_with_their_times(page: Page, problems: list[str], base_url: str,
                                                                   world: World, tmp_path: Path):
    """A post with a video red from 3 s to 5 s: what is stored is a strip of its two flagged frames (never the
    video), shown with the time of each under it and the worst frame's evidence box on it."""
    video = clip([GREY] * 3 + [RED] * 2 + [GREY] * 3, fps=10)
    answer = httpx.post(f"{base_url}/v1/submissions", headers=headers(world.submit[UNIT]),
                        data={"account": "@dinkes.video", "caption": "Perjalanan dinas"},
                        files=[("files", ("reel.mp4", video, "video/mp4"))], timeout=30)
    assert answer.status_code == 201, answer.text
    posted = answer.json()
    [stored] = posted["photos"]
    assert posted["status"] == "pending" and stored["image"]["format"] == "MP4"
    assert [f["time_s"] for f in stored["video"]["flagged_frames"]] == [3.0, 4.0]
    kept = httpx.get(f"{base_url}{stored['url']}", headers=headers(world.review[UNIT]))
    assert kept.headers["content-type"] == "image/jpeg" and kept.content[:3] == b"\xff\xd8\xff"
    assert video[4:8] not in kept.content[:64] and len(kept.content) != len(video)

    sign_in(page, world.review[UNIT])
    detail = open_submission(page, "@dinkes.video")
    card = photo_card(detail, 0)
    expect(card.locator("h4")).to_have_text("Video 1")
    times = card.locator(".frame-times > li")
    expect(times).to_have_count(2)
    expect(times.nth(0)).to_contain_text("3 dtk")
    expect(times.nth(1)).to_contain_text("4 dtk")
    expect(card.locator(".video-facts")).to_contain_text("Videonya sendiri tidak disimpan")
    # Each time sits under its frame of the strip, and the worst frame's box lies within that frame.
    image = card.locator(".video-strip img")
    img = rect(image)
    for item, frame in zip(times.all(), stored["video"]["flagged_frames"]):
        left, _, right, _ = frame["strip_box"]
        assert rect(item)["x"] == pytest.approx(img["x"] + left * img["width"], abs=PIXELS)
        assert rect(item)["y"] >= img["y"] + img["height"] - PIXELS
    box = rect(card.locator(".box"))
    worst_left, _, worst_right, _ = stored["video"]["worst_frame"]["strip_box"]
    assert img["x"] + worst_left * img["width"] - PIXELS <= box["x"]
    assert box["x"] + box["width"] <= img["x"] + worst_right * img["width"] + PIXELS
    page.screenshot(path=str(tmp_path / "review-video.png"), full_page=True)
    assert not problems
