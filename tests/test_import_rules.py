"""The import rules between flexguard's packages (ARCHITECTURE.md), checked two ways.

Statically, every import statement of every module (top-level or inside a function) against the
rules; and in a fresh interpreter, what importing a package actually loads (this test process has
imported everything already, so only a new one can tell).

- ``flexguard.models`` (the model contract) imports neither onnxruntime nor torch nor any other
  flexguard package: everything else builds on it.
- ``flexguard.inference`` imports neither FastAPI (nor Starlette, uvicorn) nor torch, nor the service.
- ``flexguard.service`` does not import training.
- Nothing imports ``flexguard.service`` except the CLI (and the tests).
- Serving (the service and the CLI) never loads torch.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
# Package -> its folder, as pyproject.toml maps them.
FOLDERS = {
    "models": "models", "inference": "inference", "scan": "scan", "service": "service",
    "training": "training", "datasets": "datasets", "cli": "cli", "benchmarks": "benchmarks",
}
HTTP_MODULES = {"fastapi", "starlette", "uvicorn"}
TORCH_MODULES = {"torch", "torchvision"}
# (package, what it must not import): a top-level module, or a flexguard package.
FORBIDDEN = {
    "models": {"onnxruntime", *TORCH_MODULES, *HTTP_MODULES, "flexguard.inference", "flexguard.scan",
               "flexguard.service", "flexguard.training", "flexguard.datasets"},
    "inference": {*HTTP_MODULES, *TORCH_MODULES, "flexguard.service", "flexguard.scan", "flexguard.training"},
    "service": {*TORCH_MODULES, "flexguard.training"},
    "scan": {*TORCH_MODULES, "flexguard.service", "flexguard.training"},
    "training": {"flexguard.service", "flexguard.scan"},
    "datasets": {*TORCH_MODULES, "flexguard.service", "flexguard.scan", "flexguard.training"},
    "benchmarks": {"flexguard.service"},
}


def package_of(folder: str) -> str:
    return "flexguard" if folder == "cli" else f"flexguard.{folder}"


def imported_names(path: Path, package: str) -> set[str]:
    """Every module name ``path`` imports, relative imports resolved against ``package``."""
    names = set()
    relative_base = package.split(".")
    if path.name != "__init__.py":
        relative_base = [*relative_base, *path.parent.relative_to(ROOT / path.relative_to(ROOT).parts[0]).parts]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = relative_base[: len(relative_base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def breaks(name: str, forbidden: str) -> bool:
    return name == forbidden or name.startswith(forbidden + ".")


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_import_statements_follow_the_rules(folder):
    package = package_of(folder)
    problems = []
    for path in sorted((ROOT / FOLDERS[folder]).rglob("*.py")):
        if "migrations" in path.parts and folder != "service":
            continue
        for name in imported_names(path, package):
            problems += [f"{path.relative_to(ROOT)} imports {name}" for rule in FORBIDDEN[folder] if breaks(name, rule)]
    assert not problems, "\n".join(problems)


def test_only_the_cli_imports_the_service():
    importers = set()
    for folder in FOLDERS:
        if folder in ("service", "cli"):
            continue
        for path in (ROOT / FOLDERS[folder]).rglob("*.py"):
            if any(breaks(name, "flexguard.service") for name in imported_names(path, package_of(folder))):
                importers.add(str(path.relative_to(ROOT)))
    assert not importers, importers


def modules_after_import(*modules: str) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return {name.split(".")[0] for name in output.split()}


def all_modules(package: str) -> list[str]:
    module = __import__(package, fromlist=["__path__"])
    return [package, *(f"{package}.{m.name}" for m in pkgutil.iter_modules(module.__path__))]


def test_the_model_contract_loads_no_runtime():
    loaded = modules_after_import(*all_modules("flexguard.models"))
    assert not loaded & {"onnxruntime", *TORCH_MODULES, *HTTP_MODULES}


def test_the_inference_core_loads_no_web_framework_and_no_torch():
    loaded = modules_after_import(*all_modules("flexguard.inference"))
    assert not loaded & {*HTTP_MODULES, *TORCH_MODULES}


def test_serving_and_the_cli_load_no_torch():
    every = all_modules("flexguard.service") + all_modules("flexguard.service.routes") + all_modules("flexguard.scan")
    assert "flexguard.service.app" in every and "flexguard.scan.runner" in every
    assert not modules_after_import(*every, "flexguard.cli") & TORCH_MODULES


def test_settings_are_not_read_at_import():
    code = (
        "import os; os.environ['FLEXGUARD_PORT'] = 'not a port'\n"
        "import flexguard.service.app, flexguard.service.settings\n"
        "print('imported')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr
