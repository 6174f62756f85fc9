"""Helpers of the ingestion tests: data paths, sample definitions, shard digests, store checks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from hsbi.config.loader import _build
from hsbi.config.samples import SampleConfig
from hsbi.store import Store

__all__ = ["DATA", "HIGGS", "ROOTS", "assert_store_empty", "sample", "shard_digests"]

DATA = Path(__file__).resolve().parents[1]
ROOTS = DATA / "root"
HIGGS = DATA / "higgs" / "higgsml2014_v2_prefix22889.parquet"


def sample(**definition: Any) -> SampleConfig:
    """A SampleConfig built exactly as the config loader builds one."""
    return _build(SampleConfig, definition, "samples[0]")


def shard_digests(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.parquet"))}


def assert_store_empty(store: Store) -> None:
    """No artifact and no scratch debris."""
    root = Path(str(store.root))
    artifacts = sorted((root / "IngestSamples").glob("*")) if (root / "IngestSamples").exists() \
        else []
    debris = sorted((root / ".tmp").glob("*")) if (root / ".tmp").exists() else []
    assert artifacts == [] and debris == [], (artifacts, debris)
