"""Channels combined in one likelihood: the sum of the components' NLLs over the union of their
parameters, matched by name (HS3/pyhf convention: a parameter shared by name is one parameter).

Each component is a fitting likelihood (:class:`~hsbi.inference.fitting.Likelihood`) with its own
dataset: an unbinned declared model read from an hsbi workspace, a binned pyhf workspace
(:class:`hsbi.inference.binned.BinnedLikelihood`), or any other. The components keep their own
files, so a combination is the list of files and can be made again with other partners. Every
component carries the Gaussian constraints of its own constrained parameters; a parameter shared
by ``k`` components has its constraint subtracted ``k - 1`` times, so it is counted once. Shared
parameters must agree on their kind and constraint width (and their global observable in the
data); their range is the intersection of the components'.

:func:`fit_combination` fits workspace files together (``hsbi fit A B``): an hsbi workspace
(its directory or ``workspace.json``) or a pyhf workspace JSON (``channels``, ``observations``,
``measurements``). No torch is imported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hsbi.exceptions import ConfigError
from hsbi.inference.model import Parameter, ParameterSpace

__all__ = ["CombinedData", "CombinedLikelihood", "CombinedModel", "fit_combination", "is_hsbi_workspace", "load_component"]


@dataclass(frozen=True)
class CombinedModel(ParameterSpace):
    """The union of the components' parameters (the first component's POI first) and each
    component's parameter positions in it."""

    parameters: tuple[Parameter, ...]
    poi: str
    maps: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class CombinedData:
    """One dataset per component (each a batch of B) and the combined global observables (B, P)."""

    parts: tuple[Any, ...]
    aux: np.ndarray

    @property
    def batch(self) -> int:
        return self.aux.shape[0]

    def take(self, rows: np.ndarray) -> CombinedData:
        rows = np.asarray(rows, dtype=np.int64)
        return CombinedData(tuple(p.take(rows) for p in self.parts), self.aux[rows])


def _merge(name: str, first: Parameter, other: Parameter, labels: tuple[str, str]) -> Parameter:
    if first.kind != other.kind or (first.sigma is None) != (other.sigma is None) or (
            first.sigma is not None and not math.isclose(first.sigma, other.sigma, rel_tol=1e-9)):
        raise ConfigError(f"combination: parameter {name!r} is a {first.kind} (constraint width {first.sigma}) in "
                          f"{labels[0]} and a {other.kind} (constraint width {other.sigma}) in {labels[1]}; expected "
                          "the same kind and width for a parameter shared by name")
    lo, hi = max(first.bounds[0], other.bounds[0]), min(first.bounds[1], other.bounds[1])
    if not lo < hi:
        raise ConfigError(f"combination: parameter {name!r} has bounds {list(first.bounds)} in {labels[0]} and "
                          f"{list(other.bounds)} in {labels[1]}; expected overlapping ranges")
    return Parameter(name, first.kind, (lo, hi), float(np.clip(first.init, lo, hi)), first.sigma,
                     first.fixed or other.fixed)


