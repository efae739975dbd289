"""The provenance package's public surface is pinned, and importing it stays light."""

from __future__ import annotations

import json
import subprocess
import sys

from qr_sampler import provenance


def test_public_names_are_pinned() -> None:
    assert provenance.__all__ == [
        "TOKEN_KEYS", "ZERO_HASH", "ArchiveError", "AuditInputError", "EntropyArchive",
        "ProvenanceError", "RecordJournal", "build_manifest", "build_report", "new_run_id",
        "read_archived", "sha256_rows", "verify",
    ]  # fmt: skip
    for name in provenance.__all__:
        assert getattr(provenance, name) is not None


def test_the_writers_load_neither_torch_pydantic_nor_numpy() -> None:
    probe = (
        "from qr_sampler.provenance import RecordJournal, EntropyArchive\n"
        "import sys, json\nprint(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded = {m.split(".")[0] for m in json.loads(out.strip().splitlines()[-1])}
    assert not loaded & {"torch", "vllm", "grpc", "pydantic", "numpy", "typer", "rich"}


def test_the_manifest_holds_every_setting_but_secrets() -> None:
    from pydantic import SecretStr

    from qr_sampler.settings import Settings

    settings = Settings(grpc_api_key=SecretStr("k3y-Sup3r-S3cret"))
    manifest = provenance.build_manifest(settings, run_id="r", model="m", vllm_version="v")
    secrets = {name for name, value in settings if isinstance(value, SecretStr)}
    assert set(manifest["settings"]) == set(type(settings).model_fields) - secrets
    assert "k3y-Sup3r-S3cret" not in json.dumps(manifest)
    assert manifest["settings"]["uniform_clamp_epsilon"] == settings.uniform_clamp_epsilon
    assert list(manifest)[:3] == ["run_id", "started_at", "plugin_version"]
