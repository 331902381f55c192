"""Shared fixtures: the repository root, the Rust test vectors and the capture manifest.

The suite uses the same data as the Rust tests: crates/ecr-proto/tests/data/vectors.json,
the test vectors of docs/protocol.md#vectors (repeated in test_crypto.py) and the sample
captures with their keys and expectations from captures/manifest.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    with open(ROOT / "crates/ecr-proto/tests/data/vectors.json", encoding="utf-8") as f:
        return json.load(f)


def manifest_entries() -> list[dict[str, Any]]:
    """The sample captures, for parametrisation (read at collection time)."""
    with open(ROOT / "captures/manifest.json", encoding="utf-8") as f:
        return json.load(f)["captures"]


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the repository root, so relative paths match the golden outputs
    (the summary lists the files as given)."""
    monkeypatch.chdir(ROOT)
    return ROOT
