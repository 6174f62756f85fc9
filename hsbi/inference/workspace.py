"""The declared model as a portable workspace: one JSON document, its per-event arrays and its
networks, fitted again without the training stack.

A workspace is a directory::

    workspace.json          the model (HS3 layout and HistFactory/pyhf naming, below)
    arrays/*.npy            per-event arrays (NumPy's .npy), each named with its sha256
    networks/*.onnx         the networks (ONNX, input standardisation inside the graph)

``workspace.json`` follows HS3's top-level layout: ``distributions`` (one ``hsbi_nsbi_dist`` per
channel: its processes with their nominal yields and modifiers, ``normfactor``, ``lumi``,
``normsys`` with ``data: {lo, hi}`` kappas, ``normplusshape`` with the variations' yield ratios
as kappas and their shape networks; plus a ``gaussian_dist`` constraint per constrained
parameter, mean the global observable ``nom_<name>``), ``data`` (per channel the dataset's
per-event arrays: weights ``w`` (1, n), nominal log ratios ``logp`` (1, n, C), shape log ratios
``lo``/``hi`` (1, n, C, S), and the events' features ``x`` when known), ``likelihoods``,
``parameter_points`` (inits and global observables), ``domains`` (bounds) and ``analyses`` (the
POI). hsbi's own settings (confidence levels, scan points, parameter kinds) are under ``misc``.
Each channel also carries its shape normalisation sample (``normalisation``: weights ``v``
(C, n) and self-normalised shape log ratios ``lo``/``hi`` (C, n, S)).

:func:`load_workspace` verifies every file against its sha256 before reading it and rebuilds
the compiled model, its normalisation and the dataset as numpy arrays; :func:`fit_workspace`
runs the same fit as ``InferProfileLikelihood`` (:func:`hsbi.inference.fitting.fit_summary`) on
them. Nothing on that path imports torch; :meth:`Workspace.evaluate` recomputes per-event terms
of new events with ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hsbi.exceptions import DataError
from hsbi.inference.model import ChannelModel, Parameter, StatModel
from hsbi.inference.nll import ArrayDataset, ArrayEvents, ArrayNormalisation, DeclaredLikelihood

__all__ = ["FORMAT", "MODIFIERS", "Workspace", "WorkspaceError", "fit_workspace", "load_workspace",
           "write_workspace"]

FORMAT, VERSION = "hsbi-workspace", 1
#: the modifier types a workspace may use
MODIFIERS = ("normfactor", "lumi", "normsys", "normplusshape")
_DOC = "workspace.json"


class WorkspaceError(DataError):
    """A workspace file is missing, altered or not one hsbi can read."""


# --- writing ------------------------------------------------------------------------------


class _Writer:
    """Files of a workspace under construction, each named and referenced by its sha256."""

    def __init__(self, out: Path) -> None:
        self.out = out
        (out / "arrays").mkdir(parents=True, exist_ok=True)

    def _file(self, folder: str, stem: str, suffix: str, content: bytes) -> dict:
        digest = hashlib.sha256(content).hexdigest()
        rel = f"{folder}/{stem}.{digest[:16]}{suffix}"
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return {"file": rel, "sha256": digest}

    def array(self, stem: str, a: Any) -> dict:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(np.asarray(a)), allow_pickle=False)
        return self._file("arrays", stem, ".npy", buf.getvalue())

    def network(self, stem: str, content: bytes) -> dict:
        return self._file("networks", stem, ".onnx", content)


def _modifiers(model: StatModel, ch: ChannelModel, c: int, nets: Mapping, w: _Writer) -> list[dict]:
    """The HS3/pyhf-named modifiers of process ``c`` of channel ``ch``."""
    out = []
    shape_params = {int(j) for j in ch.shape_index[ch.shape_mask[c]]} if len(ch.shape_index) else set()
    for j, par in enumerate(model.parameters):
        if ch.normfactors[c, j]:
            out.append({"type": "normfactor", "parameter": par.name})
        elif ch.lumi[c] == j:
            out.append({"type": "lumi", "parameter": par.name})
        elif j in shape_params:
            mod = {"type": "normplusshape", "parameter": par.name,
                   "data": {"lo": math.exp(ch.yield_lo[c, j]), "hi": math.exp(ch.yield_hi[c, j])}}
            members = {side: nets.get((ch.name, ch.processes[c], par.name, side)) for side in ("down", "up")}
            if all(members.values()):
                mod["networks"] = {side: [w.network(f"{ch.name}.{ch.processes[c]}.{par.name}.{side}.{m}", b)
                                          for m, b in enumerate(blobs)] for side, blobs in members.items()}
            out.append(mod)
        elif ch.yield_lo[c, j] != 0.0 or ch.yield_hi[c, j] != 0.0:
            out.append({"type": "normsys", "parameter": par.name,
                        "data": {"lo": math.exp(ch.yield_lo[c, j]), "hi": math.exp(ch.yield_hi[c, j])}})
    return out


def write_workspace(out: Path, lik: DeclaredLikelihood, data: Any, *, levels: Sequence[float], scan_points: int,
                    networks: Mapping[tuple[str, str, str, str], Sequence[bytes]] | None = None,
                    events: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                    description: str = "") -> Path:
    """Write the model of ``lik`` with the first dataset of ``data`` into directory ``out``;
    returns the path of ``workspace.json``.

    ``networks``: ONNX bytes per ``(channel, process, np, side)`` (``np``/``side`` empty for the
    nominal ratio), one per ensemble member; ``events``: per channel, the features ``x`` of the
    dataset's events and of the normalisation sample (``data``, ``normalisation``: (n, D)
    float32), so :meth:`Workspace.evaluate` can be checked against the stored terms."""
    from hsbi import __version__

    out.mkdir(parents=True, exist_ok=True)
    w, nets, events = _Writer(out), networks or {}, events or {}
    model = lik.model
    first = np.zeros(1, dtype=np.int64)
    aux = np.asarray(data.aux, dtype=np.float64)[0]
    distributions, data_entries = [], []
    for k, (ch, norm) in enumerate(zip(model.channels, lik.norms)):
        ev = data.channels[k]
        samples = []
        for c, proc in enumerate(ch.processes):
            sample = {"name": proc, "yield": float(ch.nu0[c]), "modifiers": _modifiers(model, ch, c, nets, w)}
            members = nets.get((ch.name, proc, "", ""))
            if members:
                sample["network"] = [w.network(f"{ch.name}.{proc}.nominal.{m}", b) for m, b in enumerate(members)]
            samples.append(sample)
        norm_entry = {key: w.array(f"{ch.name}.normalisation.{key}", np.asarray(getattr(norm, key), dtype=np.float64))
                      for key in ("v", "lo", "hi")}
        if "normalisation" in events.get(ch.name, {}):
            norm_entry["x"] = w.array(f"{ch.name}.normalisation.x", np.asarray(events[ch.name]["normalisation"],
                                                                                 dtype=np.float32))
        distributions.append({"name": f"{ch.name}_model", "type": "hsbi_nsbi_dist", "channel": ch.name,
                              "observables": list(ch.features),
                              "shape_parameters": [model.names[j] for j in ch.shape_index],
                              "samples": samples, "normalisation": norm_entry})
        one = ev.take(first)
        entry = {"name": f"observed_{ch.name}", "type": "hsbi_event_terms", "channel": ch.name,
                 **{key: w.array(f"{ch.name}.data.{key}", np.asarray(getattr(one, key), dtype=np.float64))
                    for key in ("w", "logp", "lo", "hi")}}
        if "data" in events.get(ch.name, {}):
            entry["x"] = w.array(f"{ch.name}.data.x", np.asarray(events[ch.name]["data"], dtype=np.float32))
        data_entries.append(entry)
    constrained = [p for p in model.parameters if p.constrained]
    for p in constrained:
        distributions.append({"name": f"{p.name}_constraint", "type": "gaussian_dist", "x": p.name,
                              "mean": f"nom_{p.name}", "sigma": float(p.sigma)})
    doc = {
        "metadata": {"hs3_version": "0.2", "packages": [{"name": "hsbi", "version": __version__}],
                     "description": description or "hsbi declared statistical model (unbinned NSBI)"},
        "distributions": distributions,
        "data": data_entries,
        "likelihoods": [{"name": "observed", "distributions": [d["name"] for d in distributions[: len(model.channels)]],
                         "data": [d["name"] for d in data_entries],
                         "aux_distributions": [f"{p.name}_constraint" for p in constrained]}],
        "parameter_points": [
            {"name": "default_values", "parameters": [{"name": p.name, "value": p.init} for p in model.parameters]},
            {"name": "global_observables", "parameters": [{"name": f"nom_{p.name}", "value": float(aux[j])}
                                                          for j, p in enumerate(model.parameters) if p.constrained]}],
        "domains": [{"name": "default_domain", "type": "product_domain",
                     "axes": [{"name": p.name, "min": p.bounds[0], "max": p.bounds[1]} for p in model.parameters]}],
        "analyses": [{"name": "hsbi", "likelihood": "observed", "parameters_of_interest": [model.poi],
                      "domains": ["default_domain"], "init": "default_values"}],
        "misc": {"hsbi": {"format": FORMAT, "version": VERSION, "levels": list(map(float, levels)),
                          "scan_points": int(scan_points), "truth": dict(model.truth),
                          "parameters": [{"name": p.name, "kind": p.kind, "fixed": p.fixed}
                                         for p in model.parameters]}},
    }
    path = out / _DOC
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


# --- reading ------------------------------------------------------------------------------


class _Reader:
    """Reads and verifies the files a workspace document refers to."""

    def __init__(self, root: Path, doc_path: Path) -> None:
        self.root, self.doc_path = root, doc_path

    def _verified(self, ref: Any, where: str) -> Path:
        if not (isinstance(ref, dict) and isinstance(ref.get("file"), str) and isinstance(ref.get("sha256"), str)):
            raise WorkspaceError(f"workspace {self.doc_path}: {where}: expected a file reference "
                                 "{\"file\": ..., \"sha256\": ...}")
        path = self.root / ref["file"]
        if not path.is_file():
            raise WorkspaceError(f"workspace {self.doc_path}: {where}: file {ref['file']!r} is missing")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != ref["sha256"]:
            raise WorkspaceError(f"workspace {self.doc_path}: {where}: file {ref['file']!r} has sha256 {digest[:16]}..., "
                                 f"expected {ref['sha256'][:16]}... (altered or truncated)")
        return path

    def array(self, ref: Any, where: str, ndim: int) -> np.ndarray:
        a = np.load(self._verified(ref, where), allow_pickle=False)
        if a.ndim != ndim:
            raise WorkspaceError(f"workspace {self.doc_path}: {where}: expected an array of {ndim} dimensions, "
                                 f"found shape {a.shape}")
        return a

    def network(self, ref: Any, where: str) -> Path:
        return self._verified(ref, where)


def _get(obj: Mapping, key: str, where: str, doc_path: Path) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise WorkspaceError(f"workspace {doc_path}: {where}: missing key {key!r}")
    return obj[key]


@dataclass(frozen=True)
class Workspace:
    """A loaded workspace: the likelihood (numpy), the observed dataset, hsbi's settings and the
    networks (paths of verified ONNX files per ``(channel, process, np, side)``)."""

    path: Path
    doc: dict
    likelihood: DeclaredLikelihood
    data: ArrayDataset
    levels: tuple[float, ...]
    scan_points: int
    networks: dict[tuple[str, str, str, str], tuple[Path, ...]]
    events: dict[str, dict[str, np.ndarray]]

    def evaluate(self, channel: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``logp`` (n, C), ``lo``, ``hi`` (n, C, S) of events ``x`` (n, D) in ``channel`` from the
        ONNX networks (ONNX Runtime; each term the mean of its members' outputs)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise WorkspaceError("evaluating a workspace's networks needs the package onnxruntime "
                                 "(pip install 'hsbi[onnx]')") from None
        k = [ch.name for ch in self.likelihood.model.channels].index(channel)
        ch = self.likelihood.model.channels[k]
        names = [self.likelihood.model.names[j] for j in ch.shape_index]
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1

        def mean(key: tuple[str, str, str, str]) -> np.ndarray:
            if key not in self.networks:
                raise WorkspaceError(f"workspace {self.path}: channel {channel!r}: no network for "
                                     f"{'/'.join(p for p in key[1:] if p)}: the workspace was written without networks")
            outs = []
            for path in self.networks[key]:
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                outs.append(sess.run(None, {sess.get_inputs()[0].name: x32})[0].astype(np.float64).reshape(len(x32)))
            return np.mean(outs, axis=0)

        logp = np.zeros((len(x32), len(ch.processes)))
        lo, hi = np.zeros((len(x32), len(ch.processes), len(names))), np.zeros((len(x32), len(ch.processes), len(names)))
        for c, proc in enumerate(ch.processes):
            logp[:, c] = mean((channel, proc, "", ""))
            for s, name in enumerate(names):
                if ch.shape_mask[c, s]:
                    lo[:, c, s], hi[:, c, s] = mean((channel, proc, name, "down")), mean((channel, proc, name, "up"))
        return logp, lo, hi


def _parameters(doc: dict, doc_path: Path) -> tuple[tuple[Parameter, ...], str, np.ndarray]:
    """Parameters (with kinds, bounds, inits, constraint widths), the POI and the global
    observables (P,) of a workspace document."""
    misc = _get(_get(doc, "misc", "top level", doc_path), "hsbi", "misc", doc_path)
    analysis = _get(doc, "analyses", "top level", doc_path)[0]
    poi = _get(analysis, "parameters_of_interest", "analyses[0]", doc_path)[0]
    axes = {a["name"]: (float(a["min"]), float(a["max"])) for a in _get(doc, "domains", "top level", doc_path)[0]["axes"]}
    points = {p["name"]: p["parameters"] for p in _get(doc, "parameter_points", "top level", doc_path)}
    inits = {p["name"]: float(p["value"]) for p in points.get("default_values", [])}
    nominal = {p["name"]: float(p["value"]) for p in points.get("global_observables", [])}
    sigmas = {d["x"]: float(d["sigma"]) for d in doc["distributions"] if d.get("type") == "gaussian_dist"}
    params, aux = [], []
    for k, entry in enumerate(_get(misc, "parameters", "misc.hsbi", doc_path)):
        name = entry["name"]
        if name not in axes or name not in inits:
            raise WorkspaceError(f"workspace {doc_path}: misc.hsbi.parameters[{k}] ({name}): expected its bounds in "
                                 "domains[0] and its init in parameter_points 'default_values'")
        params.append(Parameter(name, entry["kind"], axes[name], inits[name], sigmas.get(name), bool(entry["fixed"])))
        aux.append(nominal.get(f"nom_{name}", math.nan) if name in sigmas else math.nan)
    return tuple(params), poi, np.array(aux)


def _channel(dist: dict, where: str, names: list[str], doc_path: Path) -> ChannelModel:
    """A channel's compiled structure from its ``hsbi_nsbi_dist`` entry."""
    samples = _get(dist, "samples", where, doc_path)
    shape_names = list(_get(dist, "shape_parameters", where, doc_path))
    C, P = len(samples), len(names)
    nf, lo, hi = np.zeros((C, P)), np.zeros((C, P)), np.zeros((C, P))
    lumi, nu0 = np.full(C, -1), np.zeros(C)
    mask = np.zeros((C, len(shape_names)), dtype=bool)
    for c, sample in enumerate(samples):
        nu0[c] = float(_get(sample, "yield", f"{where}.samples[{c}]", doc_path))
        for m, mod in enumerate(_get(sample, "modifiers", f"{where}.samples[{c}]", doc_path)):
            at = f"{where}.samples[{c}].modifiers[{m}]"
            if mod.get("type") not in MODIFIERS:
                raise WorkspaceError(f"workspace {doc_path}: {at}.type = {mod.get('type')!r}: expected one of "
                                     f"{', '.join(MODIFIERS)}")
            name = _get(mod, "parameter", at, doc_path)
            if name not in names:
                raise WorkspaceError(f"workspace {doc_path}: {at}.parameter = {name!r}: expected one of {names}")
            j = names.index(name)
            if mod["type"] == "normfactor":
                nf[c, j] = 1.0
            elif mod["type"] == "lumi":
                lumi[c] = j
            else:
                data = _get(mod, "data", at, doc_path)
                kappas = (float(data.get("lo", math.nan)), float(data.get("hi", math.nan)))
                if not all(k > 0 and math.isfinite(k) for k in kappas):
                    raise WorkspaceError(f"workspace {doc_path}: {at}.data = {data}: expected positive kappas lo, hi")
                lo[c, j], hi[c, j] = math.log(kappas[0]), math.log(kappas[1])
                if mod["type"] == "normplusshape":
                    if name not in shape_names:
                        raise WorkspaceError(f"workspace {doc_path}: {at}: parameter {name!r} is not among the "
                                             f"channel's shape_parameters {shape_names}")
                    mask[c, shape_names.index(name)] = True
    return ChannelModel(dist["channel"], tuple(s["name"] for s in samples), tuple(dist.get("observables", ())), nu0,
                        nf, lo, hi, lumi, np.array([names.index(n) for n in shape_names], dtype=int), mask)


def _check_shapes(doc_path: Path, where: str, arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple]) -> None:
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise WorkspaceError(f"workspace {doc_path}: {where}.{key}: expected shape {shape}, found "
                                 f"{arrays[key].shape}")


def load_workspace(path: Path | str) -> Workspace:
    """Read and verify a workspace (its directory or its ``workspace.json``)."""
    path = Path(path)
    doc_path = path / _DOC if path.is_dir() else path
    if not doc_path.is_file():
        raise WorkspaceError(f"workspace {path}: no {_DOC} there; expected a directory written by ExportWorkspace "
                             "or the path of its workspace.json")
    try:
        doc = json.loads(doc_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WorkspaceError(f"workspace {doc_path}: not valid JSON ({err})") from None
    misc = _get(_get(doc, "misc", "top level", doc_path), "hsbi", "misc", doc_path)
    if misc.get("format") != FORMAT or misc.get("version") != VERSION:
        raise WorkspaceError(f"workspace {doc_path}: misc.hsbi format {misc.get('format')!r} version "
                             f"{misc.get('version')!r}; expected {FORMAT!r} version {VERSION}")
    reader = _Reader(doc_path.parent, doc_path)
    params, poi, aux = _parameters(doc, doc_path)
    names = [p.name for p in params]
    likelihood = _get(doc, "likelihoods", "top level", doc_path)[0]
    dists = {d["name"]: (k, d) for k, d in enumerate(_get(doc, "distributions", "top level", doc_path))}
    data_by_name = {d["name"]: (k, d) for k, d in enumerate(_get(doc, "data", "top level", doc_path))}
    data_by_channel = {data_by_name[n][1].get("channel"): data_by_name[n] for n in likelihood.get("data", [])
                       if n in data_by_name}
    channels, norms, events, networks, features = [], [], [], {}, {}
    for name in _get(likelihood, "distributions", "likelihoods[0]", doc_path):
        if name not in dists:
            raise WorkspaceError(f"workspace {doc_path}: likelihoods[0].distributions names {name!r}: expected one "
                                 "of the distributions' names")
        k, dist = dists[name]
        where = f"distributions[{k}]"
        if dist.get("type") != "hsbi_nsbi_dist":
            raise WorkspaceError(f"workspace {doc_path}: {where}.type = {dist.get('type')!r}: expected "
                                 "'hsbi_nsbi_dist' for a channel of the likelihood")
        ch = _channel(dist, where, names, doc_path)
        if ch.name not in data_by_channel:
            raise WorkspaceError(f"workspace {doc_path}: channel {ch.name!r} has no data in likelihoods[0].data: "
                                 "expected one data entry per channel")
        norm_ref = _get(dist, "normalisation", where, doc_path)
        norm = {key: reader.array(_get(norm_ref, key, f"{where}.normalisation", doc_path), f"{where}.normalisation.{key}",
                                  nd) for key, nd in (("v", 2), ("lo", 3), ("hi", 3))}
        C, S, n = len(ch.processes), len(ch.shape_index), norm["v"].shape[1]
        _check_shapes(doc_path, f"{where}.normalisation", norm, {"v": (C, n), "lo": (C, n, S), "hi": (C, n, S)})
        j, entry = data_by_channel[ch.name]
        terms = {key: reader.array(_get(entry, key, f"data[{j}]", doc_path), f"data[{j}].{key}", nd)
                 for key, nd in (("w", 2), ("logp", 3), ("lo", 4), ("hi", 4))}
        n = terms["w"].shape[1]
        _check_shapes(doc_path, f"data[{j}]", terms, {"w": (1, n), "logp": (1, n, C), "lo": (1, n, C, S),
                                                      "hi": (1, n, C, S)})
        channels.append(ch)
        norms.append(ArrayNormalisation(norm["v"], norm["lo"], norm["hi"]))
        events.append(ArrayEvents(terms["w"], terms["logp"], terms["lo"], terms["hi"]))
        features[ch.name] = {key: reader.array(ref, f"{label}.x", 2) for key, ref, label in (
            ("data", entry.get("x"), f"data[{j}]"), ("normalisation", norm_ref.get("x"), f"{where}.normalisation"))
            if ref is not None}
        for c, sample in enumerate(dist["samples"]):
            at = f"{where}.samples[{c}]"
            if sample.get("network"):
                networks[(ch.name, sample["name"], "", "")] = tuple(
                    reader.network(r, f"{at}.network[{m}]") for m, r in enumerate(sample["network"]))
            for i, mod in enumerate(sample["modifiers"]):
                for side, refs in (mod.get("networks") or {}).items():
                    networks[(ch.name, sample["name"], mod["parameter"], side)] = tuple(
                        reader.network(r, f"{at}.modifiers[{i}].networks.{side}[{m}]") for m, r in enumerate(refs))
    model = StatModel(params, tuple(channels), poi, dict(misc.get("truth", {})))
    lik = DeclaredLikelihood(model, tuple(norms))
    data = ArrayDataset(tuple(events), aux[None])
    return Workspace(doc_path, doc, lik, data, tuple(map(float, misc.get("levels", (0.6827, 0.95)))),
                     int(misc.get("scan_points", 41)), networks, features)


def fit_workspace(path: Path | str, log: Callable[[str], None] = print) -> dict:
    """The observed fit of a workspace: best fit, errors, MINOS intervals, scan, pulls, impacts
    and correlations (:func:`hsbi.inference.fitting.fit_summary`, as ``InferProfileLikelihood``)
    with the yields and the dataset's events per channel."""
    from hsbi.inference.fitting import fit_summary

    ws = load_workspace(path)
    model = ws.likelihood.model
    log(f"workspace {ws.path}: {len(model.channels)} channel(s), {len(model.names)} parameters")
    result = fit_summary(ws.likelihood, ws.data, ws.levels, ws.scan_points, log)
    result["yields"] = {f"{ch.name}/{p}": float(ch.nu0[c]) for ch in model.channels for c, p in enumerate(ch.processes)}
    result["data"] = {ch.name: {"events": int(np.count_nonzero(ev.w[0])), "sum_weights": float(ev.w[0].sum())}
                      for ch, ev in zip(model.channels, ws.data.channels)}
    return result
