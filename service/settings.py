"""Deployment settings (paths, limits, network), read from ``FLEXGUARD_*`` environment variables.

Only what differs between deployments lives here; what belongs to the model (categories, input size,
thresholds) is read from the model file. Built on first use, not at import.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flexguard.models import shipped_model_path


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEXGUARD_", protected_namespaces=())

    model_path: Path = Field(default_factory=shipped_model_path, description="ONNX model to serve")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    threads: int | None = Field(None, ge=1, description="onnxruntime threads; default: all cores")
    max_files: int = Field(64, ge=1, description="most photos in one request")
    max_bytes: int = Field(25_000_000, ge=1, description="largest photo, in bytes")
    max_pixels: int = Field(64_000_000, ge=1, description="largest photo, in pixels (read from its header)")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
