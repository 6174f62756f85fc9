"""Fixture of the ingestion tests: ingestion into a fresh store through Store.writer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from hsbi.config.samples import SampleConfig
from hsbi.data.ingest import MANIFEST, fingerprint, ingest_group, resolve_files
from hsbi.store import Store
from ingest_helpers import DATA


@pytest.fixture
def ingest(tmp_path: Path):
    """``ingest(sample, base=DATA, scheduler="sync")`` into a fresh store through Store.writer;
    returns (manifest, artifact directory). On error nothing is left in the store."""
    store = Store(tmp_path / "store")
    counter = iter(range(10**6))

    def run(cfg: SampleConfig, base: Path = DATA, scheduler: Any = "sync"):
        address = hashlib.sha256(f"{cfg}{next(counter)}".encode()).hexdigest()[:24]
        files = [fingerprint(p) for p in resolve_files(cfg, base)]
        with store.writer("IngestSamples", address, {"sample": cfg.name}) as out:
            manifest = ingest_group(cfg, files, out, scheduler=scheduler)
        art = store.open("IngestSamples", address)
        assert json.loads((art.path / MANIFEST).read_text()) == manifest
        return manifest, art.path

    run.store = store
    return run
