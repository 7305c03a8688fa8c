"""What a flexguard model is: its taxonomy, its input spec, its metadata, and the shipped ONNX file."""

from importlib.resources import files
from pathlib import Path

# The shipped models: fp32, and its INT8 quantisation (faster on CPU; ROC-AUC within 0.005 of fp32).
SHIPPED_MODELS = {"fp32": "flexguard.onnx", "int8": "flexguard-int8.onnx"}
DEFAULT_VARIANT = "fp32"


def shipped_model_path(variant: str = DEFAULT_VARIANT) -> Path:
    """Path of a model that ships with the package."""
    if variant not in SHIPPED_MODELS:
        raise ValueError(f"unknown model variant {variant!r}; shipped: {', '.join(SHIPPED_MODELS)}")
    return Path(str(files(__name__).joinpath(SHIPPED_MODELS[variant])))
