"""HiggsML 2014 (ATLAS open data) with a tau-energy-scale nuisance: a data-driven "simulator".

The events are the ingested HiggsML extract (H -> tau tau signal, Z -> tau tau and other
backgrounds). A TES factor ``alpha`` scales the hadronic tau's transverse momentum; the two
features of arXiv:2503.07962 are recomputed per event from the ``PRI_`` tau and lepton columns:

* the visible mass of the tau and the lepton, with **massless four-vectors**:
  ``m_vis^2 = 2 alpha pT_tau pT_lep (cosh(eta_tau - eta_lep) - cos(phi_tau - phi_lep))``,
  so ``m_vis(alpha) = sqrt(alpha) m_vis(1)`` (against the extract's ``DER_mass_vis`` the massless
  value differs by the tau's visible mass, < 1 GeV for most events; see the study's report);
* the ratio ``pT_lep / (alpha pT_tau)``.

The network inputs are their logarithms, ``x = (log m_vis/GeV, log pT ratio)``, on which alpha acts
as a shift: a monotone map of each feature, so every likelihood ratio is the same as on the raw
features (the Jacobian cancels) while the networks see well-scaled, light-tailed inputs.

Approximations, stated: the tau's momentum direction is unchanged by alpha; the extract's
selection (pT_tau > 20 GeV) is not re-applied after scaling, so the process yields do not depend
on alpha (events that would cross the threshold are not in the extract for alpha > 1).

"Simulating" a process at ``alpha`` draws events of that process from the attached split with
probabilities proportional to their weights (the physical mix of background processes and
signal production modes) and computes their features at ``alpha``. Splits never share an event
(ingestion assigns them by a hash of ``EventId``): training and validation samples come from
``train`` and ``validation``, observed data and toys from ``test``. There is no exact likelihood.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from hsbi.exceptions import DataError
from hsbi.models.base import MixtureModel

__all__ = ["TES_COLUMNS", "HiggsTES", "tes_features"]

#: the ingested columns the features are computed from, in this order
TES_COLUMNS = ("PRI_tau_pt", "PRI_tau_eta", "PRI_tau_phi", "PRI_lep_pt", "PRI_lep_eta", "PRI_lep_phi")
#: ingested ``label`` values of the processes
LABELS = {"signal": 1, "background": 0}


def tes_features(columns: np.ndarray, alpha: np.ndarray | float, log: bool = True) -> np.ndarray:
    """``(n, 2)`` features ``(m_vis, pT_lep / pT_tau)`` of events ``columns (n, 6)`` (the
    :data:`TES_COLUMNS`) with the tau's pT scaled by ``alpha`` (scalar or ``(n,)``); their logs
    with ``log``. A scale that makes ``m_vis^2`` or ``pT_tau`` non-positive is refused."""
    cols = np.asarray(columns, dtype=float)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=float), (len(cols),))
    tau_pt = alpha * cols[:, 0]
    m2 = 2.0 * tau_pt * cols[:, 3] * (np.cosh(cols[:, 1] - cols[:, 4]) - np.cos(cols[:, 2] - cols[:, 5]))
    bad = ~(m2 > 0) | ~(tau_pt > 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"TES factor alpha = {alpha[i]:g} makes the visible mass squared non-physical "
            f"(m_vis^2 = {m2[i]:.4g} GeV^2 <= 0, tau pT = {tau_pt[i]:.4g} GeV) for {int(bad.sum())} "
            f"of {len(cols)} events: expected alpha > 0 and events with positive PRI_tau_pt and PRI_lep_pt")
    m, ratio = np.sqrt(m2), cols[:, 3] / tau_pt
    return np.stack([np.log(m), np.log(ratio)] if log else [m, ratio], axis=1)


@dataclass(frozen=True)
class _Events:
    """One split of one process: its TES columns and normalised sampling probabilities."""

    columns: np.ndarray
    probabilities: np.ndarray


@dataclass(frozen=True)
class HiggsTES(MixtureModel):
    """Signal fraction ``mu`` and TES factor ``alpha`` on the HiggsML extract (see the module).

    Yields: signal ``mu N``, background ``(1 - mu) N`` (the convention of arXiv:2503.07962 for
    the signal fraction). ``alpha_min``/``alpha_max``: the trained TES range (0.9-1.1 as in the
    paper). Events come from :meth:`with_events`; :meth:`for_split` chooses the split sampled.
    """

    alpha_min: float = 0.9
    alpha_max: float = 1.1
    processes: tuple[str, ...] = ("signal", "background")
    n_features: int = 2
    poi_range: tuple[float, float] = (0.0, 1.0)
    poi_label: ClassVar[str] = "signal fraction"
    nuisance_label: ClassVar[str] = "tau energy scale alpha"
    feature_labels: ClassVar[tuple[str, ...]] = ("log(m_vis / GeV)", "log(pT_lep / pT_tau)")
    parameters: ClassVar[tuple[str, ...]] = ("alpha_min", "alpha_max")
    exact: ClassVar[bool] = False
    needs_events: ClassVar[bool] = True
    columns: ClassVar[tuple[str, ...]] = TES_COLUMNS
    events: Mapping[str, Mapping[str, _Events]] = field(default_factory=dict, repr=False, compare=False)
    split: str = "train"

    def __post_init__(self) -> None:
        if not 0 < self.alpha_min < 1 < self.alpha_max:
            raise ValueError(f"alpha_min = {self.alpha_min!r}, alpha_max = {self.alpha_max!r}: expected "
                             "0 < alpha_min < 1 < alpha_max (a TES range around the nominal scale)")

    @property
    def nuisance_range(self) -> tuple[float, float]:  # type: ignore[override]
        return (float(self.alpha_min), float(self.alpha_max))

    def with_events(self, splits: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> HiggsTES:
        """A copy holding ``{split: (columns (n, 6), weights (n,), labels (n,))}``."""
        events: dict[str, dict[str, _Events]] = {}
        for split, (cols, w, y) in splits.items():
            events[split] = {}
            for proc, label in LABELS.items():
                sel = y == label
                if not sel.any():
                    raise DataError(f"split {split!r} has no {proc} events (label {label}); expected both "
                                    "signal (label 1) and background (label 0)")
                wp = np.asarray(w[sel], dtype=float)
                if not (np.all(np.isfinite(wp)) and np.all(wp >= 0) and wp.sum() > 0):
                    raise DataError(f"split {split!r}, {proc}: event weights must be finite, >= 0 and not "
                                    "all 0 (they are the sampling probabilities of the events)")
                columns = np.asarray(cols[sel], dtype=float)
                tes_features(columns, 1.0)  # non-physical events are refused here, once
                events[split][proc] = _Events(columns, wp / wp.sum())
        return HiggsTES(self.alpha_min, self.alpha_max, events=events, split=self.split)

    def for_split(self, split: str) -> HiggsTES:
        return HiggsTES(self.alpha_min, self.alpha_max, events=self.events, split=split)

    def _events(self, process: str) -> _Events:
        if self.split not in self.events:
            raise DataError(f"model 'higgs_tes' has no events of split {self.split!r}; it has "
                            f"{sorted(self.events) or 'none'} (attach the ingested samples first)")
        return self.events[self.split][process]

    def check_alpha(self, alpha: np.ndarray, what: str = "TES factor alpha") -> None:
        lo, hi = self.nuisance_range
        alpha = np.atleast_1d(alpha)
        out = alpha[(alpha < lo - 1e-12) | (alpha > hi + 1e-12)]
        if len(out):
            raise DataError(f"{what} = {out[0]:g} is outside the trained range [{lo:g}, {hi:g}] "
                            "(model.parameters alpha_min/alpha_max)")

    def sample(self, rng: np.random.Generator, process: str, nuisance: np.ndarray) -> np.ndarray:
        alpha = np.atleast_1d(np.asarray(nuisance, dtype=float))
        self.check_alpha(alpha)
        ev = self._events(process)
        idx = rng.choice(len(ev.probabilities), size=len(alpha), p=ev.probabilities)
        return tes_features(ev.columns[idx], alpha)

    def process_events(self, process: str, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """All events of ``process`` in the split at ``alpha``, with their sampling probabilities."""
        self.check_alpha(np.array([alpha]))
        ev = self._events(process)
        return tes_features(ev.columns, alpha), ev.probabilities

    def split_summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """Events and effective events ``(sum w)^2 / sum w^2`` per split and process."""
        return {split: {proc: {"events": int(len(ev.probabilities)),
                               "effective": round(float(1.0 / np.sum(ev.probabilities ** 2)), 1)}
                        for proc, ev in procs.items()} for split, procs in self.events.items()}

    def expected_events(self, mu: float, nuisance: float, n_expected: float) -> tuple[np.ndarray, np.ndarray]:
        """Every event of the split at ``nuisance`` with its expected count (the Asimov data)."""
        self.check_alpha(np.array([nuisance]))
        xs, ws = [], []
        for proc, y in zip(self.processes, self.yields(n_expected, mu, nuisance)):
            ev = self._events(proc)
            xs.append(tes_features(ev.columns, nuisance))
            ws.append(y * ev.probabilities)
        return np.concatenate(xs), np.concatenate(ws)

    def yield_coefficients(self, n_expected: float, nuisance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = len(np.atleast_1d(nuisance))
        return np.tile([0.0, n_expected], (k, 1)), np.tile([n_expected, -n_expected], (k, 1))

    def log_components(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        raise DataError("model 'higgs_tes' has no exact likelihood (its events are detector-simulated "
                        "data); use a trained estimator")

    def support(self) -> list[tuple[float, float]]:
        """Per feature, the range of every attached event over the TES range."""
        cols = np.concatenate([ev.columns for split in self.events.values() for ev in split.values()])
        if not len(cols):
            raise DataError("model 'higgs_tes' has no events attached")
        feats = np.concatenate([tes_features(cols, a) for a in self.nuisance_range])
        return [(float(lo), float(hi)) for lo, hi in zip(feats.min(0), feats.max(0))]
