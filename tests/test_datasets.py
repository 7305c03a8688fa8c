"""Manifests load only when trustworthy, and splits keep groups whole and strata even.

Most tests build tiny images in tmp_path; one reads the shared flexdata manifest when it is present.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flexguard.datasets import (
    STRATA,
    TRAIN_ONLY,
    Manifest,
    ManifestError,
    Record,
    assign_folds,
    fold_counts,
    group_split,
    import_folder,
    load_manifest,
    load_manifests,
    random_split,
)
from flexguard.models.taxonomy import CATEGORY_IDS

FLEXDATA = Path(__file__).resolve().parents[1].parent / "shared" / "flexdata"
FLEXDATA_RECORDS = 4997
TINY_IMAGE_SIZE = (4, 4)
HEADER = "path,category,group,hard_negative,source_repo"


def make_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", TINY_IMAGE_SIZE, (200, 30, 30)).save(path)
    return path


def write_manifest(folder: Path, lines: list[str], name: str = "manifest.csv", images: bool = True) -> Path:
    """Write a manifest (header line first, ``path`` first column); create its images unless told not to."""
    manifest = folder / name
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if images:
        for line in lines[1:]:
            make_image(folder / line.split(",")[0])
    return manifest


def test_loads_a_valid_manifest(tmp_path: Path) -> None:
    manifest_file = write_manifest(
        tmp_path,
        [
            HEADER,
            "img/car.jpg,luxury_car,stanford-cars:Ferrari,0,",
            "img/street.png,ordinary,,1,ImageNet",
            "img/bag.jpg,designer_bag,handbag-posts:1,,handbags",
        ],
    )
    manifest = load_manifest(manifest_file)

    assert len(manifest) == 3
    car, street, bag = manifest.records
    assert car.path == tmp_path / "img" / "car.jpg" and car.path.is_absolute()
    assert car.categories == ("luxury_car",) and car.is_flex
    assert car.group == "stanford-cars:Ferrari" and car.source == "stanford-cars"
    assert street.categories == () and not street.is_flex and street.hard_negative
    assert street.group == "img/street.png" and street.source == "ImageNet"
    assert bag.source == "handbags" and not bag.hard_negative
    assert manifest.sha256 == hashlib.sha256(manifest_file.read_bytes()).hexdigest()
    np.testing.assert_array_equal(manifest.is_flex(), [True, False, True])
    np.testing.assert_array_equal(manifest.hard_negatives(), [False, True, False])
    assert list(manifest.groups()) == ["stanford-cars:Ferrari", "img/street.png", "handbag-posts:1"]
    assert list(manifest.sources()) == ["stanford-cars", "ImageNet", "handbags"]
    labels = manifest.labels()
    assert labels.dtype == np.float32 and labels.shape == (3, len(CATEGORY_IDS))
    assert labels[0, CATEGORY_IDS.index("luxury_car")] == 1 and labels[0].sum() == 1
    assert labels[1].sum() == 0


def test_optional_columns_have_defaults(tmp_path: Path) -> None:
    make_image(tmp_path / "w.jpg")
    manifest = load_manifest(write_manifest(tmp_path, ["category,path,notes", "jewelry_watch,w.jpg,ignored"], images=False))
    (watch,) = manifest.records
    assert watch.group == "w.jpg" and watch.source == "w.jpg" and not watch.hard_negative


def test_multi_category_rows_are_in_taxonomy_order(tmp_path: Path) -> None:
    manifest = load_manifest(write_manifest(tmp_path, [HEADER, 'a.jpg,"jewelry_watch; luxury_car",g,0,']))
    (record,) = manifest.records
    assert record.categories == ("luxury_car", "jewelry_watch")
    expected = [1.0 if c in record.categories else 0.0 for c in CATEGORY_IDS]
    np.testing.assert_array_equal(manifest.labels()[0], expected)


def test_subset_keeps_identity(tmp_path: Path) -> None:
    manifest = load_manifest(write_manifest(tmp_path, [HEADER, "a.jpg,luxury_car,,,", "b.jpg,ordinary,,,"]))
    part = manifest.subset(np.array([1]))
    assert part.path == manifest.path and part.sha256 == manifest.sha256
    assert [r.path.name for r in part.records] == ["b.jpg"]
    assert manifest.subset(np.array([True, False])).records == manifest.records[:1]


@pytest.mark.parametrize(
    ("lines", "images", "expected"),
    [
        (["path,group", "a.jpg,g"], True, ":1: missing required column 'category'"),
        ([HEADER, "a.jpg,luxury_car,g,0,", "b.jpg,yacht,g,0,"], True, ":3: unknown category 'yacht'; known: luxury_car"),
        ([HEADER, "a.jpg,ordinary;luxury_car,g,0,"], True, ":2: 'ordinary' combined with a category"),
        ([HEADER, "a.jpg,luxury_car,g,0,", "./a.jpg,ordinary,g,0,"], True, ":3: duplicate path './a.jpg', already listed at"),
        ([HEADER, "a.jpg,luxury_car,g,0,", "b.jpg,ordinary,g,0,"], False, "2 of 2 image files missing, first:"),
        ([HEADER, "a.jpg,designer_bag,g,1,"], True, ":2: hard_negative=1 on a photo labelled designer_bag"),
        ([HEADER, "a.jpg,ordinary,g,yes,"], True, ":2: hard_negative must be 0 or 1, not 'yes'"),
        ([HEADER, "a.jpg,,g,0,"], True, ":2: empty category"),
        ([HEADER], True, "empty manifest"),
    ],
    ids=[
        "missing-column",
        "unknown-category",
        "ordinary-with-category",
        "duplicate-path",
        "missing-images",
        "hard-negative-on-flex",
        "bad-flag",
        "empty-category",
        "empty-manifest",
    ],
)
def test_bad_manifests_are_refused_with_file_and_line(
    tmp_path: Path, lines: list[str], images: bool, expected: str
) -> None:
    manifest_file = write_manifest(tmp_path, lines, images=images)
    with pytest.raises(ManifestError) as error:
        load_manifest(manifest_file)
    message = str(error.value)
    assert message.startswith(str(manifest_file)) and expected in message
    assert "\n" not in message


def test_missing_manifest_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest file not found"):
        load_manifest(tmp_path / "nope.csv")


def test_missing_images_can_be_skipped_for_tools_that_never_open_them(tmp_path: Path) -> None:
    manifest = load_manifest(write_manifest(tmp_path, [HEADER, "a.jpg,luxury_car,g,0,"], images=False), check_files=False)
    assert len(manifest) == 1


def test_folder_loads_every_batch_and_refuses_duplicates_across_them(tmp_path: Path) -> None:
    first = write_manifest(tmp_path, [HEADER, "a.jpg,luxury_car,g,0,"])
    second = write_manifest(tmp_path, [HEADER, "b.jpg,ordinary,h,1,"], name="manifest_extra.csv")
    manifest = load_manifest(tmp_path)

    assert [r.path.name for r in manifest.records] == ["a.jpg", "b.jpg"]
    hashes = [hashlib.sha256(f.read_bytes()).hexdigest() for f in (first, second)]
    assert manifest.sha256 == hashlib.sha256("\n".join(hashes).encode()).hexdigest()
    assert load_manifests([first, second]).sha256 == manifest.sha256

    write_manifest(tmp_path, [HEADER, "a.jpg,luxury_car,g,0,"], name="manifest_z.csv")
    with pytest.raises(ManifestError, match=r"manifest_z\.csv:2: duplicate path 'a.jpg', already listed at .*manifest\.csv:2"):
        load_manifest(tmp_path)


def test_import_folder_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_image(root / "luxury_car" / "dealer_x" / "2024" / "a.jpg")
    make_image(root / "luxury_car" / "loose.PNG")
    make_image(root / "ordinary" / "dealer_x" / "b.webp")
    make_image(root / "designer_bag" / "c.jpeg")
    (root / "ordinary" / "notes.txt").write_text("not an image")
    (root / "ordinary" / "._b.jpg").write_bytes(b"macOS resource fork")
    out_csv = tmp_path / "out" / "manifest.csv"

    manifest = import_folder(root, out_csv)

    by_name = {r.path.name: r for r in manifest.records}
    assert sorted(by_name) == ["a.jpg", "b.webp", "c.jpeg", "loose.PNG"]
    assert by_name["a.jpg"].categories == ("luxury_car",)
    assert by_name["b.webp"].categories == () and not by_name["b.webp"].hard_negative
    # One source filed under two categories stays one group; loose photos are their own groups.
    assert by_name["a.jpg"].group == by_name["b.webp"].group == "dealer_x"
    assert by_name["loose.PNG"].group == "../photos/luxury_car/loose.PNG"
    assert "../photos/designer_bag/c.jpeg" in out_csv.read_text()
    assert load_manifest(out_csv).records == manifest.records

    per_photo = import_folder(root, tmp_path / "per_photo.csv", group_by="photo")
    assert len(set(per_photo.groups())) == len(per_photo)


def test_import_folder_refuses_unknown_category_folder(tmp_path: Path) -> None:
    make_image(tmp_path / "photos" / "yachts" / "a.jpg")
    with pytest.raises(ManifestError, match="yachts: folder name is not a category; known: luxury_car"):
        import_folder(tmp_path / "photos", tmp_path / "manifest.csv")


def synthetic_manifest(seed: int = 0) -> Manifest:
    """Groups of 1-6 photos per stratum, as in flexdata: a group mostly holds one kind of photo."""
    rng = np.random.default_rng(seed)
    records = []
    kinds = [((c,), False) for c in CATEGORY_IDS] + [((), True), ((), False)]
    for kind, (categories, hard_negative) in enumerate(kinds):
        for group in range(25):
            for photo in range(rng.integers(1, 7)):
                records.append(
                    Record(Path(f"/data/{kind}/{group}/{photo}.jpg"), categories, f"src{kind}:{group}", f"src{kind}", hard_negative)
                )
    # A few multi-category photos sharing a group with single-category ones.
    records.append(Record(Path("/data/multi.jpg"), ("luxury_car", "jewelry_watch"), "src0:0", "src0", False))
    return Manifest(Path("synthetic.csv"), records, "0" * 64)


def assert_groups_whole(manifest: Manifest, folds: np.ndarray) -> None:
    fold_of_group: dict[str, int] = {}
    for group, fold in zip(manifest.groups(), folds):
        assert fold_of_group.setdefault(group, fold) == fold, f"group {group} split across folds"


def test_folds_keep_groups_whole_and_are_deterministic() -> None:
    manifest = synthetic_manifest()
    folds = assign_folds(manifest)
    assert_groups_whole(manifest, folds)
    assert set(folds) == set(range(5))
    np.testing.assert_array_equal(folds, assign_folds(manifest))
    assert not np.array_equal(folds, assign_folds(manifest, seed=1))


def test_folds_do_not_depend_on_row_order() -> None:
    manifest = synthetic_manifest()
    order = np.random.default_rng(1).permutation(len(manifest))
    shuffled = manifest.subset(order)
    fold_by_path = dict(zip((r.path for r in manifest.records), assign_folds(manifest)))
    for record, fold in zip(shuffled.records, assign_folds(shuffled)):
        assert fold_by_path[record.path] == fold


def test_folds_spread_every_stratum_evenly() -> None:
    manifest = synthetic_manifest()
    n_folds = 5
    counts = fold_counts(manifest, assign_folds(manifest, n_folds=n_folds), n_folds)
    totals = counts.sum(axis=0)
    # Whole groups of up to 6 photos (7 with the multi-category photo) cannot balance exactly.
    largest_group = 7
    assert np.all(np.abs(counts - totals / n_folds) <= largest_group), counts
    assert counts.shape == (n_folds, len(STRATA))


def test_group_split_partitions_the_manifest() -> None:
    manifest = synthetic_manifest()
    train_idx, val_idx = group_split(manifest)
    assert len(np.intersect1d(train_idx, val_idx)) == 0
    assert len(train_idx) + len(val_idx) == len(manifest)
    assert not set(manifest.groups()[train_idx]) & set(manifest.groups()[val_idx])


def test_train_only_groups_are_never_validated() -> None:
    manifest = synthetic_manifest()
    pinned = ["src4:0", "src4:1"]
    folds = assign_folds(manifest, train_only=pinned)
    is_pinned = np.isin(manifest.groups(), pinned)
    assert np.all(folds[is_pinned] == TRAIN_ONLY) and np.all(folds[~is_pinned] >= 0)
    for val_fold in range(5):
        train_idx, val_idx = group_split(manifest, val_fold=val_fold, train_only=pinned)
        assert set(np.flatnonzero(is_pinned)) <= set(train_idx)
        assert not set(np.flatnonzero(is_pinned)) & set(val_idx)


def test_unknown_train_only_group_is_refused() -> None:
    with pytest.raises(ManifestError, match="not-a-group"):
        assign_folds(synthetic_manifest(), train_only=["not-a-group"])


def test_group_split_refuses_a_side_without_a_category() -> None:
    records = [
        Record(Path(f"/d/{c}/{i}.jpg"), (c,), f"{c}:{i}", c, False)
        for c in CATEGORY_IDS
        if c != "designer_bag"
        for i in range(10)
    ]
    # All bags come from one shop, so they all land in one fold and one side has none.
    records += [Record(Path(f"/d/bag{i}.jpg"), ("designer_bag",), "one-bag-shop", "shop", False) for i in range(3)]
    manifest = Manifest(Path("m.csv"), records, "0" * 64)
    with pytest.raises(ManifestError, match=r"m\.csv: group split \(fold 0 of 5, seed 0\): the \w+ side has no photo of designer_bag"):
        group_split(manifest)


def test_group_split_refuses_an_empty_side() -> None:
    records = [Record(Path(f"/d/{c}.jpg"), (c,), "everything", "src", False) for c in CATEGORY_IDS]
    with pytest.raises(ManifestError, match="side is empty"):
        group_split(Manifest(Path("m.csv"), records, "0" * 64))


def test_group_split_refuses_a_fold_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match="val_fold must be in 0..4"):
        group_split(synthetic_manifest(), val_fold=5)


def test_random_split_ignores_groups() -> None:
    manifest = synthetic_manifest()
    train_idx, val_idx = random_split(manifest, val_fraction=0.2)
    assert len(val_idx) == round(len(manifest) * 0.2)
    assert sorted(np.concatenate([train_idx, val_idx])) == list(range(len(manifest)))
    # That is the leak: the same groups sit on both sides.
    assert set(manifest.groups()[train_idx]) & set(manifest.groups()[val_idx])


@pytest.mark.shared
def test_shared_flexdata_manifest() -> None:
    if not (FLEXDATA / "manifest.csv").is_file():
        pytest.skip(f"shared photos not present at {FLEXDATA}")
    manifest = load_manifest(FLEXDATA / "manifest.csv")
    assert len(manifest) == FLEXDATA_RECORDS
    assert manifest.labels().sum(axis=0).min() > 0, "every category has photos"

    folds = assign_folds(manifest)
    assert_groups_whole(manifest, folds)
    counts = fold_counts(manifest, folds)
    print(f"\nper-fold photos per stratum ({manifest.path}, seed 0):")
    table = [("fold", *STRATA)] + [(str(fold), *map(str, row)) for fold, row in enumerate(counts)]
    table.append(("rest", *map(str, counts[1:].sum(axis=0))))
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]))]
    for line in table:
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(line, widths)))
    category_counts = counts[:, : len(CATEGORY_IDS)]
    assert np.all(category_counts[0] > 0) and np.all(category_counts[1:].sum(axis=0) > 0)

    train_idx, val_idx = group_split(manifest)
    np.testing.assert_array_equal(val_idx, np.flatnonzero(folds == 0))


def many_sources_manifest() -> Manifest:
    """10 sources per kind of photo, 3 groups (styles) each; source "big0" is one source of 30 groups."""
    records = []
    kinds = [((c,), False) for c in CATEGORY_IDS] + [((), True), ((), False)]
    for kind, (categories, hard_negative) in enumerate(kinds):
        for source in range(10):
            for group in range(3):
                for photo in range(2):
                    name = f"owner{kind}/repo{source}"
                    records.append(Record(Path(f"/data/{name}/{group}/{photo}.jpg"), categories, f"{name}:{group}",
                                          name, hard_negative))
    for group in range(30):
        records.append(Record(Path(f"/data/big/{group}.jpg"), ("luxury_car",), f"stanford-cars:make{group}", "big0", False))
    return Manifest(Path("sources.csv"), records, "0" * 64)


def test_source_folds_hold_out_whole_sources_with_every_category_in_every_fold() -> None:
    manifest = many_sources_manifest()
    folds = assign_folds(manifest, by="source")
    fold_of_source: dict[str, set[int]] = {}
    for source, fold in zip(manifest.sources(), folds):
        fold_of_source.setdefault(source, set()).add(int(fold))
    assert all(len(found) == 1 for found in fold_of_source.values())
    assert (fold_counts(manifest, folds) > 0).all()  # every stratum in every fold


def test_sources_split_by_make_keep_their_groups_as_units() -> None:
    manifest = many_sources_manifest()
    folds = assign_folds(manifest, by="source", keep_subgroups=["big0"])
    big = manifest.sources() == "big0"
    assert len(set(folds[big].tolist())) > 1  # its makes are held out one by one, not all together
    assert_groups_whole(manifest, folds)
    with pytest.raises(ManifestError, match="not in the manifest"):
        assign_folds(manifest, by="source", keep_subgroups=["nobody/else"])
    with pytest.raises(ValueError, match="by must be"):
        assign_folds(manifest, by="photo")


def test_group_folds_are_unchanged_by_the_source_option() -> None:
    manifest = synthetic_manifest()
    np.testing.assert_array_equal(assign_folds(manifest), assign_folds(manifest, by="group", keep_subgroups=["src0"]))
