"""The fused kernels (hsbi.inference.kernels) against the tensor expressions they replace."""

from __future__ import annotations

import numpy as np
import torch

from hsbi.config.statmodel import (
    ChannelConfig,
    ModifierConfig,
    ParameterConfig,
    ProcessConfig,
    StatModelConfig,
)
from hsbi.inference.derivatives import nll_grad, nll_grad_hess
from hsbi.inference.fitting import DeclaredLikelihood
from hsbi.inference.kernels import compact, norm_sums
from hsbi.inference.statmodel import (
    DTYPE,
    ChannelEvents,
    Dataset,
    Normalisation,
    compile_model,
    nll,
)
from hsbi.models.interpolation import code4_coefficients


def _likelihood(scale: float = 0.1, seed: int = 0) -> tuple[DeclaredLikelihood, Dataset]:
    """Three processes: ``a`` with two normfactors, two shape NPs and a normsys, ``b`` with one shape NP shared
    with ``a``, ``c`` with none; normalisation samples of unequal lengths (zero-weight padding),
    4 datasets of unequal sizes (zero-weight events), per-event log ratios ~ N(0, scale) (0 for
    the NPs that do not act on a process, as the pipeline fills them)."""
    rng = np.random.default_rng(seed)
    shape = lambda name, p: ModifierConfig(name, "normplusshape", up=(f"{p}_{name}_up",), down=(f"{p}_{name}_down",))
    procs = {"a": [ModifierConfig("mu", "normfactor"), ModifierConfig("k", "normfactor"), shape("s0", "a"), shape("s1", "a"),
                   ModifierConfig("n0", "normsys", lo=0.9, hi=1.1), ModifierConfig("lumi", "lumi")],
             "b": [shape("s1", "b"), ModifierConfig("lumi", "lumi")],
             "c": [ModifierConfig("n0", "normsys", lo=0.95, hi=1.08), ModifierConfig("k", "normfactor")]}
    cfg = StatModelConfig(poi="mu", channels=(ChannelConfig("SR", ("x",), "asimov", tuple(
        ProcessConfig(p, (p,), tuple(m)) for p, m in procs.items())),),
        parameters=(ParameterConfig("mu", bounds=(0.0, 10.0)),))
    ratios = {("SR", p, m.name): (0.96, 1.05) for p, ms in procs.items() for m in ms if m.type == "normplusshape"}
    model = compile_model(cfg, {("SR", "a"): 50.0, ("SR", "b"): 300.0, ("SR", "c"): 200.0}, ratios)
    ch = model.channels[0]
    C, S = ch.shape_mask.shape
    lengths = (700, 500, 300)
    ws, los, his = [], [], []
    for c, n in enumerate(lengths):
        g = rng.normal(0, scale, (n, S)) * ch.shape_mask[c]
        ws.append(rng.uniform(0.5, 1.5, n)), los.append(-g - 0.01 * ch.shape_mask[c]), his.append(g + 0.02 * ch.shape_mask[c])
    norm = Normalisation.of(ws, los, his)
    B, n = 4, 60
    w = rng.uniform(0.5, 2.0, (B, n))
    w[1, 40:], w[3, 10:] = 0.0, 0.0
    g = rng.normal(0, scale, (B, n, C, S)) * ch.shape_mask
    events = ChannelEvents.of(w, rng.normal(0, 1, (B, n, C)), -g, g + 0.01 * ch.shape_mask)
    aux = torch.as_tensor(np.tile(model.nominal_aux, (B, 1)), dtype=DTYPE)
    return DeclaredLikelihood(model, (norm,)), Dataset((events,), aux)


def _points(model, B: int, seed: int = 1) -> torch.Tensor:
    """Points on both sides of |alpha| = 1, on it, and at mu = 0."""
    rng = np.random.default_rng(seed)
    theta = np.tile(model.init, (B, 1))
    theta[:, 1:] += rng.normal(0, 1.2, theta[:, 1:].shape)
    theta[0, model.index("s0")], theta[1, model.index("s1")], theta[2, model.poi_index] = 1.0, -1.0, 0.0
    theta[3, model.index("s0")] = -3.5
    lo, hi = model.bounds.T
    return torch.as_tensor(np.clip(theta, lo + 1e-3, hi), dtype=DTYPE)


