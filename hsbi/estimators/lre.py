"""Parameterised likelihood-ratio classifiers (LRE), one per process, and their ensemble."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numba as nb
import numpy as np
import torch
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from torch import nn

from hsbi.estimators.io import Standardised, load_nets, save_nets
from hsbi.numba_cache import ensure_cache_dir

__all__ = ["LREEnsemble", "RatioNet", "load_members", "save_member"]

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


class RatioNet(Standardised):
    """A classifier ``f(x, z)`` whose logit estimates ``log p_c(x | z) / p_ref(x)``.

    Arguments:
        n_features: ``D``, the event features.
        widths: hidden layer widths.
        activation: one of relu, silu, tanh, elu.
        n_nuisances: ``P``, the nuisance inputs after the features (1: a scalar ``z``).

    Inputs are standardised with buffers (``shift``, ``scale`` of shape ``(D + P,)``) set from the
    training data, so a saved state dict is self-contained. ``hparams`` names ``n_nuisances``
    only when it is not 1 (so one-nuisance members saved before it existed load unchanged).
    """

    def __init__(self, n_features: int, widths: Sequence[int], activation: str = "silu",
                 n_nuisances: int = 1) -> None:
        super().__init__(n_features + n_nuisances)
        self.hparams = {"n_features": n_features, "widths": list(widths), "activation": activation}
        if n_nuisances != 1:
            self.hparams["n_nuisances"] = n_nuisances
        layers: list[nn.Module] = []
        width_in = n_features + n_nuisances
        for width in widths:
            layers += [nn.Linear(width_in, width), _ACTIVATIONS[activation]()]
            width_in = width
        layers.append(nn.Linear(width_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(N,)`` for inputs ``(N, D + P)`` (features, then nuisances)."""
        return self.net((inputs - self.shift) / self.scale).squeeze(-1)


def save_member(path: Path, nets: Mapping[str, RatioNet]) -> None:
    """Write one ensemble member: ``weights.safetensors`` and ``estimator.json`` (no pickle)."""
    save_nets(path, nets, "lre")


def _load_member(path: Path) -> dict[str, RatioNet]:
    return load_nets(path, RatioNet)


def load_members(paths: Sequence[Path]) -> LREEnsemble:
    """An ensemble from member directories written by :func:`save_member`."""
    return LREEnsemble([_load_member(Path(p)) for p in paths])


# ---------------------------------------------------------------------------------------------
# The ensemble's float32 evaluation: fused elementwise kernels (numba) around torch's matmuls.
#
# Activations are held unit-major, ``(G networks, H units, Q rows)`` with the rows (event, nuisance
# value) innermost, so every loop below runs over contiguous rows with a scalar bias and weight
# per (network, unit), and vectorises. Between the kernels only the hidden-to-hidden matmuls run
# in torch (``bmm``, MKL). ``exp`` is 2^round(u) written into a float's exponent bits times a
# polynomial of the remainder: torch's ``silu`` (an exp per element) ran at ~1 Gelem/s on one
# core here and cost as much as the matmuls.
# ---------------------------------------------------------------------------------------------

ensure_cache_dir(__file__)  # numba's cache: beside this file, else a writable place

_F32 = np.float32
_L2E, _NL2E, _N2L2E = _F32(1.4426950408889634), _F32(-1.4426950408889634), _F32(-2.8853900817779268)
_ULO, _UHI = _F32(-126.0), _F32(128.0)  # 2^u: 2^-126 (the smallest normal) below, inf at 128
_S23, _O23 = _F32(2.0**23), _F32(127.0 * 2.0**23)
# 2^f on |f| <= 1/2, degree 5 (minimax in relative error: 1.6e-7, 3 ulp; degree 6, 1 ulp, made the
# output layer 15% slower)
_P0, _P1, _P2, _P3, _P4, _P5 = (_F32(c) for c in (1.00000007, 6.9314697e-01, 2.402212e-01, 5.550713e-02,
                                                  9.67554e-03, 1.32765e-03))
