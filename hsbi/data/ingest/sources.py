"""Input files of a sample: resolving globs and URLs, content fingerprints, schema inspection."""

from __future__ import annotations

import difflib
import glob
import hashlib
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsbi.config.samples import SampleConfig
from hsbi.data.ingest.expressions import names_in
from hsbi.exceptions import DataError

__all__ = [
    "ColumnType",
    "FileSchema",
    "InputFile",
    "file_format",
    "fingerprint",
    "group_files",
    "inspect_file",
    "read_names",
    "resolve_files",
    "sum_weights_from_tree",
]

_CHUNK = 1 << 20
_PARQUET_EXT = (".parquet", ".pq", ".parq")


@dataclass(frozen=True)
class InputFile:
    """One input file: where it is (path or URL), and what it holds (sha256 and size)."""

    path: str
    sha256: str
    size: int

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def identity(self) -> dict[str, Any]:
        """What enters an address: the content, not the location."""
        return {"name": self.name, "sha256": self.sha256, "bytes": self.size}


@dataclass(frozen=True)
class ColumnType:
    """How a branch/column looks: ``kind`` is scalar, jagged, array, string or unsupported."""

    kind: str
    dtype: str
    text: str  # the full type, for messages and the schema check


@dataclass
class FileSchema:
    """What one file holds for a sample: entries and the types of the columns it reads."""

    file: InputFile
    entries: int
    columns: dict[str, ColumnType] = field(default_factory=dict)


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def resolve_files(sample: SampleConfig, base_dir: str | os.PathLike[str] = ".") -> list[str]:
    """Expand the sample's globs (relative to ``base_dir``) and URLs, sorted and unique.

    Raises :class:`DataError` naming a pattern that matches nothing or a file that does not exist.
    """
    base = Path(base_dir)
    found: set[str] = set()
    for pattern in sample.files:
        if _is_url(pattern):
            found.update(_resolve_url(sample, pattern))
            continue
        text = pattern[len("file://"):] if pattern.startswith("file://") else pattern
        path = Path(text).expanduser()
        path = Path(os.path.normpath(path if path.is_absolute() else base / path))
        if glob.has_magic(str(path)):
            matches = sorted(p for p in glob.glob(str(path), recursive=True) if os.path.isfile(p))
            if not matches:
                raise DataError(f"sample {sample.name!r}: files pattern {pattern!r} matches no "
                                f"file (looked in {path.parent}); expected at least one")
            found.update(matches)
        elif not path.is_file():
            raise DataError(f"sample {sample.name!r}: file {path} does not exist; expected a "
                            f"readable file (files: {pattern!r})")
        else:
            found.add(str(path))
    return sorted(found)