@dataclass(frozen=True)
class CombinedLikelihood:
    """The combined likelihood of ``components`` (a fitting ``Likelihood``)."""

    model: CombinedModel
    components: tuple[Any, ...]
    labels: tuple[str, ...]
    #: per parameter, how many components constrain it (its constraint is counted once)
    shared: np.ndarray

    @classmethod
    def of(cls, components: Sequence[Any], labels: Sequence[str] | None = None) -> CombinedLikelihood:
        labels = tuple(labels or (f"component {k}" for k in range(len(components))))
        params: dict[str, Parameter] = {}
        owner: dict[str, str] = {}
        poi = components[0].model.poi
        for lik, label in zip(components, labels):
            for p in lik.model.parameters:
                if p.name in params:
                    params[p.name] = _merge(p.name, params[p.name], p, (owner[p.name], label))
                else:
                    params[p.name], owner[p.name] = p, label
        for lik, label in zip(components, labels):
            if lik.model.poi != poi:
                raise ConfigError(f"combination: {label} has the POI {lik.model.poi!r}, {labels[0]} {poi!r}; "
                                  "expected one POI")
        order = [poi, *(n for n in params if n != poi)]
        names = {n: i for i, n in enumerate(order)}
        maps = tuple(np.array([names[n] for n in lik.model.names], dtype=np.int64) for lik in components)
        shared = np.zeros(len(order))
        for lik, m in zip(components, maps):
            shared[m] += [p.constrained for p in lik.model.parameters]
        model = CombinedModel(tuple(params[n] for n in order), poi, maps)
        return cls(model, tuple(components), labels, shared)

    def data(self, parts: Sequence[Any]) -> CombinedData:
        """The components' datasets as one; the global observables of a shared parameter must
        agree between them."""
        B = parts[0].batch
        aux = np.full((B, len(self.model.parameters)), np.nan)
        for part, m, label in zip(parts, self.model.maps, self.labels):
            a = np.asarray(part.aux, dtype=np.float64)
            known = ~np.isnan(aux[:, m]) & ~np.isnan(a)
            if not np.allclose(aux[:, m][known], a[known], rtol=0, atol=1e-12):
                raise ConfigError(f"combination: {label}'s global observables differ from another component's for "
                                  "a shared parameter; expected one value per parameter")
            aux[:, m] = np.where(np.isnan(a), aux[:, m], a)
        return CombinedData(tuple(parts), aux)

    def nll_grad_hess(self, data: CombinedData, theta: np.ndarray, rows: np.ndarray | None = None,
                      hessian: bool = True, reference: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        theta = np.asarray(theta, dtype=np.float64)
        B, P = theta.shape
        rows = np.arange(data.batch, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        value, grad = np.zeros(B), np.zeros((B, P))
        hess = np.zeros((B, P, P)) if hessian else None
        for lik, part, m in zip(self.components, data.parts, self.model.maps):
            v, g, h = lik.nll_grad_hess(part, theta[:, m], rows=rows, hessian=hessian, reference=reference)
            value += np.asarray(v, dtype=np.float64)
            grad[:, m] += np.asarray(g, dtype=np.float64)
            if hessian:
                hess[:, m[:, None], m[None, :]] += np.asarray(h, dtype=np.float64)
        # a constraint shared by k components was added k times: take k - 1 of them off
        extra = np.maximum(self.shared - 1, 0)
        if extra.any():
            sig = np.array([p.sigma if p.constrained else np.inf for p in self.model.parameters])
            inv = np.where(extra > 0, extra / sig**2, 0.0)
            diff = theta - np.nan_to_num(data.aux[rows], nan=0.0)
            value -= (0.5 * inv * diff**2).sum(-1)
            grad -= inv * diff
            if hessian:
                hess -= np.diag(inv)
        return value, grad, hess


def load_component(path: Path | str) -> tuple[Any, Any, str, tuple[tuple[float, ...], int] | None]:
    """A workspace file as a component: ``(likelihood, dataset, label, settings)``: an hsbi
    workspace (its directory, or a JSON with ``misc.hsbi``; ``settings`` its levels and scan
    points) or a pyhf workspace JSON (validated against pyhf's schema, fitted with hsbi's binned
    likelihood, code 4 / 4p; no settings)."""
    from hsbi.inference.workspace import WorkspaceError, load_workspace

    path = Path(path)
    if is_hsbi_workspace(path):
        ws = load_workspace(path)
        return ws.likelihood, ws.data, str(ws.path), (ws.levels, ws.scan_points)
    if not path.is_file():
        raise WorkspaceError(f"workspace {path}: no such file or directory")
    spec = _json(path)
    if not {"channels", "observations", "measurements"} <= set(spec):
        raise WorkspaceError(f"workspace {path}: expected an hsbi workspace (misc.hsbi) or a pyhf workspace "
                             "(channels, observations, measurements)")
    import pyhf

    from hsbi.inference.binned import BinnedLikelihood

    try:
        pyhf.Workspace(spec)
    except pyhf.exceptions.InvalidSpecification as err:
        raise WorkspaceError(f"workspace {path}: not a valid pyhf workspace ({str(err).splitlines()[0]})") from None
    lik = BinnedLikelihood.from_spec(spec)
    return lik, lik.observed(spec), str(path), None


def is_hsbi_workspace(path: Path | str) -> bool:
    """Whether ``path`` is an hsbi workspace (a directory, or a JSON document with ``misc.hsbi``)
    rather than a pyhf one."""
    path = Path(path)
    return path.is_dir() or (path.is_file() and "hsbi" in _json(path).get("misc", {}))


def _json(path: Path) -> dict:
    from hsbi.inference.workspace import WorkspaceError

    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WorkspaceError(f"workspace {path}: not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise WorkspaceError(f"workspace {path}: expected a JSON object")
    return doc


def fit_combination(paths: Sequence[Path | str], levels: Sequence[float] | None = None, scan_points: int | None = None,
                    log: Callable[[str], None] = print) -> dict:
    """The observed fit of workspace files combined (:func:`hsbi.inference.fitting.fit_summary`);
    levels and scan points from the first hsbi workspace among them (else 68.27% and 95%, 41)."""
    from hsbi.inference.fitting import fit_summary

    parts = [load_component(p) for p in paths]
    settings = next((p[3] for p in parts if p[3] is not None), ((0.6827, 0.95), 41))
    levels, scan_points = levels or settings[0], scan_points or settings[1]
    lik = CombinedLikelihood.of([p[0] for p in parts], [p[2] for p in parts])
    data = lik.data([p[1] for p in parts])
    log(f"combination: {len(parts)} workspaces, {len(lik.model.names)} parameters "
        f"({int((lik.shared > 1).sum())} constrained parameters shared)")
    result = fit_summary(lik, data, levels, scan_points, log)
    result["components"] = [p[2] for p in parts]
    return result
