"""``flexguard serve`` with onnxruntime's intra-op spinning turned back on: the service before that fix.

The engine turns spinning off (inference/engine.py says why). bench_http.py runs this alongside the real
service on the same load, so the effect of that one setting is measured in every benchmark run.
"""

from __future__ import annotations

import sys

import onnxruntime

_SessionOptions = onnxruntime.SessionOptions


class SpinningSessionOptions(_SessionOptions):
    def add_session_config_entry(self, key: str, value: str) -> None:
        if key == "session.intra_op.allow_spinning":
            value = "1"  # onnxruntime's default
        super().add_session_config_entry(key, value)


onnxruntime.SessionOptions = SpinningSessionOptions

from flexguard.cli import main  # noqa: E402  (after the patch, so the engine gets the patched options)

if __name__ == "__main__":
    sys.exit(main(["serve"]))
