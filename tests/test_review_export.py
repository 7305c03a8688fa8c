"""Reviewers' labelled photos become a training batch (issue #14, part 3), on SQLite and PostgreSQL.

The export writes photos and a manifest that ``flexguard.datasets.load_manifest`` reads and ``flexguard
train`` trains on; it takes only consenting units' labelled photos, deletes them from the database once
they are safely written, audits it, and never lists a photo twice: not on a second run, and not after
being killed (SIGKILL) at any of its steps and run again into the same folder.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from flexguard.datasets import load_manifest
from flexguard.service.app import create_app
from flexguard.service.review.store import Principal
from flexguard.service.review.tables import Photo, PhotoBlob
from flexguard.service.review.training_export import export_training
from review_world import World, grey_photo, headers, make_world, photo_files, red_photo

UNIT, OTHER_UNIT = "dinkes", "bappeda"
CRASHING_EXPORT = Path(__file__).with_name("crash_during_export.py")
TIMEOUT_S = 120
HTTP_OK = 200


@pytest.fixture
def world(database_url: str) -> World:
    made = make_world(database_url)
    made.store.set_training_consent(Principal.command_line("test"), UNIT, True)
    return made


@pytest.fixture
def client(world: World, tiny_model_path, tmp_path) -> TestClient:
    settings = world.settings(tiny_model_path, training_export_dir=tmp_path / "exports")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def decided_post(client: TestClient, world: World, unit: str, labels: list[dict]) -> dict:
    photos = [red_photo((200 + 20 * n, 200), (0, 0, 150, 150)) for n in range(len(labels) + 1)]
    posted = client.post("/v1/submissions", headers=headers(world.submit[unit]), files=photo_files(grey_photo(), *photos),
                         data={"account": "@asn", "caption": "Kegiatan"}).json()
    assert posted["status"] == "pending"
    answer = client.post(f"/v1/submissions/{posted['id']}/approve", headers=headers(world.review[unit]),
                         json={"labels": labels})
    assert answer.status_code == HTTP_OK, answer.text
    return answer.json()


def labelled(client: TestClient, world: World) -> list[dict]:
    """Two posts of the consenting unit (3 labelled photos, 2 unlabelled) and one of a unit without consent."""
    return [
        decided_post(client, world, UNIT, [{"position": 1, "verdict": "correct", "categories": ["luxury_car"]},
                                           {"position": 2, "verdict": "false_alarm", "categories": []}]),
        decided_post(client, world, UNIT, [{"position": 1, "verdict": "correct", "categories": ["luxury_car", "luxury_travel"]}]),
        decided_post(client, world, OTHER_UNIT, [{"position": 1, "verdict": "false_alarm", "categories": []}]),
    ]


def exported_state(world: World) -> tuple[int, int]:
    """(photos marked exported, labelled photos whose bytes are still stored)."""
    with world.store.engine.connect() as connection:
        marked = connection.scalar(select(func.count()).select_from(Photo).where(Photo.exported_at.is_not(None)))
        kept = connection.scalar(select(func.count()).select_from(PhotoBlob).join(Photo, Photo.id == PhotoBlob.photo_id)
                                 .where(Photo.review_verdict.is_not(None)))
    return marked, kept


def test_the_export_is_a_manifest_train_reads_and_the_photos_leave_the_database(world, client, tmp_path):
    first, second, _ = labelled(client, world)
    out = tmp_path / "batch"
    report = export_training(world.store, Principal.command_line("test"), out)
    assert (report.photos, report.by_unit, report.listed) == (3, {UNIT: 3}, 3)

    manifest = load_manifest(out / "manifest.csv")
    by_name = {Path(record.path).name: record for record in manifest.records}
    car = by_name[f"{first['id']}_1.png"]
    assert car.categories == ("luxury_car",) and not car.hard_negative
    alarm = by_name[f"{first['id']}_2.png"]
    assert alarm.categories == () and alarm.hard_negative  # ordinary, and a look-alike: the model took it for luxury
    assert by_name[f"{second['id']}_1.png"].categories == ("luxury_car", "luxury_travel")
    assert set(manifest.sources().tolist()) == {f"review:{UNIT}"}
    day = first["decided_at"][:10]
    assert set(manifest.groups().tolist()) == {f"review:{UNIT}:{day}"}
    # The bytes are the photo as sent (a PNG is kept as it is), and the row says so.
    sent = (out / "images" / UNIT / f"{first['id']}_1.png").read_bytes()
    rows = {row["path"]: row for row in __import__("csv").DictReader((out / "manifest.csv").open())}
    row = rows[f"images/{UNIT}/{first['id']}_1.png"]
    assert hashlib.sha256(sent).hexdigest() == row["sha256"] == first["photos"][1]["sha256"]
    assert row["model_weights_sha256"] == first["model"]["weights_sha256"] and row["reviewer"].startswith("fgr_review_")

    assert exported_state(world) == (3, 1)  # the other unit's labelled photo stays: no consent, no export
    audited = [event for event in world.store.audit_events() if event.action == "training_exported"]
    assert {event.submission_id for event in audited} == {first["id"], second["id"]}
    # Nothing new: a second run adds nothing and lists each photo once.
    again = export_training(world.store, Principal.command_line("test"), out)
    assert (again.photos, again.listed) == (0, 3)


def test_the_admin_route_exports_into_the_export_folder(world, client, tmp_path):
    labelled(client, world)
    answer = client.post("/v1/admin/training-export", headers=headers(world.admin), json={"name": "2026-q4"})
    assert answer.status_code == HTTP_OK, answer.text
    assert answer.json()["photos"] == 3 and answer.json()["folder"] == str(tmp_path / "exports" / "2026-q4")
    assert len(load_manifest(tmp_path / "exports" / "2026-q4" / "manifest.csv")) == 3
    for bad in ("../escape", "a/b", ""):
        assert client.post("/v1/admin/training-export", headers=headers(world.admin), json={"name": bad}).status_code == 422
    assert client.post("/v1/admin/training-export", headers=headers(world.review[UNIT]), json={"name": "x"}).status_code == 403


@pytest.mark.parametrize("point, after", [("write", 1), ("write", 3), ("marked", 1)])
def test_an_export_killed_at_any_step_and_run_again_lists_each_photo_once(world, client, tmp_path, point, after):
    labelled(client, world)
    out = tmp_path / "batch"
    environment = {**os.environ, "FLEXGUARD_DATABASE_URL": world.url}
    killed = subprocess.run([sys.executable, str(CRASHING_EXPORT), point, str(after), "--out", str(out)],
                            env=environment, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = subprocess.run([sys.executable, "-m", "flexguard", "admin", "export-training", "--out", str(out)],
                              env=environment, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert finished.returncode == 0, finished.stderr
    manifest = load_manifest(out / "manifest.csv")
    paths = [str(record.path) for record in manifest.records]
    assert len(paths) == len(set(paths)) == 3 and all(Path(path).is_file() for path in paths)
    assert exported_state(world) == (3, 1)
    assert not list(out.rglob("*.partial"))


def test_the_export_trains_a_model(world, client, tmp_path):
    pytest.importorskip("torch")
    from flexguard.training.train import TrainConfig, train

    labelled(client, world)
    export_training(world.store, Principal.command_line("test"), tmp_path / "batch")
    run = train(TrainConfig(manifests=[str(tmp_path / "batch" / "manifest.csv")], out_dir=str(tmp_path / "run"),
                            cache_dir=str(tmp_path / "cache"), val_fold=None, views=1, epochs=1, steps_per_epoch=1,
                            batch_size=2, probe_steps=2, workers=1))
    assert (run / "checkpoint.pt").is_file()