# exp(r) on |r| <= ln(2) / 2 after Cody and Waite's two-part reduction by k ln 2 (Taylor, degree 7)
_LN2_HI, _LN2_LO, _ELIM = _F32(0.693359375), _F32(-2.12194440e-4), _F32(87.0)
_E2, _E3, _E4, _E5, _E6, _E7 = (_F32(1 / math.factorial(i)) for i in range(2, 8))
_ONE, _ZERO, _TANH_MAX = _F32(1.0), _F32(0.0), _F32(9.0)  # tanh(9) = 1 in float32

#: activation codes of the kernels (``_IDENTITY``: none, the output layer of a one-layer net;
#: ``_SILU_LOG2``: silu of ``v`` given ``u = -log2(e) v``, times ``-1 / ln(2)``: ``u / (1 + 2^u)``)
_SILU, _RELU, _TANH, _ELU, _IDENTITY, _SILU_LOG2 = 0, 1, 2, 3, 4, 5
#: the first layer's factored ``exp(s * (a + c)) = exp(s * a) exp(s * c)`` (``a``: the events'
#: part, ``c``: the nuisance's): ``s`` per activation
_EXP_SIGN = {_SILU: -1.0, _TANH: -2.0, _ELU: 1.0}
#: ... used where both |s a| and |s c| are below this (products of normal float32 numbers)
_FACTOR_MAX = _F32(40.0)

#: rows (event, nuisance value) per block of the kernels' evaluation: a layer's activations, ``G *
#: width * rows`` floats (0.8 MB for 6 networks of width 64), stay near the cache (256 and 512 rows
#: ran alike, within this machine's noise; 1024 rows up to 40% slower for 20 networks)
_BLOCK_ROWS = 512
#: ... and at least this many events (see :meth:`LREEnsemble.log_components`)
_BLOCK_EVENTS = 32

_KW = {"fastmath": {"contract"}, "error_model": "numpy", "boundscheck": False, "nogil": True, "cache": True}


