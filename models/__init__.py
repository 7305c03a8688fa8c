"""What a flexguard model is: its taxonomy, its input spec, its metadata, and the shipped ONNX file."""

from importlib.resources import files
from pathlib import Path

SHIPPED_MODEL_NAME = "flexguard.onnx"


def shipped_model_path() -> Path:
    """Path of the ONNX model that ships with the package."""
    return Path(str(files(__name__).joinpath(SHIPPED_MODEL_NAME)))