def _resolve_url(sample: SampleConfig, url: str) -> list[str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    paths = sorted(fs.glob(path)) if glob.has_magic(path) else ([path] if fs.exists(path) else [])
    if not paths:
        raise DataError(f"sample {sample.name!r}: {url} matches no file; expected at least one")
    return [p if "://" in p else f"{protocol}://{p}" for p in paths]


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def fingerprint(path: str) -> InputFile:
    """The sha256 of a file's bytes (cached per process by path, size and mtime)."""
    if _is_url(path):
        import fsspec

        with fsspec.open(path, "rb") as f:
            digest, size = hashlib.sha256(), 0
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
        return InputFile(path=path, sha256=digest.hexdigest(), size=size)
    try:
        stat = os.stat(path)
    except OSError as err:
        raise DataError(f"file {path}: cannot be read ({err.strerror})") from None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
        _FINGERPRINTS[key] = digest.hexdigest()
    return InputFile(path=str(path), sha256=_FINGERPRINTS[key], size=stat.st_size)


def group_files(sample: SampleConfig, files: Sequence[InputFile]) -> list[list[InputFile]]:
    """Split the files into ingestion groups of ``files_per_group`` (0: one group)."""
    size = sample.files_per_group or max(len(files), 1)
    return [list(files[i : i + size]) for i in range(0, len(files), size)]


def file_format(sample: SampleConfig, path: str) -> str:
    if sample.format != "auto":
        return sample.format
    return "parquet" if path.lower().endswith(_PARQUET_EXT) else "root"


def _sanitise(name: str) -> str:
    return name.replace("/", "_").replace(".", "_")


def read_names(sample: SampleConfig) -> tuple[list[str], dict[str, str]]:
    """The branches a sample reads, and the alias (identifier) of each in expressions."""
    produced = {c for rule in sample.jagged for c in rule.columns} | set(sample.derived)
    needed: list[str] = []

    def add(name: str) -> None:
        if name not in needed:
            needed.append(name)

    for name in sample.branches:
        add(name)
    for rule in sample.jagged:
        add(rule.branch)
    for name in sample.event_key:
        add(name)
    aliases = {_sanitise(n): n for n in needed}
    expressions = [*sample.derived.values(), sample.selection, sample.weight, sample.label]
    for text in expressions:
        if not text:
            continue
        for name in sorted(names_in(text)):
            if name not in produced and name not in aliases:
                add(name)
                aliases[name] = name
    return needed, {_sanitise(n): n for n in needed}


# -- inspection ---------------------------------------------------------------------------------


def _open_bytes(path: str):
    if _is_url(path):
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(path, "rb")


def _check_root_header(file: InputFile) -> None:
    """A ROOT file starts with ``root`` and records its end; a shorter file was truncated."""
    try:
        with _open_bytes(file.path) as f:
            head = f.read(64)
    except OSError as err:
        raise DataError(f"file {file.path}: cannot be read ({err})") from None
    if head[:4] != b"root":
        raise DataError(
            f"file {file.path}: not a ROOT file (it starts with {head[:8]!r}); expected the "
            f"ROOT magic bytes b'root' (or set format: parquet for Parquet files)"
        )
    if len(head) < 20:
        raise DataError(f"file {file.path}: truncated ROOT file ({file.size} bytes)")
    version = struct.unpack(">i", head[4:8])[0]
    end = struct.unpack(">q", head[12:20])[0] if version >= 1000000 else struct.unpack(
        ">i", head[12:16])[0]
    if end > file.size:
        raise DataError(
            f"file {file.path}: truncated ROOT file ({file.size} bytes, its header says "
            f"{end}); expected a complete file (re-copy it)"
        )


def _kind(form: Any) -> tuple[str, str]:
    import awkward as ak

    while isinstance(form, (ak.forms.IndexedOptionForm, ak.forms.ByteMaskedForm,
                            ak.forms.BitMaskedForm, ak.forms.UnmaskedForm)):
        form = form.content  # nullable (Parquet): nulls are read as NaN
    params = form.parameters or {}
    if params.get("__array__") in ("string", "bytestring"):
        return "string", "str"
    if isinstance(form, ak.forms.NumpyForm):
        return ("scalar" if not form.inner_shape else "array"), form.primitive
    if isinstance(form, (ak.forms.ListOffsetForm, ak.forms.ListForm, ak.forms.RegularForm)):
        content = form.content
        if isinstance(content, ak.forms.NumpyForm) and not content.inner_shape and not (
            content.parameters or {}
        ).get("__array__"):
            kind = "array" if isinstance(form, ak.forms.RegularForm) else "jagged"
            return kind, content.primitive
    return "unsupported", ""


def _similar(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


#: ROOT classes read as trees (uproot reads TNtuple and TNtupleD as TTrees)
_TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD", "ROOT::RNTuple", "ROOT::Experimental::RNTuple")


def _root_object(file: InputFile, tree: str) -> Any:
    import uproot

    _check_root_header(file)
    try:
        handle = uproot.open(file.path)
    except Exception as err:  # uproot raises many types for a corrupt file
        raise DataError(f"file {file.path}: cannot be read as ROOT ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from None
    try:
        classes = handle.classnames()
    except Exception as err:
        raise DataError(
            f"file {file.path}: corrupt ROOT directory ({type(err).__name__})"
        ) from None
    trees = sorted({k.rsplit(";", 1)[0] for k, c in classes.items() if c in _TREE_CLASSES})
    if not tree:
        raise DataError(f"file {file.path}: no tree given; expected samples.tree to be one of "
                        f"{trees}")
    if tree not in trees:
        raise DataError(f"file {file.path}: no tree or RNTuple {tree!r}{_similar(tree, trees)}; "
                        f"trees in the file: {', '.join(trees) or 'none'}")
    try:
        return handle[tree]
    except Exception as err:
        raise DataError(f"file {file.path}: tree {tree!r} cannot be read ({type(err).__name__})") \
            from None


def inspect_file(sample: SampleConfig, file: InputFile) -> FileSchema:
    """Open one file, check it holds the tree and every branch the sample reads, with types it
    can store; return its entries and column types. Reads no event data."""
    names, _ = read_names(sample)
    if file_format(sample, file.path) == "parquet":
        return _inspect_parquet(sample, file, names)
    obj = _root_object(file, sample.tree)
    available = list(obj.keys())
    where = f"file {file.path}, tree {sample.tree!r}"
    for name in names:
        if name not in available:
            raise DataError(f"{where}: no branch {name!r}{_similar(name, available)}; expected "
                            f"it to be read by sample {sample.name!r}")
    try:
        empty = obj.arrays(names, entry_start=0, entry_stop=0)
    except Exception as err:
        raise DataError(f"{where}: branches {names} cannot be read "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                        f"; expected a readable file with numbers, arrays or jagged arrays of "
                        f"numbers") from None
    columns = {n: _column_type(empty[n]) for n in names}
    _check_roles(sample, columns, where)
    return FileSchema(file=file, entries=int(obj.num_entries), columns=columns)


def _column_type(array: Any) -> ColumnType:
    kind, dtype = _kind(array.layout.form)
    return ColumnType(kind=kind, dtype=dtype, text=str(array.type).split(" * ", 1)[-1])


def _inspect_parquet(sample: SampleConfig, file: InputFile, names: list[str]) -> FileSchema:
    import awkward as ak
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with _open_bytes(file.path) as f:
            meta = pq.ParquetFile(f)
            schema, entries = meta.schema_arrow, meta.metadata.num_rows
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"file {file.path}: not a readable Parquet file "
                        f"({str(err).splitlines()[0]})") from None
    where = f"file {file.path}"
    columns = {}
    for name in names:
        if name not in schema.names:
            raise DataError(f"{where}: no column {name!r}{_similar(name, schema.names)}; "
                            f"expected it to be read by sample {sample.name!r}")
        empty = ak.from_arrow(pa.table({name: pa.array([], type=schema.field(name).type)}))[name]
        columns[name] = _column_type(empty)
    _check_roles(sample, columns, where)
    return FileSchema(file=file, entries=int(entries), columns=columns)


def _check_roles(sample: SampleConfig, columns: Mapping[str, ColumnType], where: str) -> None:
    """Stored branches must be flat numbers; jagged rules need jagged or fixed arrays."""
    for name, col in columns.items():
        if col.kind == "unsupported":
            raise DataError(f"{where}: branch {name!r} has the unsupported type {col.text}; "
                            f"expected numbers, fixed-size arrays or jagged arrays of numbers")
    for name in sample.branches:
        col = columns[name]
        if col.kind in ("jagged", "array"):
            raise DataError(f"{where}: branch {name!r} is {col.kind} ({col.text}); expected a "
                            f"number per event: reduce it with a jagged rule "
                            f"(leading, count, sum, pad)")
        if col.kind != "scalar":
            raise DataError(f"{where}: branch {name!r} has the type {col.text}; expected a "
                            f"number per event to store")
    for rule in sample.jagged:
        col = columns[rule.branch]
        if col.kind not in ("jagged", "array"):
            raise DataError(f"{where}: jagged rule {rule.rule!r} on branch {rule.branch!r} of "
                            f"type {col.text}; expected a jagged or fixed-size array of numbers")
    for name in sample.event_key:
        if columns[name].kind != "scalar":
            raise DataError(f"{where}: event key branch {name!r} has the type "
                            f"{columns[name].text}; expected a number per event")


def sum_weights_from_tree(file: InputFile, tree: str, branch: str) -> float:
    """The sum of ``branch`` over all entries of ``tree`` (e.g. NanoAOD ``Runs``)."""
    import numpy as np

    obj = _root_object(file, tree)
    if branch not in obj.keys():
        raise DataError(f"file {file.path}, tree {tree!r}: no branch {branch!r}"
                        f"{_similar(branch, obj.keys())}; expected it for the sum of weights")
    values = obj[branch].array(library="np")
    if values.dtype == object or values.ndim != 1:
        raise DataError(f"file {file.path}, tree {tree!r}: branch {branch!r} is not a number per "
                        f"entry; expected one for the sum of weights")
    return float(np.sum(values, dtype=np.float64))
