"""Ingestion of ROOT (TTree, RNTuple) and Parquet samples into content-addressed Parquet shards.

Out of core with dask (``uproot.dask`` for ROOT, pyarrow row-group ranges for Parquet): each
partition of ``chunk_entries`` entries is read, reduced (jagged rules, derived columns, selection,
weight, label, non-finite policy), split by a hash of its event key and written as one shard per
split; statistics merge across partitions.
"""

from hsbi.data.ingest.cluster import dask_scheduler
from hsbi.data.ingest.pipeline import MANIFEST, check_schemas, ingest_group, plan_partitions
from hsbi.data.ingest.sources import (
    InputFile,
    fingerprint,
    group_files,
    inspect_file,
    resolve_files,
)
from hsbi.data.ingest.split import SPLITS, assign_splits, event_hash
from hsbi.data.ingest.stats import ColumnStats
from hsbi.data.ingest.tensors import Batch, ShardSet, TensorBatches

__all__ = [
    "MANIFEST",
    "SPLITS",
    "Batch",
    "ColumnStats",
    "InputFile",
    "ShardSet",
    "TensorBatches",
    "assign_splits",
    "check_schemas",
    "dask_scheduler",
    "event_hash",
    "fingerprint",
    "group_files",
    "ingest_group",
    "inspect_file",
    "plan_partitions",
    "resolve_files",
]
