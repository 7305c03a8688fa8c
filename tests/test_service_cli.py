"""`flexguard serve`: settings and model problems end with one line; a good start hands uvicorn one loaded app."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from flexguard.service.state import of_app
from flexguard.cli import main
from flexguard.service.settings import ENV_PREFIX, Settings

USAGE_ERROR = 2


@pytest.fixture
def no_server(monkeypatch):
    """Replaces uvicorn.run; records what it was asked to serve."""
    calls: list[dict] = []

    def fake_run(app, **options):
        calls.append({"app": app, **options})

    monkeypatch.setattr("uvicorn.run", fake_run)
    return calls


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_missing_model_is_one_line(tmp_path, capsys, no_server):
    assert main(["serve", "--model", str(tmp_path / "nope.onnx")]) == USAGE_ERROR
    assert "model file not found" in one_line_error(capsys)
    assert no_server == []


def test_model_without_metadata_is_one_line(write_model, capsys, no_server):
    assert main(["serve", "--model", str(write_model(drop=("thresholds",)))]) == USAGE_ERROR
    assert "flexguard.thresholds" in one_line_error(capsys)


@pytest.mark.parametrize(("variable", "value"), [("PORT", "eighty"), ("MAX_BATCH", "0"), ("MAX_WAIT_MS", "-1")])
def test_bad_setting_is_one_line_naming_the_variable(monkeypatch, capsys, no_server, tiny_model_path, variable, value):
    monkeypatch.setenv(ENV_PREFIX + variable, value)
    assert main(["serve", "--model", str(tiny_model_path)]) == USAGE_ERROR
    assert ENV_PREFIX + variable in one_line_error(capsys)


def test_serve_loads_the_model_once_and_applies_settings(monkeypatch, no_server, tiny_model_path):
    import flexguard.service.app as app_module

    loads = []
    real_load = app_module.load_engine
    monkeypatch.setattr(app_module, "load_engine", lambda settings: loads.append(settings) or real_load(settings))
    monkeypatch.setenv("FLEXGUARD_PORT", "8123")
    monkeypatch.setenv("FLEXGUARD_API_KEYS", "k1,k2")
    assert main(["serve", "--model", str(tiny_model_path), "--host", "0.0.0.0"]) == 0
    (call,) = no_server
    assert (call["host"], call["port"]) == ("0.0.0.0", 8123)
    assert "flexguard" in call["log_config"]["loggers"]
    assert "keys required" in call["app"].description
    with TestClient(call["app"]) as client:  # the server's startup reuses the engine the CLI loaded
        assert of_app(client.app).engine.path == tiny_model_path
    assert len(loads) == 1 and loads[0].model_path == tiny_model_path


def test_serve_help_lists_every_setting(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    for name in Settings.model_fields:
        assert ENV_PREFIX + name.upper() in help_text, name


def test_settings_defaults():
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert (settings.max_batch, settings.max_wait_ms) == (16, 5.0)
    assert (settings.max_files, settings.max_bytes, settings.max_pixels) == (64, 25_000_000, 64_000_000)
    assert settings.threads is None and settings.decode_threads is None
    assert settings.api_key_list == () and settings.cors_origin_list == ()
    assert settings.model_path.name == "flexguard-int8.onnx" and settings.model_path.is_file()  # INT8 serves by default


def test_list_settings_are_comma_separated(monkeypatch):
    monkeypatch.setenv("FLEXGUARD_API_KEYS", " a-key ,b-key,, ")
    monkeypatch.setenv("FLEXGUARD_CORS_ORIGINS", "https://a.example,https://b.example")
    settings = Settings()
    assert settings.api_key_list == ("a-key", "b-key")
    assert settings.cors_origin_list == ("https://a.example", "https://b.example")
    assert "a-key" not in repr(settings)  # keys stay out of logs and tracebacks
