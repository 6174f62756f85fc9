"""The base task: analysis config, content-addressed targets in the hsbi store, user errors."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import law
import luigi

from hsbi.config import DEFAULT_CONFIG, AnalysisConfig, load_config
from hsbi.config.loader import split_overrides
from hsbi.exceptions import HSBIError
from hsbi.models import MODELS
from hsbi.store import STORE_FORMAT, Artifact, Store, code_version, make_address
from hsbi.store.code import ADDRESS_PACKAGES, package_key

__all__ = ["HSBITask", "HSBIWorkflow", "UserError"]


class UserError(SystemExit):
    """Ends ``law run`` with one line and a non-zero exit (luigi logs other errors with a
    traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"hsbi: error: {message}")


class _OneLineUserErrors(logging.Filter):
    """Turns luigi's traceback of a user error raised in ``run()`` into its one-line message."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (UserError, HSBIError)):
            record.msg, record.args = "%s", (str(exc.code if isinstance(exc, UserError) else exc),)
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("luigi-interface").addFilter(_OneLineUserErrors())


def _reuse_command_line_parsers() -> None:
    """luigi builds an argparse parser over every registered task's parameters three times per
    ``CmdlineParser``, and a ``law run`` makes three of them: nine builds of ~560 arguments each,
    ~0.3 s of a no-op run (argparse makes a help formatter per argument). A parser depends only on
    the root task, ``help_all`` and the registered classes, and parsing leaves it unchanged: it is
    built once per (root task, help_all, number of registered classes)."""
    from luigi.cmdline_parser import CmdlineParser
    from luigi.task_register import Register

    build = CmdlineParser._build_parser
    if getattr(build, "hsbi_reused", False):
        return
    parsers: dict[tuple, Any] = {}

    def reused(root_task: str | None = None, help_all: bool = False) -> Any:
        key = (root_task, help_all, len(Register._reg))
        if key not in parsers:
            parsers[key] = build(root_task=root_task, help_all=help_all)
        return parsers[key]

    reused.hsbi_reused = True  # type: ignore[attr-defined]
    CmdlineParser._build_parser = staticmethod(reused)


_reuse_command_line_parsers()


@functools.lru_cache(maxsize=32)
def _load_analysis(config: str, overrides: tuple[str, ...], stamp: tuple | None) -> AnalysisConfig:
    """``load_config`` once per process for a config file as it is (``stamp``): every task of a
    workflow, e.g. each of 1,000 branches, reads the same file; the config is frozen
    dataclasses, so tasks share it."""
    return load_config(config, overrides)


def _config_stamp(config: str) -> tuple | None:
    """The device, inode, size, mtime and ctime of a config file: the file and its version (None
    where it cannot be read: load_config then names the problem)."""
    path = DEFAULT_CONFIG if config in ("", "default") else os.path.expanduser(config)
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _store_root() -> str:
    root = os.environ.get("HSBI_STORE") or law.config.get_expanded("hsbi", "store", None)
    root = root or "store"
    return root if "://" in root else str(Path(root).expanduser().resolve())


#: modules that submit or describe jobs and compute no artifact: left out of every code version
NOT_RESULT_CODE = ("workflows.remote",)


@dataclasses.dataclass(frozen=True)
class _OtherTasks:
    """Skips, in a task's code version, the task classes other than the task and its bases (their
    results enter its address as input addresses) and :data:`NOT_RESULT_CODE`."""

    task: type

    @property
    def cache_key(self) -> str:
        """What the skip depends on besides the sources (see ``hsbi.store.code.disk_cache``)."""
        return f"other-tasks:{self.task.__module__}:{self.task.__qualname__}:{NOT_RESULT_CODE}"

    def __call__(self, module: str, name: str | None) -> bool:
        if module in NOT_RESULT_CODE:
            return True
        if name is None or module.split(".")[0] not in ("workflows", self.task.__module__.split(".")[0]):
            return False
        obj = getattr(importlib.import_module(module), name, None)
        return isinstance(obj, type) and issubclass(obj, law.Task) and obj not in self.task.__mro__


class OverridesParameter(law.CSVParameter):
    """``key.path=value`` overrides separated by commas, except commas inside brackets, braces
    or quotes (``inference.poi_bounds=[0,5]`` is one override)."""

    def parse(self, inp: Any) -> tuple[str, ...]:
        return split_overrides(inp) if isinstance(inp, str) else super().parse(inp)


class StoreTarget(law.target.base.Target):
    """An artifact in the hsbi store as a law target: it exists when its manifest does."""

    def __init__(self, store: Store, family: str, address: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store, self.family, self.address = store, family, address

    @property
    def path(self) -> str:
        return self.store.uri(self.family, self.address)

    def exists(self) -> bool:
        return self.store.exists(self.family, self.address)

    def remove(self, silent: bool = True, **kwargs: Any) -> None:
        """Remove the artifact (law passes options of file targets, e.g. ``local_sync``)."""
        self.store.remove(self.family, self.address)

    def uri(self, return_all: bool = False) -> str | list[str]:
        uri = self.path if "://" in self.path else f"file://{self.path}"
        return [uri] if return_all else uri

    def _repr_pairs(self) -> list[tuple[str, str]]:
        return [("path", self.path)]

    def _copy_kwargs(self) -> dict[str, Any]:
        return {**super()._copy_kwargs(), "store": self.store, "family": self.family,
                "address": self.address}


def _produce_once(run: Any) -> Any:
    """Wrap a task's ``run`` so only one process produces an artifact; the others wait for it."""

    @functools.wraps(run)
    def wrapped(self: HSBITask) -> Any:
        try:
            with self.store.producing(self.task_family, self.address, on_wait=self.publish_message) as must:
                if must:
                    return run(self)
                self.publish_message(f"{self.task_family} {self.address}: already in the store (made by an equal task or another process)")
                return None
        except HSBIError as err:  # e.g. the lease cannot be written on a full disk
            raise UserError(f"{self.task_family}: {err}") from None

    wrapped.__hsbi_locked__ = True
    return wrapped


