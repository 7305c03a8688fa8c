"""What a flexguard model is: its taxonomy, its input spec, its metadata, and the shipped ONNX file."""

from importlib.resources import files
from pathlib import Path

# The shipped models: fp32, and its INT8 quantisation (ROC-AUC within 0.005 of fp32, checked by `make model`).
SHIPPED_MODELS = {"fp32": "flexguard.onnx", "int8": "flexguard-int8.onnx"}
# INT8 is what serves and scans by default: the three-backbone ensemble in fp32 costs 31% of the 12 MP
# throughput over HTTP of the single-backbone model it replaced, INT8 costs nothing (32.1 vs 31.3 photos/s,
# same run), for 0.0008 ROC-AUC (models/MODEL_CARD.md, docs/performance.md).
DEFAULT_VARIANT = "int8"


def shipped_model_path(variant: str = DEFAULT_VARIANT) -> Path:
    """Path of a model that ships with the package."""
    if variant not in SHIPPED_MODELS:
        raise ValueError(f"unknown model variant {variant!r}; shipped: {', '.join(SHIPPED_MODELS)}")
    return Path(str(files(__name__).joinpath(SHIPPED_MODELS[variant])))