@intrinsic
def _as_float32(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits``."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@nb.njit(inline="always", **_KW)
def _pow2(k):
    """``2^k`` for an integral float ``k`` in [-126, 128] (inf at 128)."""
    return _as_float32(np.int32(k * _S23 + _O23))


@nb.njit(inline="always", **_KW)
def _exp2(u):
    """``2^u`` within 1.6e-7 (``u`` clamped to [-126, 128]: 2^-126 below, inf at 128; NaN to
    -126, the callers keep it in their other operand)."""
    u = min(max(u, _ULO), _UHI)  # vmaxps, vminps
    k = np.rint(u)
    f = u - k
    f2 = f * f
    return ((_P0 + f * _P1) + f2 * ((_P2 + f * _P3) + f2 * (_P4 + f * _P5))) * _pow2(k)


@nb.njit(inline="always", **_KW)
def _exp(u):
    """``exp(u)`` within 1 ulp for |u| <= 87 (``u`` clamped there): for the first layer's
    factors, whose arguments reach 40 (``_exp2(u * log2 e)`` would add |u| 6e-8 to the error)."""
    u = min(max(u, -_ELIM), _ELIM)
    k = np.rint(u * _L2E)
    r = (u - k * _LN2_HI) - k * _LN2_LO
    r2 = r * r
    return ((_ONE + r) + r2 * ((_E2 + r * _E3) + r2 * ((_E4 + r * _E5) + r2 * (_E6 + r * _E7)))) * _pow2(k)


@nb.njit(inline="always", **_KW)
def _silu(v):
    return v / (_ONE + _exp2(v * _NL2E))


@nb.njit(inline="always", **_KW)
def _relu(v):
    return _ZERO if v < _ZERO else v  # noqa: FURB136 (max would not keep NaN)


@nb.njit(inline="always", **_KW)
def _tanh(v):
    e = _exp2(min(max(v, -_TANH_MAX), _TANH_MAX) * _N2L2E)
    t = (_ONE - e) / (_ONE + e)
    return v if np.isnan(v) else t


@nb.njit(inline="always", **_KW)
def _elu(v):
    return v if (v > _ZERO or np.isnan(v)) else _exp2(v * _L2E) - _ONE


@nb.njit(inline="always", **_KW)
def _act_into(x, b, out, act):
    """``out[q] = act(x[q] + b)`` (``out`` may be ``x``)."""
    if act == _SILU:
        for q in range(len(out)):
            out[q] = _silu(x[q] + b)
    elif act == _RELU:
        for q in range(len(out)):
            out[q] = _relu(x[q] + b)
    elif act == _TANH:
        for q in range(len(out)):
            out[q] = _tanh(x[q] + b)
    elif act == _ELU:
        for q in range(len(out)):
            out[q] = _elu(x[q] + b)
    else:
        for q in range(len(out)):
            out[q] = x[q] + b


@nb.njit(inline="always", **_KW)
def _act_dot_into(x, b, w, acc, act):
    """``acc[q] += w * act(x[q] + b)`` (silu as ``_SILU_LOG2``)."""
    if act == _SILU_LOG2:
        for q in range(len(acc)):
            u = x[q] + b
            acc[q] += w * (u / (_ONE + _exp2(u)))
    elif act == _RELU:
        for q in range(len(acc)):
            acc[q] += w * _relu(x[q] + b)
    elif act == _TANH:
        for q in range(len(acc)):
            acc[q] += w * _tanh(x[q] + b)
    elif act == _ELU:
        for q in range(len(acc)):
            acc[q] += w * _elu(x[q] + b)
    else:
        for q in range(len(acc)):
            acc[q] += w * (x[q] + b)


@nb.njit(**_KW)
def _first_layer(x, shift, scale, w, c, ec, act, sign, out):
    """The first layer's activations of every network for ``m`` events and ``K`` nuisance values:
    ``out[g, j, k * m + r] = act(a[g, j, r] + c[k, g, j])`` with the events' part ``a = w[g, j] .
    (x[r] - shift[g]) / scale[g]`` (``x (m, I)``, ``w (G, H, I)``) and the nuisance's part (and
    bias) ``c (K, G, H)``. With ``sign`` (``s`` of :data:`_EXP_SIGN`, else 0) and ``ec = exp(s c)``
    (zeros where ``|s c|`` exceeds :data:`_FACTOR_MAX`), the activation's ``exp(s (a + c))`` is
    ``exp(s a) ec``: one ``exp`` per event and unit for all ``K`` values (where a bound on
    ``|s a|`` from the weights and the largest inputs is below :data:`_FACTOR_MAX`)."""
    m, n_in = x.shape
    G, H, _ = w.shape
    K = c.shape[0]
    s = _F32(sign)  # float32 arithmetic (a float64 sign would make the exp below float64)
    xs = np.empty((n_in, m), np.float32)
    x_max = np.empty(n_in, np.float32)
    a = np.empty(m, np.float32)
    ea = np.empty(m, np.float32)
    for g in range(G):
        for d in range(n_in):
            sh, sc, xd, top = shift[g, d], scale[g, d], xs[d], _ZERO
            for r in range(m):
                xd[r] = (x[r, d] - sh) / sc
            for r in range(m):
                top = max(top, abs(xd[r]))
            x_max[d] = top
        for j in range(H):
            wj = w[g, j]
            w0, x0 = wj[0], xs[0]
            bound = abs(w0) * x_max[0]
            for r in range(m):
                a[r] = w0 * x0[r]
            for d in range(1, n_in):
                wd, xd = wj[d], xs[d]
                bound += abs(wd) * x_max[d]
                for r in range(m):
                    a[r] += wd * xd[r]
            factored = s != _ZERO and bound * abs(s) <= _FACTOR_MAX
            if factored:
                for r in range(m):
                    ea[r] = _exp(s * a[r])
            row = out[g, j]
            for k in range(K):
                ck, ek, base = c[k, g, j], ec[k, g, j], k * m
                if not (factored and ek != _ZERO):
                    _act_into(a, ck, row[base : base + m], act)
                elif act == _SILU:
                    for r in range(m):
                        row[base + r] = (a[r] + ck) / (_ONE + ea[r] * ek)
                elif act == _TANH:
                    for r in range(m):
                        e = ea[r] * ek
                        row[base + r] = (_ONE - e) / (_ONE + e)
                else:  # elu
                    for r in range(m):
                        v = a[r] + ck
                        row[base + r] = v if v > _ZERO else ea[r] * ek - _ONE


@nb.njit(**_KW)
def _hidden_layer(h, b, act):
    """In place, ``h[g, j, q] = act(h[g, j, q] + b[g, j])``."""
    G, H, _ = h.shape
    for g in range(G):
        for j in range(H):
            _act_into(h[g, j], b[g, j], h[g, j], act)


@nb.njit(**_KW)
def _output_layer(h, b, w, b_out, act, n_members, start, mean, out):
    """The last hidden layer's activations and the output layer: ``logit[g, q] = b_out[g] +
    sum_j w[g, j] act(h[g, j, q] + b[g, j])`` for the rows ``q = k * m + r`` (events ``start +
    r``). ``mean``: ``out[k, start + r, c]`` (float64) is the mean over members ``i`` of the
    logits of networks ``g = i * C + c`` (float32 sum, as torch's ``mean``); else (``K = 1``)
    ``out[i, start + r, c]`` is network ``i * C + c``'s."""
    G, H, Q = h.shape
    C = G // n_members
    K = out.shape[0] if mean else 1
    m = Q // K
    logits = np.empty((G, Q), np.float32)
    for g in range(G):
        acc = logits[g]
        acc[:] = b_out[g]
        j = 0
        if act == _SILU_LOG2:  # four units per pass (independent exps in flight: 20% faster)
            while j + 4 <= H:
                x0, x1, x2, x3 = h[g, j], h[g, j + 1], h[g, j + 2], h[g, j + 3]
                b0, b1, b2, b3 = b[g, j], b[g, j + 1], b[g, j + 2], b[g, j + 3]
                w0, w1, w2, w3 = w[g, j], w[g, j + 1], w[g, j + 2], w[g, j + 3]
                for q in range(Q):
                    u0, u1, u2, u3 = x0[q] + b0, x1[q] + b1, x2[q] + b2, x3[q] + b3
                    acc[q] += ((w0 * (u0 / (_ONE + _exp2(u0))) + w1 * (u1 / (_ONE + _exp2(u1))))
                               + (w2 * (u2 / (_ONE + _exp2(u2))) + w3 * (u3 / (_ONE + _exp2(u3)))))
                j += 4
        for i in range(j, H):
            _act_dot_into(h[g, i], b[g, i], w[g, i], acc, act)
    for k in range(K):
        for c in range(C):
            for r in range(m):
                q = k * m + r
                if mean:
                    total = logits[c, q]
                    for i in range(1, n_members):
                        total += logits[i * C + c, q]
                    out[k, start + r, c] = total / _F32(n_members)
                else:
                    for i in range(n_members):
                        out[i, start + r, c] = logits[i * C + c, q]


def _act_code(act: nn.Module) -> int | None:
    """The kernels' code for ``act``, ``None`` for one they do not implement."""
    if isinstance(act, nn.ELU):
        return _ELU if act.alpha == 1.0 else None
    return {nn.SiLU: _SILU, nn.ReLU: _RELU, nn.Tanh: _TANH}.get(type(act))


class LREEnsemble:
    """Ensemble of per-process ratio classifiers; combines members by the mean log ratio.

    Implements the ``ComponentDensity`` interface: ``log_components(x, z)`` returns
    ``log p_c(x | z_k) / p_ref(x)`` of shape ``(K, n, C)`` (``z``: ``(K,)``, or ``(K, P)`` for
    members with ``P`` nuisances). All ``G = M * C`` networks are evaluated together in blocks of
    rows (event, nuisance value), each layer's activations held unit-major, ``(G, width, rows)``:
    a fused kernel for the first layer, then per further layer one batched matmul (``bmm``) and
    a fused kernel for bias and activation (after the last, also the output layer and the mean
    over members; see the kernels above). The first layer's input is ``(x, z)`` with ``z`` the
    same for every event of a nuisance value: its ``x`` part is computed once per event, its
    ``z`` part (with the bias and the standardisation) once per value, and for silu, tanh and elu
    so is the ``exp`` of either part, whose product is the ``exp`` of the sum the activation
    needs. Blocks hold at most ``min(chunk, _BLOCK_ROWS)`` rows, so a 1.2 M-row evaluation (an
    Asimov grid) needs little memory besides its output.

    ``dtype``: the arithmetic's precision (float32 by default; :meth:`astype` gives a float64
    copy, e.g. for MIGRAD, whose numerical derivatives need a smooth function of the nuisance).
    float64, and networks the kernels do not implement (no hidden layer, another activation),
    run :meth:`_forward` (one batched MLP of torch operations, ``baddbmm`` per layer) on ``chunk``
    rows at a time.
    """

    def __init__(self, members: Sequence[Mapping[str, RatioNet]], chunk: int = 1 << 12,
                 dtype: torch.dtype = torch.float32) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = [dict(m) for m in members]
        self.processes = tuple(self.members[0])
        self.chunk, self.dtype = chunk, dtype
        nets = [m[p] for m in self.members for p in self.processes]
        if any(n.hparams != nets[0].hparams for n in nets):
            raise ValueError("all ensemble networks must share one architecture")
        linears = [layer for layer in nets[0].net if isinstance(layer, nn.Linear)]
        index = [i for i, layer in enumerate(nets[0].net) if isinstance(layer, nn.Linear)]
        self._weights = [torch.stack([n.net[i].weight.T.detach() for n in nets]).to(dtype) for i in index]
        self._biases = [torch.stack([n.net[i].bias.detach() for n in nets]).unsqueeze(1).to(dtype) for i in index]
        self._shift = torch.stack([n.shift for n in nets]).unsqueeze(1).to(dtype)
        self._scale = torch.stack([n.scale for n in nets]).unsqueeze(1).to(dtype)
        self._act = nets[0].net[1] if len(linears) > 1 else nn.Identity()
        code = _act_code(self._act) if len(linears) > 1 else None
        self._code = code if dtype == torch.float32 else None  # the kernels: float32 only
        if self._code is not None:
            self._kernel_operands(nets, index)

    def _kernel_operands(self, nets: list[RatioNet], index: list[int]) -> None:
        """The kernels' float32 operands: the first layer's weights (G, H, D + P) and
        standardisation (G, D + P), the further hidden layers' weights (G, out, in) for
        ``bmm``, the hidden layers' biases (G, H) and the output layer's weights (G, H) and bias
        (G,). For silu, the last hidden layer's weights and bias are scaled by ``-log2(e)`` and
        the output weights by ``-ln(2)``, which saves the output kernel a multiplication per
        element (:data:`_SILU_LOG2`)."""
        w = [torch.stack([n.net[i].weight.detach() for n in nets]).double() for i in index]
        b = [torch.stack([n.net[i].bias.detach() for n in nets]).double() for i in index]
        n_hidden = len(w) - 1
        self._out_code, w_out = self._code, w[-1][:, 0]
        if self._code == _SILU and n_hidden > 1:
            w[-2], b[-2], w_out = -math.log2(math.e) * w[-2], -math.log2(math.e) * b[-2], -math.log(2.0) * w_out
            self._out_code = _SILU_LOG2
        elif n_hidden == 1:  # the output kernel's input: the first layer's activations
            self._out_code = _IDENTITY
        self._w0 = w[0].float().numpy()
        self._mm = [wi.float().contiguous() for wi in w[1:-1]]
        self._b_np = [bi.float().contiguous().numpy() for bi in b[:-1]]
        self._out_bias = self._b_np[-1] if n_hidden > 1 else np.zeros_like(self._b_np[0])
        self._w_out, self._b_out = w_out.float().contiguous().numpy(), b[-1][:, 0].float().contiguous().numpy()
        self._shift_np = self._shift[:, 0].float().contiguous().numpy()
        self._scale_np = self._scale[:, 0].float().contiguous().numpy()
        self._first: dict[int, tuple[np.ndarray, ...]] = {}
        self._width = max(wi.shape[1] for wi in w[:-1])

    def astype(self, dtype: torch.dtype) -> LREEnsemble:
        """The same ensemble evaluated in ``dtype``."""
        return LREEnsemble(self.members, self.chunk, dtype)

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of every network, ``(M * C, N)``, for inputs ``(N, D + P)``: one batched MLP
        (``baddbmm`` per layer)."""
        h = (inputs.unsqueeze(0) - self._shift) / self._scale
        for i, (w, b) in enumerate(zip(self._weights, self._biases)):
            h = torch.baddbmm(b, h, w)
            if i < len(self._weights) - 1:
                h = self._act(h)
        return h.squeeze(-1)

    def _first_weights(self, n_in: int) -> tuple[np.ndarray, ...]:
        """The first layer's standardisation and weights for its first ``n_in`` inputs."""
        if n_in not in self._first:
            self._first[n_in] = tuple(np.ascontiguousarray(a[..., :n_in])
                                      for a in (self._shift_np, self._scale_np, self._w0))
        return self._first[n_in]

    def _blocks(self, x: np.ndarray, c: np.ndarray, ec: np.ndarray, sign: float, m: int, mean: bool,
                out: np.ndarray) -> None:
        """Every network on the events ``x (n, I)`` (their first ``I`` inputs), ``m`` at a time,
        and all of the first layer's rests ``c (K, G, H)`` (see :func:`_first_layer`), into
        ``out`` (see :func:`_output_layer`). Holds two blocks of ``G * width * K * m`` floats."""
        shift, scale, w0 = self._first_weights(x.shape[1])
        g = len(w0)
        flat = [torch.empty(g * self._width * len(c) * min(m, len(x))) for _ in range(2)]
        views: dict[int, tuple] = {}

        def layer_views(rows: int) -> tuple:
            """The first layer's output and each matmul's as ``(G, width, rows)`` tensors and
            their arrays (the matmuls alternate between the two blocks)."""
            if rows not in views:
                first = flat[0][: g * w0.shape[1] * rows].view(g, -1, rows)
                mms = [flat[(i + 1) % 2][: g * w.shape[1] * rows].view(g, -1, rows) for i, w in enumerate(self._mm)]
                views[rows] = first.numpy(), first, mms, [t.numpy() for t in mms]
            return views[rows]

        code, n_members = self._code, len(self.members)
        for s in range(0, len(x), m):
            block = x[s : s + m]
            first_np, a, mm_out, mm_np = layer_views(len(c) * len(block))
            _first_layer(block, shift, scale, w0, c, ec, code, sign, first_np)
            for i, w in enumerate(self._mm):  # the further hidden layers
                a = torch.bmm(w, a, out=mm_out[i])
                if i < len(self._mm) - 1:
                    _hidden_layer(mm_np[i], self._b_np[i + 1], code)
            _output_layer(mm_np[-1] if mm_np else first_np, self._out_bias, self._w_out, self._b_out, self._out_code,
                          n_members, s, mean, out)

    @torch.inference_mode()
    def member_log_ratios(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        """Per member, process and event: ``log r_c(x_i, z_i)`` with one nuisance value per
        event (``x (n, D)``, ``nuisance (n,)`` or ``(n, P)``); returns ``(M, n, C)``."""
        inputs = np.ascontiguousarray(np.c_[x, nuisance], dtype=np.float32)
        m, c = len(self.members), len(self.processes)
        if self._code is None:
            inputs_t = torch.as_tensor(inputs if self.dtype == torch.float32 else np.c_[x, nuisance], dtype=self.dtype)
            logits = torch.cat([self._forward(inputs_t[s : s + self.chunk])
                                for s in range(0, len(inputs_t), self.chunk)], dim=1)
            return logits.reshape(m, c, -1).permute(0, 2, 1).double().numpy()
        out = np.empty((m, len(inputs), c))
        bias = self._b_np[0][None]  # (1, G, H)
        self._blocks(inputs, bias, bias, 0.0, min(self.chunk, _BLOCK_ROWS), False, out)
        return out

    @torch.inference_mode()
    def log_components(self, x: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
        z = np.asarray(nuisance)
        z = z.reshape(-1, 1) if z.ndim < 2 else z  # (K, P)
        if self._code is None:
            return self._log_components_torch(np.asarray(x), z)
        x = np.ascontiguousarray(x, dtype=np.float32)
        (n, d), k = x.shape, len(z)
        out = np.empty((k, n, len(self.processes)))
        if not out.size:
            return out
        # the first layer's nuisance part and bias, per nuisance value: (K, G, H)
        z_t = (torch.as_tensor(z, dtype=torch.float32).unsqueeze(0) - self._shift[:, :, d:]) / self._scale[:, :, d:]
        c = torch.baddbmm(torch.from_numpy(self._b_np[0]).unsqueeze(1), z_t, self._weights[0][:, d:])
        c = c.transpose(0, 1).contiguous()
        sign = _EXP_SIGN.get(self._code, 0.0) if k > 1 else 0.0
        ec = torch.where(c.abs() * abs(sign) <= _FACTOR_MAX, torch.exp(sign * c), 0.0) if sign else c
        c, ec = c.numpy(), ec.numpy()
        # blocks of at most _BLOCK_ROWS rows: kb nuisance values times m events, m a multiple of 8
        # (whole vectors) and at least 32 (the first layer's loops run over the events of one
        # nuisance value: 441 values of one event each made a (21 x 21)-point scan 2x slower)
        rows = min(self.chunk, _BLOCK_ROWS)
        kb = min(k, max(1, rows // _BLOCK_EVENTS))
        m = max(1, rows // kb)
        m = m - m % 8 if m > 8 else m
        for j in range(0, k, kb):
            self._blocks(x, c[j : j + kb], ec[j : j + kb], sign, m, True, out[j : j + kb])
        return out

    def _log_components_torch(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """:meth:`log_components` by :meth:`_forward` on ``chunk`` rows (event, nuisance value)
        at a time."""
        x_t, z_t = torch.as_tensor(x, dtype=self.dtype), torch.as_tensor(z, dtype=self.dtype)
        (n, _), k = x_t.shape, len(z_t)
        m, c = len(self.members), len(self.processes)
        logits = torch.empty(m * c, k * n, dtype=self.dtype)
        for s in range(0, k * n, self.chunk):
            rows = torch.arange(s, min(s + self.chunk, k * n))
            logits[:, s : s + len(rows)] = self._forward(torch.cat([x_t[rows % n], z_t[rows // n]], dim=1))
        return logits.reshape(m, c, k, n).mean(0).permute(1, 2, 0).double().numpy()