def _flatten_tasks(struct: Any) -> Iterator[law.Task]:
    if isinstance(struct, law.Task):
        yield struct
    elif isinstance(struct, Mapping):
        for value in struct.values():
            yield from _flatten_tasks(value)
    elif isinstance(struct, (list, tuple)):
        for value in struct:
            yield from _flatten_tasks(value)


class HSBITask(law.Task):
    """A task whose output is an artifact in the hsbi store.

    The artifact's address hashes: the task family, :meth:`significant_params` (the config
    sections named in ``config_sections`` plus task-specific values), the addresses of the
    required artifacts, and the code version: the task class's code and everything in the project
    it uses (its module's helpers, the config layer, the stage's modules, their imports, the
    config's model class), plus ``code_modules`` whole, found by ``hsbi.store.code``; and the
    major.minor versions of ``address_packages``.
    """

    config = luigi.Parameter(
        default="default",
        description="analysis config (YAML path), or 'default' for the embedded Gaussian-rotation "
        "model; default: default",
    )
    set = OverridesParameter(
        default=(),
        description="config overrides, comma-separated key.path=value (e.g. "
        "training.max_epochs=20,inference.poi_bounds=[0,5]); default: none",
    )

    #: config sections whose canonical content enters the address
    config_sections: tuple[str, ...] = ()
    #: modules hashed whole (with their imports) into the code version, beyond what the task's
    #: own code imports (found automatically): e.g. modules the stage loads dynamically
    code_modules: tuple[str, ...] = ()
    #: libraries whose major.minor version enters the address (they compute the numbers)
    address_packages: tuple[str, ...] = ADDRESS_PACKAGES
    #: section keys left out of the address (they do not change this artifact)
    ignored_keys: tuple[str, ...] = ()
    #: declared version of what the task itself writes; bump it when run() changes the output
    version: int = 1
    #: how a re-run reproduces the artifact: "bitwise", or {"rtol": r, "atol": a} for numbers
    reproducibility: str | dict[str, float] = "bitwise"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "__hsbi_locked__", False):
            cls.run = _produce_once(run)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.analysis  # noqa: B018 - validate the config when the task is created
        except HSBIError as err:
            raise UserError(str(err)) from None

    @classmethod
    def get_params(cls) -> list[tuple[str, luigi.Parameter]]:
        """luigi's parameter list, found once per class (luigi scans ``dir(cls)`` on each call and
        law calls it ~9 times per task instance: a third of the cost of a branch task)."""
        params = cls.__dict__.get("_hsbi_params")
        if params is None:
            params = tuple(super().get_params())
            cls._hsbi_params = params
        return list(params)

    @cached_property
    def analysis(self) -> AnalysisConfig:
        config, overrides = str(self.config), tuple(self.set)
        stamp = _config_stamp(config)
        return load_config(config, overrides) if stamp is None else _load_analysis(config, overrides, stamp)

    @cached_property
    def store(self) -> Store:
        return Store(_store_root())

    def significant_params(self) -> dict[str, Any]:
        params = {}
        for section in self.config_sections:
            values = dataclasses.asdict(getattr(self.analysis, section))
            params[section] = {k: v for k, v in values.items() if f"{section}.{k}" not in self.ignored_keys}
        return params

    def shared_req(self, cls: type[law.Task], **kwargs: Any) -> law.Task:
        """``cls.req(self, **kwargs)`` for a requirement that names its own ``branch`` (or has
        none), made once for all tasks with this task's other parameters (kept on the workflow of
        a branch). law's ``req`` spends ~7 ms on parameters, and 1,000 branches, each requiring a
        few of 500 ingestion branches, would spend it thousands of times: ``req`` makes the first
        task per requirement class, other ``kwargs`` and kind (workflow or branch); the later ones
        take its parameters with their own ``branch`` (law gives them the same values) and share
        its workflow task (law's ``req_workflow`` ignores ``branch``)."""
        has_branch = "branch" in dict(cls.get_params())
        if has_branch and "branch" not in kwargs:
            return cls.req(self, **kwargs)
        branch = kwargs.get("branch")
        owner = self.as_workflow() if isinstance(self, law.BaseWorkflow) and self.is_branch() else self
        try:
            key = (cls, tuple(sorted((k, v) for k, v in kwargs.items() if k != "branch")), branch == -1,
                   tuple((k, v) for k, v in self.param_kwargs.items() if k != "branch"))
            hash(key)
        except TypeError:
            return cls.req(self, **kwargs)
        firsts, tasks = owner.__dict__.setdefault("_hsbi_shared_reqs", ({}, {}))
        task = tasks.get((key, branch))
        if task is None:
            first = firsts.get(key)
            if first is None:
                task = firsts[key] = cls.req(self, **kwargs)
            else:
                task = cls(**{**first.param_kwargs, "branch": branch})
                if isinstance(task, law.BaseWorkflow) and task.is_branch() and task._workflow_task is None:
                    task._workflow_task = first.as_workflow()
            tasks[(key, branch)] = task
        return task

    def input_addresses(self) -> dict[str, str | list[str]]:
        """Addresses of the required artifacts, by requirement name (a workflow gives a list)."""
        reqs = self.requires()
        named = reqs.items() if isinstance(reqs, Mapping) else enumerate(_flatten_tasks(reqs))
        out: dict[str, str | list[str]] = {}
        for name, task in named:
            if isinstance(task, law.BaseWorkflow) and task.is_workflow():
                out[str(name)] = [b.address for b in task.get_branch_tasks().values()]
            else:
                out[str(name)] = task.address
        return out

    @cached_property
    def address(self) -> str:
        return make_address(
            self.task_family, self.significant_params(), self.input_addresses(), self.code_version
        )

    @property
    def code_version(self) -> str:
        cls, model = type(self), MODELS.get(self.analysis.model.name)
        refs = [f"{cls.__module__}:{cls.__qualname__}", *self.code_modules]
        if model is not None:  # the model's class, also when registered from outside hsbi
            refs.append(f"{model.__module__}:{model.__qualname__}")
        code = code_version(*refs, roots=("workflows",), skip=_OtherTasks(cls))
        return f"v{self.version}-s{STORE_FORMAT}-{code}-p{package_key(self.address_packages)}"

    def output(self) -> StoreTarget:
        return StoreTarget(self.store, self.task_family, self.address)

    def config_dir(self) -> Path:
        """The folder relative sample file paths are resolved against: the config file's
        (the working directory for the embedded default)."""
        if str(self.config) in ("", "default"):
            return Path.cwd()
        return Path(self.config).expanduser().resolve().parent

    def provenance(self) -> dict[str, Any]:
        """Recorded with the artifact, not hashed: enough to re-run the task. The only paths are
        the samples' local files, made absolute so the recorded config runs from anywhere."""
        config = dataclasses.asdict(self.analysis)
        for sample in config.get("samples", ()):
            sample["files"] = [f if "://" in f or Path(f).is_absolute() else str(self.config_dir() / f)
                               for f in sample["files"]]
        return {
            "task": self.task_family,
            "branch": getattr(self, "branch", None),
            "config": config,
            "args": self.rerun_args(),
            "reproducibility": self.reproducibility,
        }

    def rerun_args(self) -> list[str]:
        """Command-line parameters beyond the config that ``hsbi store reproduce`` passes to
        ``law run`` to make this artifact again (tasks with such parameters override this)."""
        return []

    def artifact(self) -> Artifact:
        """This task's own artifact, verified."""
        return self.store.open(self.task_family, self.address)

    @contextmanager
    def write(self) -> Iterator[Path]:
        """A scratch directory that becomes this task's artifact when the block succeeds."""
        with self.store.writer(
            self.task_family,
            self.address,
            self.significant_params(),
            self.input_addresses(),
            self.code_version,
            self.provenance(),
            started=getattr(self, "_hsbi_started", None),
        ) as path:
            yield path

    def run_hsbi(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call into hsbi; a user error (bad input) ends the run with its one-line message."""
        try:
            return fn(*args, **kwargs)
        except HSBIError as err:
            raise UserError(f"{self.task_family}: {err}") from None


@HSBITask.event_handler(luigi.Event.START)
def _record_start(task: HSBITask) -> None:
    """When the worker starts a task's run(): the artifact's manifest records its production time."""
    task._hsbi_started = time.time()


from workflows.remote import HSBIRemoteWorkflow  # noqa: E402 - only HSBIWorkflow needs it


class HSBIWorkflow(HSBITask, law.LocalWorkflow, HSBIRemoteWorkflow):
    """A workflow whose branches are artifacts; ``branch_params`` enters each branch's address.

    Branches run in the ``law run`` process by default (``--workflow local``), or as batch jobs
    with ``--workflow slurm`` or ``--workflow htcondor`` (see workflows/remote.py); the workflow
    type does not enter the address, so the artifacts are the same either way.
    """

    def branch_params(self) -> dict[str, Any]:
        return dict(self.branch_data)

    def req_branch(self, branch: int, **kwargs: Any) -> HSBIWorkflow:
        """law's ``req_branch``, with the branch tasks' parameters worked out once per workflow:
        law derives them anew for every branch (``req_params`` pattern matching, a config look-up
        per parameter not passed on: ~7 ms a branch), though branch tasks differ only in
        ``branch``; the same values give the same (luigi-cached) task."""
        if kwargs or self.is_branch():
            return super().req_branch(branch, **kwargs)
        params = self.__dict__.get("_hsbi_branch_params")
        if params is None:
            task = super().req_branch(branch)
            self._hsbi_branch_params = dict(task.param_kwargs)
            return task
        task = type(self)(**{**params, "branch": branch})
        if task._workflow_task is None:
            task._workflow_task = self
        return task

    def significant_params(self) -> dict[str, Any]:
        params = super().significant_params()
        if self.is_branch():
            params["branch"] = self.branch_params()
        return params
