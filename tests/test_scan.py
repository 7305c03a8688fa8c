"""``flexguard scan`` on the shipped model: walking, row schema, both output formats, options, resuming.

The tree builder and row readers here are shared by the other test_scan_* modules (imported as
``test_scan``; pytest puts this folder on sys.path).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from flexguard.cli import main
from flexguard.models import shipped_model_path
from flexguard.scan.journal import Journal, ScanParams, sidecar_path
from flexguard.scan.rows import ROW_KEYS, ModelIdentity, csv_header, from_csv_record
from flexguard.scan.walk import looks_like_image
from videos import GREY, RED, clip

SEED = 7
USAGE_ERROR = 2
FLAGGED_STATUS = 1


def noise_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photo-like image: smooth colour blobs (upsampled noise) with a little grain."""
    coarse = (rng.random((max(2, height // 16), max(2, width // 16), 3)) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.integers(-8, 9, smooth.shape, dtype=np.int16)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def make_tree(root: Path, seed: int = SEED) -> dict[str, dict]:
    """A messy folder like an auditor's export. Returns what each file that must get a row should show.

    Keys are absolute paths; values are ``{"ok": True, "format": ...}`` or ``{"ok": False, "error_code": ...}``.
    """
    pillow_heif.register_heif_opener()
    rng = np.random.default_rng(seed)
    (root / "2023" / "lebaran").mkdir(parents=True)
    (root / "2024").mkdir()
    (root / ".thumbnails").mkdir()
    expected: dict[str, dict] = {}

    def photo(relative: str, fmt: str, size: tuple[int, int], pillow_format: str | None = None) -> Path:
        path = root / relative
        noise_photo(rng, *size).save(path, format=pillow_format or fmt)
        expected[str(path)] = {"ok": True, "format": fmt}
        return path

    jpeg = photo("2023/lebaran/IMG_0001.JPG", "JPEG", (320, 240))
    photo("2023/lebaran/IMG_0002.jpg", "JPEG", (240, 320))
    photo("2023/screenshot.png", "PNG", (200, 150))
    photo("2024/iphone.heic", "HEIF", (256, 192))
    photo("2024/no-extension", "JPEG", (160, 120))
    # Broken files still get a row.
    data = jpeg.read_bytes()
    (root / "2024" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    expected[str(root / "2024" / "truncated.jpg")] = {"ok": False, "error_code": "decode_failed"}
    (root / "2024" / "empty.jpg").write_bytes(b"")
    expected[str(root / "2024" / "empty.jpg")] = {"ok": False, "error_code": "empty_file"}
    os.symlink("deleted.jpg", root / "2024" / "dangling.jpg")
    expected[str(root / "2024" / "dangling.jpg")] = {"ok": False, "error_code": "read_failed"}
    # A GIF header with nothing after it: sniffed as an image, Pillow cannot read it.
    (root / "2024" / "broken.gif").write_bytes(b"GIF89a" + b"\x00" * 4)
    expected[str(root / "2024" / "broken.gif")] = {"ok": False, "error_code": "unsupported_format"}
    # Left out, and counted: not images (whatever the name says), hidden, a link loop, a pipe.
    (root / "notes.txt").write_text("kwitansi\n")
    (root / "2023" / "fake.jpg").write_text("<html>not a photo</html>")
    # Videos get one row each, whatever their name; a video header with nothing after it cannot be decoded.
    (root / "2023" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 32)
    expected[str(root / "2023" / "clip.mp4")] = {"ok": False, "error_code": "decode_failed"}
    (root / "2024" / "reel").write_bytes(clip([GREY, RED, GREY], fps=5))
    expected[str(root / "2024" / "reel")] = {"ok": True, "format": "MP4", "video": True}
    noise_photo(rng, 64, 64).save(root / ".hidden.jpg")
    noise_photo(rng, 64, 64).save(root / ".thumbnails" / "t.jpg")
    os.symlink("../..", root / "2023" / "lebaran" / "loop")
    os.mkfifo(root / "2024" / "pipe")
    return expected


SKIPPED_LINE = "skipped: folders reached again through a link 1, hidden 2, not a photo or video 2, not a regular file 1"


def read_jsonl(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), "a path appears twice"
    return by_path


def read_csv(path: Path) -> dict[str, dict]:
    category_ids = ModelIdentity.from_json(json.loads(sidecar_path(path).read_text())["params"]["model"]).category_ids
    with open(path, newline="", encoding="utf-8") as handle:
        records = list(csv.reader(handle, strict=True))
    assert records[0] == csv_header(category_ids)
    assert all(len(record) == len(records[0]) for record in records)
    by_path = {record[0]: from_csv_record(record, category_ids) for record in records[1:]}
    assert len(by_path) == len(records) - 1, "a path appears twice"
    return by_path


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("scan") / "export"
    root.mkdir()
    return root, make_tree(root)


@pytest.fixture(scope="module")
def jsonl_scan(tree, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("out") / "scan.jsonl"
    return out, _scan_ok([str(tree[0]), "--out", str(out)])


def _scan_ok(argv: list[str]) -> str:
    """Run ``flexguard scan`` in-process and return what it printed on stdout."""
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["scan", *argv]) == 0
    return stdout.getvalue()


def _check_rows(rows: dict[str, dict], expected: dict[str, dict], category_ids) -> None:
    assert set(rows) == set(expected)
    for path, want in expected.items():
        row = rows[path]
        assert list(row) == list(ROW_KEYS)
        assert row["model_version"]
        assert len(row["model_weights_sha256"]) == 64
        if want["ok"]:
            assert row["ok"] is True and row["error_code"] is None and row["error_message"] is None
            assert row["format"] == want["format"]
            assert row["width"] > 0 and row["height"] > 0
            assert row["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
            assert row["size"] == Path(path).stat().st_size
            assert list(row["scores"]) == list(category_ids)
            assert row["risk"] == max(row["scores"].values())
            assert row["decision"] in ("allow", "review", "block")
            assert all(set(e) == {"category", "score", "box"} and len(e["box"]) == 4 for e in row["evidence"])
            if want.get("video"):  # 3 s at 5 frames a second, one frame scored a second
                assert row["video_duration_s"] == 3.0 and row["video_worst_time_s"] in (0.0, 1.0, 2.0)
                assert row["video_worst_frame"] == round(row["video_worst_time_s"] * 5)
                assert isinstance(row["video_flagged_times"], list)
            else:
                assert row["video_duration_s"] is row["video_worst_time_s"] is row["video_flagged_times"] is None
        else:
            assert row["ok"] is False and row["error_code"] == want["error_code"], (path, row)
            assert row["error_message"]
            assert row["risk"] is row["decision"] is row["scores"] is row["evidence"] is row["format"] is None


def test_every_file_is_accounted_for_in_jsonl(tree, jsonl_scan):
    root, expected = tree
    out, printed = jsonl_scan
    category_ids = ModelIdentity.from_json(json.loads(sidecar_path(out).read_text())["params"]["model"]).category_ids
    rows = read_jsonl(out)
    _check_rows(rows, expected, category_ids)
    # Sizes and hashes are taken for files that were read, even when they cannot be decoded.
    assert rows[str(root / "2024" / "empty.jpg")]["size"] == 0
    assert rows[str(root / "2024" / "truncated.jpg")]["sha256"] is not None
    assert rows[str(root / "2024" / "dangling.jpg")]["size"] is None
    assert f"{out}: {len(expected)} rows" in printed
    assert "errors: decode_failed 2, empty_file 1, read_failed 1, unsupported_format 1" in printed
    assert SKIPPED_LINE in printed
    assert "scored, 5 errors)" in printed and "files/s" in printed


def test_csv_is_valid_and_holds_the_same_rows(tree, jsonl_scan, tmp_path):
    root, expected = tree
    out = tmp_path / "scan.csv"
    _scan_ok([str(root), "--out", str(out)])
    rows = read_csv(out)
    assert rows == read_jsonl(jsonl_scan[0])
    # And the rows a CSV reader sees without flexguard's help are plain text columns.
    with open(out, newline="", encoding="utf-8") as handle:
        first = next(csv.DictReader(handle))
    assert {"path", "sha256", "risk", "decision", "score_luxury_car", "evidence", "error_code"} <= set(first)


@pytest.mark.parametrize("workers, batch_size", [("1", "1"), ("3", "4")])
def test_rows_and_their_order_do_not_depend_on_workers_or_batch_size(tree, jsonl_scan, tmp_path, workers, batch_size):
    # Each worker scores its own batches side by side with the others; rows still come out in walk order,
    # and a photo's scores do not depend on which batch it was in.
    out = tmp_path / "scan.jsonl"
    _scan_ok([str(tree[0]), "--out", str(out), "--workers", workers, "--batch-size", batch_size])
    assert list(read_jsonl(out).items()) == list(read_jsonl(jsonl_scan[0]).items())


def test_default_batch_size_depends_on_where_the_model_runs(tmp_path):
    from flexguard.scan.runner import DEFAULT_BATCH_SIZE, ScanOptions

    assert ScanOptions(roots=[tmp_path], out=tmp_path / "o.jsonl").batch_size == ScanOptions.LOCAL_BATCH_SIZE
    assert ScanOptions(roots=[tmp_path], out=tmp_path / "o.jsonl", server="http://x").batch_size == DEFAULT_BATCH_SIZE
    assert ScanOptions(roots=[tmp_path], out=tmp_path / "o.jsonl", engine="ray").batch_size == DEFAULT_BATCH_SIZE
    assert ScanOptions(roots=[tmp_path], out=tmp_path / "o.jsonl", batch_size=5).batch_size == 5


def test_rerun_of_a_finished_scan_adds_nothing(tree, jsonl_scan):
    out, _ = jsonl_scan
    before = out.read_bytes()
    printed = _scan_ok([str(tree[0]), "--out", str(out)])
    assert out.read_bytes() == before
    assert "scanned 0 files" in printed and f"({len(tree[1])} from earlier runs)" in printed


def test_include_and_exclude_globs(tree, tmp_path):
    root, _ = tree
    out = tmp_path / "jpegs.jsonl"
    printed = _scan_ok([str(root), "--out", str(out), "--include", "*.jpg", "--exclude", "lebaran/"])
    names = sorted(Path(p).name for p in read_jsonl(out))
    # Case-insensitive (IMG_0001.JPG is not "*.jpg" to fnmatch), lebaran/ pruned, fake.jpg is not a photo.
    assert names == ["dangling.jpg", "empty.jpg", "truncated.jpg"]
    assert "excluded by --include/--exclude" in printed
    only = tmp_path / "only.jsonl"
    _scan_ok([str(root), "--out", str(only), "--include", "2023/lebaran/*"])
    assert sorted(Path(p).name for p in read_jsonl(only)) == ["IMG_0001.JPG", "IMG_0002.jpg"]


def test_files_and_overlapping_folders_on_the_command_line(tree, tmp_path):
    root, expected = tree
    out = tmp_path / "overlap.jsonl"
    photo = root / "2023" / "screenshot.png"
    _scan_ok([str(root), str(root / "2023"), str(photo), "--out", str(out)])
    assert set(read_jsonl(out)) == set(expected)


def test_non_utf8_file_name_round_trips_and_resumes(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    name = os.fsdecode(b"kantor-caf\xe9.jpg")  # a Latin-1 name from an old zip export
    noise_photo(np.random.default_rng(SEED), 96, 64).save(folder / name, format="JPEG")
    for suffix in (".jsonl", ".csv"):
        out = tmp_path / f"scan{suffix}"
        _scan_ok([str(folder), "--out", str(out)])
        printed = _scan_ok([str(folder), "--out", str(out)])
        assert "scanned 0 files" in printed, suffix
    assert str(folder / name) in read_jsonl(tmp_path / "scan.jsonl")


def test_options_that_differ_from_the_file_are_refused_until_force(tree, tmp_path, capsys):
    root, expected = tree
    out = tmp_path / "scan.jsonl"
    _scan_ok([str(root), "--out", str(out), "--include", "2024/*"])
    capsys.readouterr()
    assert main(["scan", str(root), "--out", str(out)]) == USAGE_ERROR
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "other options (--include 2024/*, now (none))" in error and "--force" in error
    _scan_ok([str(root), "--out", str(out), "--force"])
    assert set(read_jsonl(out)) == set(expected)


def test_a_file_not_written_by_scan_is_not_overwritten(tree, tmp_path, capsys):
    out = tmp_path / "precious.jsonl"
    out.write_text('{"path": "mine"}\n')
    assert main(["scan", str(tree[0]), "--out", str(out)]) == USAGE_ERROR
    assert "not written by flexguard scan" in capsys.readouterr().err
    assert out.read_text() == '{"path": "mine"}\n'


@pytest.mark.parametrize(
    "argv, message",
    [
        (["missing-folder", "--out", "{tmp}/o.jsonl"], "no such file or folder: missing-folder"),
        (["{tmp}", "--out", "{tmp}/nope/o.jsonl"], "folder of --out does not exist"),
        (["{tmp}", "--out", "{tmp}"], "is a folder"),
        (["{tmp}", "--out", "{tmp}/o.jsonl", "--server", "http://127.0.0.1:9", "--engine", "ray"], "choose one"),
        (["{tmp}", "--out", "{tmp}/o.jsonl", "--ray-address", "auto"], "--ray-address needs --engine ray"),
        (["{tmp}", "--out", "{tmp}/o.jsonl", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["{tmp}", "--out", "{tmp}/o.jsonl", "--report", "{tmp}/o.jsonl"], "must be different files"),
        (["{tmp}", "--out", "{tmp}/o.jsonl", "--model", "{tmp}/none.onnx"], "model file not found"),
        (["{tmp}", "--out", "{tmp}/o.jsonl", "--server", "ftp://x"], "http:// or https://"),
        (["{tmp}", "--out", "{tmp}/o.jsonl", "--server", "http://127.0.0.1:9"], "http://127.0.0.1:9 failed"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["scan", *(a.format(tmp=tmp_path) for a in argv)]) == USAGE_ERROR
    error = capsys.readouterr().err
    assert error.startswith("flexguard scan: error: ") and error.count("\n") == 1, error
    assert message in error


def test_fail_on(tiny_model_path, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (120, 90), (127, 127, 127)).save(folder / "grey.png")
    Image.new("RGB", (120, 90), (200, 20, 20)).save(folder / "dark-red.png")  # review on the tiny model
    base = [str(folder), "--out", str(tmp_path / "o.jsonl"), "--model", str(tiny_model_path)]
    assert main(["scan", *base, "--fail-on", "block"]) == 0
    with pytest.raises(SystemExit) as stopped:
        main(["scan", *base, "--fail-on", "review"])
    assert stopped.value.code == FLAGGED_STATUS
    assert "1 files at or over review" in capsys.readouterr().err


def test_sniffing():
    assert looks_like_image(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    assert looks_like_image(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00")
    assert looks_like_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    assert looks_like_image(b"BM" + b"\x00" * 12 + (40).to_bytes(4, "little"))
    assert not looks_like_image(b"BMW 320i spesifikasi lengkap")
    assert not looks_like_image(b"RIFF\x00\x00\x00\x00AVI LIST")
    assert not looks_like_image(b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00")
    assert not looks_like_image(b"%PDF-1.7")


# --- The journal on its own: torn tails of both formats are cut, the rest is kept. ---

MODEL = ModelIdentity("m", "1", "ab" * 32, ())


def _row(path: str, message: str = "boom") -> dict:
    return {key: None for key in ROW_KEYS} | {"path": path, "ok": False, "error_code": "decode_failed",
                                                "error_message": message, "model_version": "1",
                                                "model_weights_sha256": "ab" * 32}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_torn_last_row_is_cut_and_the_rest_kept(tmp_path, suffix):
    out = tmp_path / f"o{suffix}"
    params = ScanParams(("/photos",), (), (), MODEL)
    # A message with a newline makes the CSV record span two lines, the hard case for the repair.
    rows = [_row("/photos/a.jpg"), _row("/photos/b.jpg", "two\nlines"), _row("/photos/c.jpg")]
    with Journal(out, params) as journal:
        for row in rows:
            journal.append(row)
    whole = out.read_bytes()
    # Torn in the last row, and (CSV) inside the quoted two-line field of the row before it.
    cuts = [len(whole) - 5]
    if suffix == ".csv":
        cuts.append(whole.index(b"two\n") + len(b"two\n"))
    for cut in cuts:
        out.write_bytes(whole[:cut])
        with Journal(out, params) as journal:
            assert journal.repaired
            kept = set(journal.paths)
        assert "/photos/a.jpg" in kept and "/photos/c.jpg" not in kept
        assert whole.startswith(out.read_bytes())


def test_a_damaged_row_in_the_middle_is_an_error_not_a_guess(tmp_path):
    out = tmp_path / "o.jsonl"
    params = ScanParams(("/photos",), (), (), MODEL)
    with Journal(out, params) as journal:
        journal.append(_row("/photos/a.jpg"))
    out.write_bytes(b"garbage\n" + out.read_bytes())
    with pytest.raises(ValueError, match="line 1 is not a scan row"):
        Journal(out, params)


def test_two_scans_cannot_write_one_file(tmp_path):
    out = tmp_path / "o.jsonl"
    params = ScanParams(("/photos",), (), (), MODEL)
    with Journal(out, params):
        with pytest.raises(ValueError, match="being written by another flexguard scan"):
            Journal(out, params)


def test_shipped_model_is_what_scans_use_by_default(jsonl_scan):
    from flexguard.inference.engine import Engine

    recorded = json.loads(sidecar_path(jsonl_scan[0]).read_text())["params"]["model"]
    assert recorded["version"] == Engine(shipped_model_path(), threads=1).info.version
