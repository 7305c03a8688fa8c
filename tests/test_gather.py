"""The data team's gathering tool: provenance, near-duplicates, the holdout guard, sheets, removals.

A small git repository made here stands in for a public source; a stand-in guard script answers
for the holdout guard, so these tests need neither the network nor ../shared.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flexguard.cli import main
from flexguard.datasets import gather, load_manifest
from flexguard.datasets.contact_sheets import SHEET_COLUMNS, SHEET_ROWS
from flexguard.datasets.near_duplicates import open_upright

SOURCE = "someone/toko-tas"
HIDDEN = "hidden/set"


def _photo(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (640, 480), stripes: int = 0) -> None:
    """A flat colour with white stripes (so photos' hashes differ) and faint noise (so files are photo-sized)."""
    image = Image.new("RGB", size, colour)
    for stripe in range(stripes):
        image.paste((255, 255, 255), (stripe * 60, 0, stripe * 60 + 20 + stripe * 5, size[1]))
    noise = np.random.default_rng(len(path.name)).integers(-12, 12, (size[1], size[0], 3))
    image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95)


@pytest.fixture
def source(tmp_path) -> Path:
    """A git repository with 3 distinct photos, a resized copy of one, a thumbnail, a non-image and a licence."""
    work = tmp_path / "repo"
    _photo(work / "img/tas-hitam.jpg", (20, 20, 20), stripes=2)
    _photo(work / "img/tas-merah.jpg", (200, 30, 30), stripes=4)
    _photo(work / "img/ransel.jpg", (30, 90, 200), stripes=6)
    Image.open(work / "img/tas-merah.jpg").resize((560, 420)).save(work / "img/copy-of-merah.jpg", quality=90)
    _photo(work / "img/icon.png", (0, 255, 0), size=(150, 150))
    (work / "README.md").write_text("toko tas\n")
    (work / "LICENSE").write_text("MIT License\n\nCopyright ...\n")
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "photos"], check=True)
    return work / ".git"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Batches under tmp_path, and a guard that refuses only HIDDEN."""
    guard = tmp_path / "guard.py"
    # Refuses the source HIDDEN, and a photo whose path ends in $MATCHED_PHOTO (a stand-in for a matched photo).
    guard.write_text(
        "import os, sys\n"
        f"hidden = {HIDDEN!r} in sys.argv\n"
        "ending = os.environ.get('MATCHED_PHOTO')\n"
        "matched = [a for a in sys.argv[2:] if ending and a.endswith(ending)]\n"
        "for a in matched: print(f'photo matches the hidden evaluation set (0 bits), do not use: {a}')\n"
        "sys.exit(1 if hidden or matched else 0)\n"
    )
    monkeypatch.setattr(gather, "GUARD", guard)
    monkeypatch.setattr(gather, "BATCHES_DIR", tmp_path / "batches")
    monkeypatch.setenv("FLEXGUARD_CACHE", str(tmp_path / "cache"))


def test_candidates_drop_small_photos_and_near_duplicates_and_draw_numbered_sheets(source, tmp_path):
    found = gather.candidates(SOURCE, source, tmp_path / "work")
    assert (found.kept, found.duplicates, found.skipped_small) == (3, 1, 1)
    assert found.license == "LICENSE: MIT License"
    assert len(found.commit) == 40
    assert [p.suffix for p in found.sheets] == [".png"]
    with Image.open(found.sheets[0]) as sheet:
        assert sheet.width == SHEET_COLUMNS * 200 and sheet.height > SHEET_ROWS * 200
    rows = list(csv.DictReader((found.folder / "candidates.csv").open()))
    copy = next(row for row in rows if row["source_path"] == "img/copy-of-merah.jpg")
    original = next(row for row in rows if row["source_path"] == "img/tas-merah.jpg")
    # The copy sorts first, so the original is listed as its near-duplicate and left off the sheets.
    assert (copy["duplicate_of"], original["duplicate_of"]) == ("", f"candidate {copy['index']} of {SOURCE}")
    assert not (found.folder / f"{original['index']}.jpg").exists()


def test_added_photos_carry_provenance_and_load_as_a_manifest(source, tmp_path):
    found = gather.candidates(SOURCE, source, tmp_path / "work")
    rows = {row["source_path"]: int(row["index"]) for row in csv.DictReader((found.folder / "candidates.csv").open())
            if not row["duplicate_of"]}
    gather.add("b9-test", found.folder, "ordinary", [rows["img/ransel.jpg"]], hard_negative=True)
    gather.add("b9-test", found.folder, "designer_bag", [rows["img/tas-hitam.jpg"]])
    manifest = gather.BATCHES_DIR / "b9-test" / "manifest.csv"
    loaded = load_manifest(manifest)
    assert len(loaded) == 2 and loaded.hard_negatives().tolist() == [True, False]
    written = list(csv.DictReader(manifest.open()))
    assert {row["source_repo"] for row in written} == {SOURCE}
    assert all(row["source_commit"] == found.commit and row["license"] == found.license for row in written)
    assert {row["source_path"] for row in written} == {"img/ransel.jpg", "img/tas-hitam.jpg"}
    for row in written:
        with Image.open(manifest.parent / row["path"]) as stored:
            assert max(stored.size) == gather.STORED_SIDE and stored.format == "JPEG"
    with pytest.raises(gather.GatherError, match="already in"):
        gather.add("b9-test", found.folder, "ordinary", [rows["img/ransel.jpg"]])
    # Looked at again, the source's photos already in a batch are marked as duplicates, and add refuses them;
    # the earlier run's numbered files are gone, so no old number can be taken for a new one.
    again = gather.candidates(SOURCE, source, tmp_path / "work")
    fresh = [row["index"] for row in csv.DictReader((again.folder / "candidates.csv").open()) if not row["duplicate_of"]]
    assert sorted(p.stem for p in again.folder.glob("*.jpg")) == sorted(fresh) == ["0"]
    assert again.duplicates == 3
    with pytest.raises(gather.GatherError, match="duplicates"):
        gather.add("b9-other", again.folder, "ordinary", [rows["img/ransel.jpg"]])


def test_files_of_one_name_in_two_folders_are_stored_apart():
    first, second = gather.photo_name(SOURCE, "a/tas.jpg"), gather.photo_name(SOURCE, "b/tas.jpg")
    assert first != second and first.startswith("someone+toko-tas__tas_") and first.endswith(".jpg")


def _repo(work: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "files"], check=True)
    return work / ".git"


def test_the_licence_is_read_from_a_file_or_from_a_licence_folder(source, tmp_path):
    assert gather.source_license(source) == "LICENSE: MIT License"
    # Website templates keep their terms in a folder: the file inside is read, never the folder's listing.
    templated = _repo(tmp_path / "template", {"index.html": "<p>\n", "license/terms-of-use.txt": "\nUse per the site's terms.\n"})
    assert gather.source_license(templated) == "license/terms-of-use.txt: Use per the site's terms."
    assert gather.source_license(_repo(tmp_path / "bare", {"index.html": "<p>\n"})) == "none found"


def test_a_source_in_the_reference_data_is_refused(source, tmp_path):
    reference = tmp_path / "flexdata" / "manifest.csv"
    reference.parent.mkdir()
    reference.write_text(f"path,category,source_repo\nimages/a.jpg,ordinary,{SOURCE.upper()}\n")
    with pytest.raises(gather.GatherError, match="already gathered"):
        gather.candidates(SOURCE, source, tmp_path / "work", reference_manifests=[reference])


def test_blobs_missing_from_a_snapshot_are_skipped(source, tmp_path):
    """Snapshots lack files of 4 MiB and more: the listing goes on without them."""
    sha = subprocess.run(["git", f"--git-dir={source}", "rev-parse", "HEAD:img/ransel.jpg"], check=True,
                         capture_output=True, text=True).stdout.strip()
    (source / "objects" / sha[:2] / sha[2:]).unlink()
    found = gather.candidates(SOURCE, source, tmp_path / "work")
    listed = {row["source_path"] for row in csv.DictReader((found.folder / "candidates.csv").open())}
    assert "img/ransel.jpg" not in listed and "img/tas-hitam.jpg" in listed


def test_refusals_add_nothing(source, tmp_path, monkeypatch):
    found = gather.candidates(SOURCE, source, tmp_path / "work")
    for category, hard, match in (("yacht", False, "category"), ("luxury_car", True, "hard-negative")):
        with pytest.raises(gather.GatherError, match=match):
            gather.add("b9-test", found.folder, category, [0], hard_negative=hard)
    with pytest.raises(gather.GatherError, match="not candidates"):
        gather.add("b9-test", found.folder, "ordinary", [99])
    monkeypatch.setenv("MATCHED_PHOTO", "/2.jpg")
    with pytest.raises(gather.GatherError, match="guard matches 1 of them"):
        gather.add("b9-test", found.folder, "ordinary", [0, 2])
    assert not (gather.BATCHES_DIR / "b9-test" / "manifest.csv").exists()
    with pytest.raises(gather.GatherError, match="holdout guard refuses"):
        gather.candidates(HIDDEN, source, tmp_path / "work")


def test_remove_records_why_and_relabel_moves_the_photo(source, tmp_path):
    found = gather.candidates(SOURCE, source, tmp_path / "work")
    gather.add("b9-test", found.folder, "ordinary", [0, 1])
    manifest = gather.BATCHES_DIR / "b9-test" / "manifest.csv"
    first, second = (row["path"] for row in csv.DictReader(manifest.open()))
    assert gather.relabel("b9-test", [Path(first).name], "designer_bag") == 1
    assert (manifest.parent / "images/designer_bag" / Path(first).name).is_file()
    assert gather.remove("b9-test", [second], "a logo, not a photo") == 1
    assert not (manifest.parent / second).exists()
    removed = list(csv.DictReader((manifest.parent / "removed.csv").open()))
    assert [(row["path"], row["reason"]) for row in removed] == [(second, "a logo, not a photo")]
    with pytest.raises(gather.GatherError, match="say why"):
        gather.remove("b9-test", [Path(first).name], " ")


def test_sheets_sort_each_label_by_the_models_risk(source, tmp_path, tiny_model_path, capsys):
    found = gather.candidates(SOURCE, source, tmp_path / "work")
    gather.add("b9-test", found.folder, "ordinary", [0, 1, 2])
    out = tmp_path / "sheets"
    assert main(["data", "sheets", "b9-test", "--out", str(out), "--model", str(tiny_model_path)]) == 0
    assert [Path(line.split(": ", 1)[1]).name for line in capsys.readouterr().out.splitlines()] == ["b9-test-ordinary-000.png"]
    # The tiny model flags red: the red bag's tile comes first, captioned with its risk.
    from flexguard.datasets.contact_sheets import _risks

    rows = list(csv.DictReader((gather.BATCHES_DIR / "b9-test" / "manifest.csv").open()))
    risks = _risks(gather.BATCHES_DIR / "b9-test", rows, tiny_model_path)
    assert max(risks, key=risks.get).endswith(next(r["path"] for r in rows if "merah" in r["source_path"]).split("/")[-1])


def test_the_command_explains_itself_and_refuses_in_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    assert "candidates" in capsys.readouterr().out
    assert main(["data", "sheets", "no-such-batch"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


REAL_GUARD = Path(__file__).resolve().parents[1].parent / "shared" / "holdout-guard" / "guard.py"
SHIPPED_BATCHES = sorted((Path(__file__).resolve().parents[1] / "datasets" / "batches").glob("*/manifest.csv"))


@pytest.mark.shared
@pytest.mark.skipif(not REAL_GUARD.is_file(), reason="../shared/holdout-guard is absent: the guard cannot be run")
@pytest.mark.parametrize("manifest", SHIPPED_BATCHES, ids=[m.parent.name for m in SHIPPED_BATCHES])
def test_every_shipped_batch_passes_the_holdout_guard(manifest):
    """No source and no photo of a batch is in the hidden evaluation set (photos: where they are present)."""
    result = subprocess.run([sys.executable, str(REAL_GUARD), "manifest", str(manifest)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_restore_makes_missing_photos_again_from_the_snapshot_and_refuses_a_changed_one(source, tmp_path, capsys):
    """A fresh checkout has manifests and no photos: restore rebuilds them, the same as `add` stored them,
    from the recorded commit, and leaves out a photo whose file has since become another photo."""
    from flexguard.datasets import restore

    found = gather.candidates(SOURCE, source, tmp_path / "work")
    numbers = {row["source_path"]: int(row["index"]) for row in csv.DictReader((found.folder / "candidates.csv").open())
               if not row["duplicate_of"]}
    gather.add("b9-test", found.folder, "designer_bag", [numbers["img/tas-hitam.jpg"]])
    gather.add("b9-test", found.folder, "ordinary", [numbers["img/ransel.jpg"], numbers["img/copy-of-merah.jpg"]])
    manifest = gather.BATCHES_DIR / "b9-test" / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    stored = {row["source_path"]: (manifest.parent / row["path"]) for row in rows}
    originals = {path: np.asarray(Image.open(file)) for path, file in stored.items()}
    for file in stored.values():
        file.unlink()
    # The snapshot a later fetch brings: bare, under <mirror>/<owner+name>/repo, with a newer commit where
    # one photo was replaced by another under the same name, and another deleted.
    work = source.parent
    _photo(work / "img/ransel.jpg", (240, 200, 10), stripes=1)
    (work / "img/tas-hitam.jpg").unlink()
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "commit", "-qam", "new stock"], check=True)
    mirror = tmp_path / "mirror"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(mirror / gather.source_slug(SOURCE) / "repo")], check=True)

    report = restore.restore(mirror)
    # At the recorded commit every file is as labelled: all three come back, pixel for pixel as stored.
    assert (report.restored, report.present, report.missing) == (3, 0, 0)
    for path, file in stored.items():
        assert np.abs(np.asarray(Image.open(file), dtype=int) - originals[path]).max() <= 1
    assert load_manifest(manifest)

    # A snapshot that lacks the recorded commit (a shallow store's newest only): the replaced photo is
    # refused by its hash, the deleted one is reported, the unchanged one comes back.
    for file in stored.values():
        file.unlink()
    shallow = tmp_path / "shallow" / gather.source_slug(SOURCE) / "repo"
    subprocess.run(["git", "clone", "-q", "--bare", "--depth", "1", f"file://{work}", str(shallow)], check=True)
    report = restore.restore(shallow.parent.parent)
    assert report.restored == 1 and stored["img/copy-of-merah.jpg"].is_file()
    assert len(report.changed) == 1 and "bits from the labelled photo" in report.changed[0]
    assert len(report.not_in_snapshot) == 1 and "img/tas-hitam.jpg" in report.not_in_snapshot[0]
    with pytest.raises(Exception, match="flexguard data restore"):
        load_manifest(manifest)

    # From the command line, with no snapshot at all: the sources to fetch are named and written down.
    listing = tmp_path / "to-fetch.tsv"
    assert main(["data", "restore", "b9-test", "--mirror", str(tmp_path / "empty"), "--missing-sources", str(listing)]) == 0
    out = capsys.readouterr().out
    assert "restored 0 photos; 1 were already there; 2 still missing" in out and SOURCE in out
    assert listing.read_text() == f"{SOURCE}\t2\n"
    assert main(["data", "restore", "no-such-batch"]) == 2


def test_a_palette_photo_with_a_byte_table_of_transparency_opens_as_pillow_drops_it_without_warning(tmp_path, recwarn):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)
    palette = Image.fromarray(pixels, "L").convert("P")
    path = tmp_path / "cut-out.png"
    palette.save(path, transparency=bytes([0] * 10 + [255] * 246))  # the first ten colours transparent
    assert isinstance(Image.open(path).info["transparency"], bytes)
    with pytest.warns(UserWarning, match="Transparency expressed in bytes"):
        as_pillow_drops_it = np.asarray(Image.open(path).convert("RGB"))
    recwarn.clear()

    opened = open_upright(path)

    assert np.array_equal(np.asarray(opened), as_pillow_drops_it)
    assert not [w for w in recwarn if "Transparency" in str(w.message)]
