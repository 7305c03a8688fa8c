"""The licence the package declares is the licence the repository ships (#13: no LICENSE file before)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# pyproject's SPDX identifier -> how that licence's text begins.
LICENCE_HEADINGS = {"Apache-2.0": ("Apache License", "Version 2.0, January 2004")}


def test_the_license_file_matches_pyproject():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    lines = [line.strip() for line in (ROOT / "LICENSE").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert tuple(lines[:2]) == LICENCE_HEADINGS[declared]
    assert "END OF TERMS AND CONDITIONS" in lines
