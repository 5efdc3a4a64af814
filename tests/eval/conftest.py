"""Fixtures for the evaluation tests."""

import pytest

from .helpers import write_jsonl


@pytest.fixture
def write(tmp_path):
    """``write(name, rows)`` -> path of a JSONL file under tmp_path (see helpers.write_jsonl)."""
    return lambda name, rows: write_jsonl(tmp_path / name, rows)
