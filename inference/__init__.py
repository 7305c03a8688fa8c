"""The inference core every client runs: decode -> preprocess -> batch -> onnxruntime -> results.

The REST service, the scanner, ``flexguard evaluate``, ``flexguard quantize`` and the benchmarks all
score through this package, so a photo gets the same score whichever way it comes in. It imports
neither FastAPI nor torch (tests/test_import_rules.py): serving and scanning stay light.
"""
