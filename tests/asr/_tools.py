"""Optional tools of the ASR tests: skip when absent, fail under ``NEKO_REQUIRE_ASR_TOOLS=1``."""

from __future__ import annotations

import importlib
import os
import shutil

import pytest

REQUIRE = os.environ.get("NEKO_REQUIRE_ASR_TOOLS") == "1"


def need(module: str):
    """Import ``module`` or skip (fail under ``NEKO_REQUIRE_ASR_TOOLS=1``)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if REQUIRE:
            pytest.fail(f"{module} is required here (NEKO_REQUIRE_ASR_TOOLS=1): {err}")
        pytest.skip(f"needs {module}")


def need_speech() -> None:
    """Speech synthesis: the espeak-ng program and soxr (resampling to 16 kHz)."""
    need("soxr")
    if shutil.which("espeak-ng") is None:
        if REQUIRE:
            pytest.fail("espeak-ng is required here (apt-get install -y espeak-ng)")
        pytest.skip("needs the espeak-ng program (apt-get install -y espeak-ng)")
