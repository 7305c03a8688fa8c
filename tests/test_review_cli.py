"""``flexguard admin``: units, keys, purge and audit export from the shell, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json

import pytest
from fastapi.testclient import TestClient

from flexguard.cli import main
from flexguard.service.app import create_app

from review_world import grey_photo, headers, photo_files, red_photo

USAGE_ERROR = 2


def admin(database_url: str, *arguments: str) -> int:
    return main(["admin", "--database", database_url, *arguments])


def test_an_operator_sets_up_a_unit_and_its_keys_then_they_work(database_url, tiny_model_path, capsys, tmp_path):
    assert admin(database_url, "migrate") == 0
    assert "revision 0005" in capsys.readouterr().out
    assert admin(database_url, "unit-add", "dinkes", "Dinas Kesehatan") == 0
    assert capsys.readouterr().out == "unit dinkes: Dinas Kesehatan\n"
    keys = {}
    for role in ("submit", "review"):
        assert admin(database_url, "key-add", "--role", role, "--unit", "dinkes", "--label", f"{role} key") == 0
        captured = capsys.readouterr()
        keys[role] = captured.out.strip()
        assert keys[role].startswith(f"fgr_{role}_") and "shown this once" in captured.err
    assert admin(database_url, "unit-list") == 0 and "dinkes\tDinas Kesehatan" in capsys.readouterr().out
    assert admin(database_url, "key-list", "--unit", "dinkes") == 0
    listing = capsys.readouterr().out
    assert keys["review"] not in listing and keys["review"][:19] in listing  # prefixes only

    settings_env = {"model_path": tiny_model_path, "database_url": database_url, "max_wait_ms": 1.0}
    from flexguard.service.settings import Settings

    with TestClient(create_app(Settings(**settings_env))) as client:
        sid = client.post("/v1/submissions", headers=headers(keys["submit"]), files=photo_files(red_photo(), grey_photo()),
                          data={"account": "@ani"}).json()["id"]
        assert client.post(f"/v1/submissions/{sid}/approve", headers=headers(keys["review"]), json={}).status_code == 200
        prefix = keys["review"][:19]
        assert admin(database_url, "key-revoke", prefix) == 0
        assert client.get("/v1/submissions", headers=headers(keys["review"])).status_code == 401

    # Purge: nothing within the retention, everything decided before it.
    assert admin(database_url, "purge") == 0
    assert "deleted 0 photos" in capsys.readouterr().out
    assert admin(database_url, "purge", "--retention-days", "0") == 0
    assert "deleted 1 photos of 1 submissions" in capsys.readouterr().out

    out = tmp_path / "audit.csv"
    assert admin(database_url, "audit", "--format", "csv", "--out", str(out)) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["action"] for r in rows] == [
        "unit_created", "key_created", "key_created", "submitted", "approved", "key_revoked", "photos_purged",
    ]
    assert rows[0]["actor"].startswith("cli:") and json.loads(rows[0]["details"]) == {"name": "Dinas Kesehatan"}
    assert not out.with_name("audit.csv.partial").exists()
    assert admin(database_url, "audit", "--unit", "dinkes", "--since", "2000-01-01") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(rows) and json.loads(lines[3])["action"] == "submitted"


@pytest.mark.parametrize("arguments, message", [
    (("unit-add", "Not Valid", "x"), "unit id 'Not Valid'"),
    (("key-add", "--role", "review"), "a review key needs a unit"),
    (("key-add", "--role", "review", "--unit", "nowhere"), "no unit 'nowhere'"),
    (("key-add", "--role", "admin", "--unit", "dinkes"), "an admin key belongs to no unit"),
    (("key-revoke", "fgr_review_missing"), "no key 'fgr_review_missing'"),
])
def test_mistakes_end_in_one_line(tmp_path, capsys, arguments, message):
    url = f"sqlite:///{tmp_path / 'review.db'}"
    assert admin(url, "migrate") == 0
    assert admin(url, "unit-add", "dinkes", "Dinas Kesehatan") == 0
    capsys.readouterr()
    assert admin(url, *arguments) == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("url, message", [
    ("not a url", "not a database URL"),
    ("postgresql://nobody@127.0.0.1:1/none", "cannot open the review database"),
    ("mysql://x@localhost/db", "unsupported database"),
])
def test_an_unusable_database_ends_in_one_line(capsys, url, message):
    assert admin(url, "migrate") == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("action", [("unit-list",), ("key-add", "--role", "admin"), ("audit",), ("purge",)])
def test_no_silent_new_database(tmp_path, capsys, monkeypatch, action):
    """Run from another folder, `flexguard admin` must not make an empty flexguard.db there and answer from it."""
    from flexguard.service.settings import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEXGUARD_DATABASE_URL", raising=False)
    get_settings.cache_clear()  # the settings are read once per process; this test changes their folder
    try:
        assert main(["admin", *action]) == USAGE_ERROR
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no review database at sqlite:///" in err
        assert str(tmp_path / "flexguard.db") in err and "flexguard admin migrate" in err
        assert not (tmp_path / "flexguard.db").exists()
        assert main(["admin", "--create", "unit-list"]) == 0 and (tmp_path / "flexguard.db").is_file()
    finally:
        get_settings.cache_clear()


def test_an_empty_database_is_refused_too(database_url, capsys):
    """A database that exists but holds no review schema (an empty PostgreSQL database, say) is not one."""
    if database_url.startswith("sqlite"):
        from pathlib import Path

        Path(database_url.removeprefix("sqlite:///")).touch()
    assert admin(database_url, "unit-list") == USAGE_ERROR
    assert "holds no flexguard review database yet" in capsys.readouterr().err
    assert admin(database_url, "migrate") == 0 and admin(database_url, "unit-list") == 0


def test_serve_refuses_an_unusable_database_in_one_line(tiny_model_path, capsys, monkeypatch):
    monkeypatch.setenv("FLEXGUARD_DATABASE_URL", "sqlite:////nonexistent-folder/review.db")
    assert main(["serve", "--model", str(tiny_model_path)]) == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("flexguard serve: error: cannot open the review database") and err.count("\n") == 1



def test_bad_settings_end_in_one_line(capsys, monkeypatch):
    from flexguard.service.settings import get_settings

    get_settings.cache_clear()
    monkeypatch.setenv("FLEXGUARD_PHOTO_RETENTION_DAYS", "a week")
    try:
        assert main(["admin", "purge"]) == USAGE_ERROR
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FLEXGUARD_PHOTO_RETENTION_DAYS" in err, err