def test_fused_derivatives_equal_the_tensor_expressions() -> None:
    """Value, gradient and Hessian of the fused kernels equal the reference expressions (and the
    value equals :func:`nll`), for all rows and a subset of rows."""
    lik, data = _likelihood()
    theta = _points(lik.model, data.batch)
    ref = nll_grad_hess(lik.model, lik.norms, data, theta, reference=True)
    fused = nll_grad_hess(lik.model, lik.norms, data, theta)
    for r, f in zip(ref, fused):
        np.testing.assert_allclose(f.numpy(), r.numpy(), rtol=1e-10, atol=1e-10 * float(r.abs().max()))
    np.testing.assert_allclose(fused[0].numpy(), nll(lik.model, lik.norms, data, theta).numpy(), rtol=1e-12)
    _, grad = nll_grad(lik.model, lik.norms, data, theta)
    np.testing.assert_allclose(grad.numpy(), ref[1].numpy(), rtol=1e-10, atol=1e-10 * float(ref[1].abs().max()))
    rows = np.array([3, 1])
    sub = nll_grad_hess(lik.model, lik.norms, data, theta[rows], rows=rows)
    for r, f in zip(ref, sub):
        np.testing.assert_allclose(f.numpy(), r[rows].numpy(), rtol=1e-10, atol=1e-10 * float(r.abs().max()))
    # rows at the same point share their normalisation sums (every toy at a fit's start)
    same = theta[[0, 0, 2, 0]]
    ref = nll_grad_hess(lik.model, lik.norms, data, same, reference=True)
    for r, f in zip(ref, nll_grad_hess(lik.model, lik.norms, data, same)):
        np.testing.assert_allclose(f.numpy(), r.numpy(), rtol=1e-10, atol=1e-10 * float(r.abs().max()))


def test_normalisation_sums_in_log_space() -> None:
    """The log-space sums equal the linear ones; where the linear sums overflow, the kernel
    switches to them (a sample whose shape product is exp(4.999 * 130) at alpha = -4.999: the
    down variation's log ratio is 130 at every event)."""
    lik, _ = _likelihood()
    ch, norm = lik.model.channels[0], lik.norms[0]
    alpha = np.ascontiguousarray(_points(lik.model, 4).numpy()[:, ch.shape_index])
    own, counts = ch.own_shapes
    linear = norm_sums(alpha, *norm.kernel_arrays(own, counts), own, counts, True)
    logs = norm_sums(alpha, *norm.kernel_arrays(own, counts), own, counts, True, True)
    for a, b in zip(linear, logs):
        np.testing.assert_allclose(b, a, rtol=1e-11, atol=1e-12)
    v = np.full((1, 50), 1 / 50)
    lo, hi = np.full((1, 50, 1), 130.0), np.full((1, 50, 1), 1.0)
    coef, own, counts = code4_coefficients(lo, hi), np.zeros((1, 1), np.int64), np.ones(1, np.int64)
    log_norm, mean, second = norm_sums(np.array([[-4.999]]), v, np.log(v), lo, hi, coef,
                                       *compact(lo, hi, coef, own, counts), own, counts, True)
    np.testing.assert_allclose(log_norm, [[4.999 * 130]], rtol=1e-14)
    np.testing.assert_allclose(mean, [[[-130.0]]], rtol=1e-14)
    np.testing.assert_allclose(second, [[[[0.0]]]], atol=1e-9)


def test_fused_hessian_equals_autograd() -> None:
    """The fused Hessian against autograd of :func:`nll` (independent of the derivation)."""
    lik, data = _likelihood()
    theta = _points(lik.model, data.batch)[:1].clone().requires_grad_(True)
    one = data.take(torch.tensor([0]))
    (g,) = torch.autograd.grad(nll(lik.model, lik.norms, one, theta).sum(), theta, create_graph=True)
    auto = torch.stack([torch.autograd.grad(g[0, k], theta, retain_graph=True)[0][0] for k in range(theta.shape[1])])
    _, grad, hess = nll_grad_hess(lik.model, lik.norms, one, theta.detach())
    np.testing.assert_allclose(grad[0].numpy(), g[0].detach().numpy(), rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(hess[0].numpy(), auto.numpy(), rtol=1e-9, atol=1e-7)


def test_vectorised_exp() -> None:
    """The kernels' exp is within 1 ulp of numpy's on [-708, 709], 0 below, inf above, NaN kept."""
    import numba

    from hsbi.inference.kernels import _BLOCK, _exp_into

    @numba.njit
    def blocked(x):
        out, buf = np.empty_like(x), np.empty(_BLOCK)
        bits = np.empty(_BLOCK, dtype=np.int64)
        scale = bits.view(np.float64)
        for i0 in range(0, len(x), _BLOCK):
            m = min(_BLOCK, len(x) - i0)
            _exp_into(x[i0:i0 + m], buf, m, bits, scale)
            out[i0:i0 + m] = buf[:m]
        return out

    x = np.concatenate([np.random.default_rng(0).uniform(-708, 709, 20000), np.linspace(-2, 2, 4001)])
    np.testing.assert_allclose(blocked(x), np.exp(x), rtol=4.5e-16, atol=0)
    edge = blocked(np.array([-np.inf, -800.0, np.nan, 800.0, np.inf]))
    assert edge[0] == 0 and edge[1] == 0 and np.isnan(edge[2]) and edge[3] == np.inf and edge[4] == np.inf
