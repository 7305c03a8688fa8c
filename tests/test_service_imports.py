"""Import boundaries: the engine and the batching know nothing of HTTP, and no part of serving loads torch.

Checked in fresh interpreters, since this test process has imported everything already.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import flexguard.service

# Modules that other tools (evaluation, the scanner, benchmarks) use without a web server.
HTTP_FREE = ("engine", "batching", "pipeline", "errors")
HTTP_MODULES = ("fastapi", "starlette", "uvicorn")


def modules_after_import(*modules: str) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(output.split())


def test_engine_and_batching_import_no_web_framework_and_no_torch():
    loaded = modules_after_import(*(f"flexguard.service.{m}" for m in HTTP_FREE))
    top_level = {name.split(".")[0] for name in loaded}
    assert not top_level & {*HTTP_MODULES, "torch"}, top_level & {*HTTP_MODULES, "torch"}


def test_no_service_module_imports_torch():
    every = [f"flexguard.service.{m.name}" for m in pkgutil.iter_modules(flexguard.service.__path__)]
    assert "flexguard.service.app" in every and "flexguard.service.engine" in every
    loaded = modules_after_import(*every, "flexguard.cli")
    assert "torch" not in {name.split(".")[0] for name in loaded}


def test_settings_are_not_read_at_import():
    code = (
        "import os; os.environ['FLEXGUARD_PORT'] = 'not a port'\n"
        "import flexguard.service.app, flexguard.service.settings\n"
        "print('imported')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr
