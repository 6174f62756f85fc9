"""The declared statistical model's structure, without torch: parameters, the parameter space
the fitters read, each channel's yields and shape structure, and :func:`compile_model` (the
config's model with the samples' numbers).

The likelihood's tensor expressions (:mod:`hsbi.inference.statmodel`), its fused kernels
(:mod:`hsbi.inference.kernels`) and the portable workspace (:mod:`hsbi.inference.workspace`)
all evaluate this one compiled model; this module and the kernels import no torch, so a
workspace fits in a process without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from hsbi.config.statmodel import StatModelConfig
from hsbi.exceptions import ConfigError
from hsbi.models.interpolation import code4_coefficients

__all__ = ["ChannelModel", "Parameter", "ParameterSpace", "StatModel", "compile_model"]

#: default bounds and inits per parameter kind
_DEFAULTS = {"normfactor": ((0.0, 10.0), 1.0), "alpha": ((-5.0, 5.0), 0.0), "lumi": ((0.5, 1.5), 1.0)}


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str  # normfactor | alpha | lumi
    bounds: tuple[float, float]
    init: float
    sigma: float | None = None  # constraint width: 1 for alpha, sigma for lumi, None: free
    fixed: bool = False

    @property
    def constrained(self) -> bool:
        return self.sigma is not None


@dataclass(frozen=True)
class ChannelModel:
    """Yields and shape structure of one channel: ``C`` processes, ``P`` parameters, ``S``
    shape parameters (``shape_index``: their positions in theta)."""

    name: str
    processes: tuple[str, ...]
    features: tuple[str, ...]
    nu0: np.ndarray  # (C,)
    normfactors: np.ndarray  # (C, P) 0/1
    yield_lo: np.ndarray  # (C, P) log kappa_lo (0 where no yield modifier)
    yield_hi: np.ndarray  # (C, P)
    lumi: np.ndarray  # (C,) index of the lumi parameter or -1
    shape_index: np.ndarray  # (S,) parameter indices of the shape NPs of this channel
    shape_mask: np.ndarray  # (C, S) bool: process c has shape NP s

    @cached_property
    def kernel_constants(self) -> tuple[np.ndarray, ...]:
        """The yield structure as contiguous numpy arrays, built once (the fused kernels'
        inputs): normfactor mask, code-4 yield kappas and coefficients, log nu0, lumi indices."""
        return (np.ascontiguousarray(self.normfactors, dtype=bool),
                *(np.ascontiguousarray(a, dtype=np.float64) for a in (
                    self.yield_lo, self.yield_hi, code4_coefficients(self.yield_lo, self.yield_hi),
                    np.log(self.nu0 + 1e-300))),
                np.ascontiguousarray(self.lumi, dtype=np.int64))

    @cached_property
    def constants(self):  # -> tuple[torch.Tensor, ...]
        """:attr:`kernel_constants` as torch tensors (the tensor expressions of
        :mod:`hsbi.inference.statmodel`; torch is imported here, not with this module)."""
        import torch

        return tuple(torch.from_numpy(a) for a in self.kernel_constants)

    @cached_property
    def own_shapes(self) -> tuple[np.ndarray, np.ndarray]:
        """Per process, the positions (in ``shape_index``) of its shape NPs, padded with -1
        (C, S_max), and their number (C,): what the fused kernels loop over."""
        from hsbi.inference.kernels import own_indices

        return own_indices(self.shape_mask)


class ParameterSpace:
    """What the fitters (:mod:`hsbi.inference.fitting`) read of a model: its ``parameters``
    (name, bounds, init, constraint width, fixed) and its ``poi``, by name and position. The
    declared model (:class:`StatModel`) and a simulator model's (mu, nuisance)
    (:class:`hsbi.inference.mixture.MixtureParameters`) are both one."""

    parameters: tuple[Parameter, ...]
    poi: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError(f"parameter {name!r}: expected one of {list(self.names)}") from None

    @property
    def poi_index(self) -> int:
        return self.index(self.poi)

    @property
    def init(self) -> np.ndarray:
        return np.array([p.init for p in self.parameters])

    @property
    def bounds(self) -> np.ndarray:
        return np.array([p.bounds for p in self.parameters])

    @property
    def sigmas(self) -> np.ndarray:
        """Constraint widths (NaN for free parameters)."""
        return np.array([p.sigma if p.constrained else np.nan for p in self.parameters])

    def point(self, values: Mapping[str, float] | None = None) -> np.ndarray:
        """A parameter vector: ``values`` by name, the rest at their inits."""
        theta = self.init.copy()
        for name, value in (values or {}).items():
            theta[self.index(name)] = value
        return theta


@dataclass(frozen=True)
class StatModel(ParameterSpace):
    """The compiled model: parameters (POI first), channels; what :func:`nll` evaluates."""

    parameters: tuple[Parameter, ...]
    channels: tuple[ChannelModel, ...]
    poi: str
    truth: dict[str, float] = field(default_factory=dict)

    @property
    def nominal_aux(self) -> np.ndarray:
        """Global observables of the observed data: 0 for NPs, 1 for lumi (NaN: none)."""
        return np.array([(1.0 if p.kind == "lumi" else 0.0) if p.constrained else np.nan
                         for p in self.parameters])

    def truth_point(self) -> np.ndarray:
        return self.point(self.truth)


def _parameters(cfg: StatModelConfig) -> tuple[Parameter, ...]:
    kinds = cfg.parameter_kinds()
    given = {p.name: p for p in cfg.parameters}
    order = [cfg.poi] + [n for n in kinds if n != cfg.poi]
    out = []
    for name in order:
        kind = kinds[name]
        bounds, init = _DEFAULTS[kind]
        par = given.get(name)
        if par is not None and par.bounds is not None:
            bounds = (float(par.bounds[0]), float(par.bounds[1]))
        if par is not None and par.init is not None:
            init = float(par.init)
        sigma = {"alpha": 1.0, "lumi": (par.sigma if par and par.sigma else 0.02)}.get(kind)
        if not bounds[0] <= init <= bounds[1]:
            raise ConfigError(f"config key 'statmodel.parameters' ({name}): init {init:g} is outside "
                              f"its bounds [{bounds[0]:g}, {bounds[1]:g}]")
        out.append(Parameter(name, kind, bounds, init, sigma, bool(par.fixed) if par else False))
    return tuple(out)


def compile_model(cfg: StatModelConfig, nominal_yields: Mapping[tuple[str, str], float],
                  yield_ratios: Mapping[tuple[str, str, str], tuple[float, float]]) -> StatModel:
    """The model of ``cfg`` with the samples' numbers: ``nominal_yields[(channel, process)]``
    and, for normplusshape modifiers, ``yield_ratios[(channel, process, np)] = (down, up)``
    (the variations' yields over the nominal one)."""
    params = _parameters(cfg)
    names = [p.name for p in params]
    channels = []
    for ch in cfg.channels:
        C, P = len(ch.processes), len(params)
        nf, lo, hi = np.zeros((C, P)), np.zeros((C, P)), np.zeros((C, P))
        lumi, nu0 = np.full(C, -1), np.zeros(C)
        shapes: list[int] = []
        for c, proc in enumerate(ch.processes):
            nu0[c] = nominal_yields[(ch.name, proc.name)]
            for mod in proc.modifiers:
                j = names.index(mod.name)
                if mod.type == "normfactor":
                    nf[c, j] = 1.0
                elif mod.type == "lumi":
                    lumi[c] = j
                elif mod.type == "normsys":
                    lo[c, j], hi[c, j] = math.log(mod.lo), math.log(mod.hi)
                else:
                    down, up = yield_ratios[(ch.name, proc.name, mod.name)]
                    lo[c, j], hi[c, j] = _log_kappa(down, ch.name, proc.name, mod.name, "down"), \
                        _log_kappa(up, ch.name, proc.name, mod.name, "up")
                    if j not in shapes:
                        shapes.append(j)
        mask = np.zeros((C, len(shapes)), dtype=bool)
        for c, proc in enumerate(ch.processes):
            for mod in proc.modifiers:
                if mod.type == "normplusshape":
                    mask[c, shapes.index(names.index(mod.name))] = True
        channels.append(ChannelModel(ch.name, tuple(p.name for p in ch.processes), tuple(ch.features),
                                     nu0, nf, lo, hi, lumi, np.array(shapes, dtype=int), mask))
    _check_yields(cfg, channels)
    return StatModel(params, tuple(channels), cfg.poi, dict(cfg.truth))


def _log_kappa(ratio: float, channel: str, process: str, np_name: str, side: str) -> float:
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ConfigError(f"statmodel channel {channel!r}, process {process!r}, modifier {np_name!r}: "
                          f"the {side} variation's yield ratio is {ratio:g}; expected a positive kappa")
    return math.log(ratio)


def _check_yields(cfg: StatModelConfig, channels: Sequence[ChannelModel]) -> None:
    """Every process has a positive expected yield in at least one channel."""
    totals: dict[str, float] = {}
    keys: dict[str, str] = {}
    for c, (ch_cfg, ch) in enumerate(zip(cfg.channels, channels)):
        for p, proc in enumerate(ch_cfg.processes):
            totals[proc.name] = totals.get(proc.name, 0.0) + float(ch.nu0[p])
            keys.setdefault(proc.name, f"statmodel.channels[{c}].processes[{p}]")
    for name, total in totals.items():
        if not total > 0:
            raise ConfigError(f"config key '{keys[name]}' ({name}): the process's expected yield (the sum of its "
                              f"samples' normalised weights) is {total:g} in every channel; expected a positive "
                              "yield in at least one channel")
