"""A review deployment for tests: a database with two units and their keys, and photos the tiny model
(conftest.py) clears or flags: mid-grey scores `allow`, a red rectangle scores high on luxury_car.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from flexguard.service.review.database import migrate, open_database
from flexguard.service.review.store import Principal, ReviewStore
from flexguard.service.review.tables import Role
from flexguard.service.settings import Settings

UNITS = {"dinkes": "Dinas Kesehatan", "bappeda": "Badan Perencanaan Pembangunan Daerah"}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def grey_photo(size: tuple[int, int] = (320, 240)) -> bytes:
    return png(Image.new("RGB", size, (128, 128, 128)))


def red_photo(size: tuple[int, int] = (480, 320), rect: tuple[int, int, int, int] = (24, 60, 300, 290)) -> bytes:
    image = Image.new("RGB", size, (128, 128, 128))
    ImageDraw.Draw(image).rectangle(rect, fill=(255, 0, 0))
    return png(image)


@dataclass
class World:
    url: str
    store: ReviewStore
    admin: str
    submit: dict[str, str]
    review: dict[str, str]

    def settings(self, model_path: Path, **overrides) -> Settings:
        return Settings(model_path=model_path, database_url=self.url, max_wait_ms=1.0, **overrides)


def make_world(url: str) -> World:
    engine = open_database(url)
    migrate(engine)
    store = ReviewStore(engine)
    operator = Principal.command_line("test")
    for unit, name in UNITS.items():
        store.create_unit(operator, unit, name)
    admin = store.create_key(operator, Role.ADMIN, None, "inspektorat").key
    submit = {unit: store.create_key(operator, Role.SUBMIT, unit, f"upload tool {unit}").key for unit in UNITS}
    review = {unit: store.create_key(operator, Role.REVIEW, unit, f"kepala {unit}").key for unit in UNITS}
    return World(url, store, admin, submit, review)


def headers(key: str, **extra: str) -> dict[str, str]:
    return {"X-API-Key": key, **extra}


def photo_files(*photos: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"foto-{i}.png", photo, "image/png")) for i, photo in enumerate(photos)]
