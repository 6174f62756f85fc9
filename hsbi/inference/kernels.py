"""Fused loops (numba) for the per-event sums of the declared model's NLL, gradient and Hessian.

:mod:`hsbi.inference.derivatives` writes the NLL's derivatives as tensor expressions over
(datasets, events, processes, shape NPs); evaluated that way, a fit spends ~90% of its time in
elementwise passes over the normalisation sample's (B, C, n, S) tensors, most of them over
entries of NPs that do not act on the process (masked zeros). These kernels make one pass over
the events instead, visit only each process's own shape NPs and return the few sums the
derivatives need (sufficient statistics); :mod:`hsbi.inference.derivatives` assembles value,
gradient and Hessian from them in torch. The tensor expressions stay as the reference
(``nll_grad_hess(..., reference=True)``) the tests compare with.

Code 4 per event and NP is Horner's scheme on the six coefficients inside |alpha| < 1 and linear
outside; whether alpha is inside is the same for every event of a dataset, so events run
innermost, in blocks of :data:`_BLOCK`, and the loops over a block vectorise (``fastmath``
reassociation only: sums in another order, no change to infinities or NaN). The shape product
is multiplied out (no ``log`` per event and NP; the normalisation sums need none at all), with a
log-space path where a product under- or overflows. Loops run in parallel over datasets (and
processes for the normalisation) on numba's threads. Compiled once per machine (``cache``:
``__pycache__``), ~40 s of CPU.
"""

from __future__ import annotations

import math
import os
import tempfile

import numba as nb
import numpy as np

__all__ = ["compact", "event_sums", "norm_sums", "own_indices"]

# numba caches beside this file, or in the user's cache directory where this one is read-only; a
# batch job whose user can write neither (no home) would fail to compile: a temporary directory
if not nb.config.CACHE_DIR and not os.access(os.path.dirname(__file__), os.W_OK):
    _user_cache = os.path.join(os.path.expanduser("~"), ".cache")
    if not os.access(_user_cache if os.path.isdir(_user_cache) else os.path.expanduser("~"), os.W_OK):
        nb.config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"hsbi-numba-{os.getuid()}")


def own_indices(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per process, the positions of its shape NPs: ``own`` (C, S_max) padded with -1, and
    their number (C,)."""
    mask = np.asarray(mask, dtype=bool)
    C = mask.shape[0]
    counts = mask.sum(1).astype(np.int64) if mask.size else np.zeros(C, np.int64)
    own = np.full((C, max(int(counts.max()) if C else 0, 1)), -1, dtype=np.int64)
    for c in range(C):
        idx = np.flatnonzero(mask[c])
        own[c, : len(idx)] = idx
    return own, counts


@nb.njit(cache=True, inline="always")
def _horner(a, c1, c2, c3, c4, c5, c6):
    """The code-4 polynomial ``1 + sum_k c_k a^k`` (clamped at 1e-300) and its first and second
    derivatives."""
    p = 1.0 + a * (c1 + a * (c2 + a * (c3 + a * (c4 + a * (c5 + a * c6)))))
    dp = c1 + a * (2 * c2 + a * (3 * c3 + a * (4 * c4 + a * (5 * c5 + a * 6 * c6))))
    d2p = 2 * c2 + a * (6 * c3 + a * (12 * c4 + a * (20 * c5 + a * 30 * c6)))
    return max(p, 1e-300), dp, d2p


@nb.njit(cache=True, inline="always")
def _code4(a, lo, hi, coef):
    """(inside, value, d1, d2): inside |a| < 1 the polynomial ``p`` (clamped at 1e-300) with
    ``d log p`` and ``d2 log p``; outside the log-linear value ``a * slope`` with its slope."""
    if abs(a) < 1.0:
        p, dp, d2p = _horner(a, coef[0], coef[1], coef[2], coef[3], coef[4], coef[5])
        d1 = dp / p
        return True, p, d1, d2p / p - d1 * d1
    slope = hi if a >= 0 else -lo
    return False, a * slope, slope, 0.0


@nb.njit(cache=True, inline="always")
def _shape_terms(alpha, lo, hi, coef, own_c, k, d1, d2):
    """``sum_s log I4`` over the ``k`` NPs ``own_c`` of one event and process; ``d1``, ``d2``
    (k,) receive the per-NP derivatives."""
    prod, lin, logs = 1.0, 0.0, 0.0
    for j in range(k):
        s = own_c[j]
        inside, val, g1, g2 = _code4(alpha[s], lo[s], hi[s], coef[s])
        d1[j], d2[j] = g1, g2
        if inside:
            prod *= val
            if prod < 1e-200 or prod > 1e200:  # fold into the log before under-/overflow
                logs += math.log(prod)
                prod = 1.0
        else:
            lin += val
    return logs + math.log(prod) + lin


@nb.njit(cache=True, inline="always")
def _norm_log(alpha_b, logv_c, lo_c, hi_c, coef_c, own_c, k, hessian, d1, d2, a1, ad2, a2):
    """The sums of :func:`norm_sums` for one dataset and process in log space, relative to
    ``exp(top)`` (running maximum): for the rare sample whose linear sums under- or overflow.
    Returns ``(z, top)``."""
    n = logv_c.shape[0]
    z, top = 0.0, -np.inf
    for j in range(k):
        a1[j], ad2[j] = 0.0, 0.0
        for l in range(k):
            a2[j, l] = 0.0
    for i in range(n):
        if logv_c[i] == -np.inf:
            continue
        lg = _shape_terms(alpha_b, lo_c[i], hi_c[i], coef_c[i], own_c, k, d1, d2) + logv_c[i]
        if lg > top:  # rescale what is summed so far
            scale = math.exp(top - lg) if top > -np.inf else 0.0
            z *= scale
            for j in range(k):
                a1[j] *= scale
                ad2[j] *= scale
                if hessian:
                    for l in range(j + 1):
                        a2[j, l] *= scale
            top = lg
        e = math.exp(lg - top)
        z += e
        for j in range(k):
            ej = e * d1[j]
            a1[j] += ej
            if hessian:
                ad2[j] += e * d2[j]
                for l in range(j + 1):
                    a2[j, l] += ej * d1[l]
    return z, top


#: events per block of the linear-space normalisation sums (the block's per-NP derivatives stay
#: in cache; the loops over it vectorise)
_BLOCK = 256


@nb.njit(cache=True, fastmath={"reassoc", "contract"})  # not inlined: its own flags
def _norm_linear(alpha_b, v_c, lo_t, hi_t, coef_t, own_c, k, hessian, a1, ad2, a2):
    """The sums of :func:`norm_sums` for one dataset and process in linear space: event weights
    ``v_i * prod_s I4`` (no ``log`` or ``exp`` per event inside |alpha| < 1), events innermost in
    blocks. ``lo_t``, ``hi_t`` (K, n) and ``coef_t`` (K, 6, n) hold the process's own NPs in
    order (:func:`compact`). Returns ``z``; ``a1``, ``ad2``, ``a2`` receive the weighted sums."""
    n = v_c.shape[0]
    d1, d2 = np.empty((k, _BLOCK)), np.empty((k, _BLOCK))
    e = np.empty(_BLOCK)
    z = 0.0
    for j in range(k):
        a1[j], ad2[j] = 0.0, 0.0
        for l in range(k):
            a2[j, l] = 0.0
    for i0 in range(0, n, _BLOCK):
        m = min(_BLOCK, n - i0)
        for i in range(m):
            e[i] = v_c[i0 + i]
        for j in range(k):
            a = alpha_b[own_c[j]]
            if abs(a) < 1.0:
                cf = coef_t[j]
                for i in range(m):
                    x = i0 + i
                    p, dp, d2p = _horner(a, cf[0, x], cf[1, x], cf[2, x], cf[3, x], cf[4, x], cf[5, x])
                    g = dp / p
                    d1[j, i] = g
                    d2[j, i] = d2p / p - g * g
                    e[i] *= p
            else:
                row, sign = (hi_t[j], 1.0) if a >= 0 else (lo_t[j], -1.0)
                for i in range(m):
                    slope = sign * row[i0 + i]
                    d1[j, i] = slope
                    d2[j, i] = 0.0
                    e[i] *= math.exp(a * slope)
        for i in range(m):
            z += e[i]
        for j in range(k):
            s1, s2 = 0.0, 0.0
            for i in range(m):
                s1 += e[i] * d1[j, i]
                s2 += e[i] * d2[j, i]
            a1[j] += s1
            ad2[j] += s2
            if hessian:
                for l in range(j + 1):
                    s1 = 0.0
                    for i in range(m):
                        s1 += e[i] * d1[j, i] * d1[l, i]
                    a2[j, l] += s1
    return z


@nb.njit(cache=True, inline="always")
def _sane(z, a1, ad2, k):
    ok = z > 1e-250 and z < 1e250
    for j in range(k):
        ok = ok and math.isfinite(a1[j]) and math.isfinite(ad2[j])
    return ok


def compact(lo: np.ndarray, hi: np.ndarray, coef: np.ndarray, own: np.ndarray, counts: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The normalisation sample's ``lo``, ``hi`` (C, n, S) and ``coef`` (C, n, S, 6) per process
    over its own NPs, events last: (C, K, n), (C, K, n), (C, K, 6, n)."""
    C, n, _ = lo.shape
    K = own.shape[1]
    lo_t, hi_t, coef_t = np.zeros((C, K, n)), np.zeros((C, K, n)), np.zeros((C, K, 6, n))
    for c in range(C):
        for j in range(counts[c]):
            s = own[c, j]
            lo_t[c, j], hi_t[c, j], coef_t[c, j] = lo[c, :, s], hi[c, :, s], coef[c, :, s, :].T
    return lo_t, hi_t, coef_t


@nb.njit(cache=True, parallel=True)
def norm_sums(alpha, v, logv, lo, hi, coef, lo_t, hi_t, coef_t, own, counts, hessian, logspace=False):
    """Over the normalisation sample: per dataset ``b`` (rows of ``alpha`` (B, S)) and process
    ``c``, ``log N_c`` (B, C), ``E_pi[dL]`` (B, C, S) and, with ``hessian``,
    ``Cov_pi(dL) + diag E_pi[d2L]`` (B, C, S, S), where ``pi`` is the sample weight ``v`` (C, n)
    (``logv`` its log; 0 and -inf: padding) times the shape product, normalised.
    ``lo``, ``hi`` (C, n, S), ``coef`` (C, n, S, 6), and the same over each process's own NPs
    (:func:`compact`). The sums run in linear space unless they under- or overflow there (or
    ``logspace``)."""
    B, S = alpha.shape
    C = v.shape[0]
    log_norm = np.zeros((B, C))
    mean = np.zeros((B, C, S))
    second = np.zeros((B, C, S, S))
    for bc in nb.prange(B * C):
        b, c = bc // C, bc % C
        k = counts[c]
        if k == 0:
            continue
        own_c = own[c]
        a1, ad2 = np.zeros(k), np.zeros(k)
        a2 = np.zeros((k, k))
        z, top = 0.0, 0.0
        if not logspace:
            z = _norm_linear(alpha[b], v[c], lo_t[c], hi_t[c], coef_t[c], own_c, k, hessian, a1, ad2, a2)
        if logspace or not _sane(z, a1, ad2, k):
            d1, d2 = np.empty(k), np.empty(k)
            z, top = _norm_log(alpha[b], logv[c], lo[c], hi[c], coef[c], own_c, k, hessian, d1, d2, a1, ad2, a2)
        log_norm[b, c] = top + math.log(z)
        for j in range(k):
            mean[b, c, own_c[j]] = a1[j] / z
        if hessian:
            for j in range(k):
                for l in range(j + 1):
                    x = a2[j, l] / z - a1[j] / z * a1[l] / z
                    if l == j:
                        x += ad2[j] / z
                    second[b, c, own_c[j], own_c[l]] = x
                    second[b, c, own_c[l], own_c[j]] = x
    return log_norm, mean, second


@nb.njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def event_sums(rows, alpha, base, F, w, logp, lo, hi, coef, own, counts, hessian):
    """Over the events of datasets ``rows`` (R,) of a batch (``w`` (Bd, n), ``logp`` (Bd, n, C),
    ``lo``/``hi`` (Bd, n, C, S), ``coef`` (Bd, n, C, S, 6)) at shape NPs ``alpha`` (R, S), with
    ``base`` (R, C) = ``log G_c - log N_c`` and normfactor products ``F`` (R, C).

    With ``q_ic = logp_ic + base_c + sum_s L_ics``, ``R_ic = exp(q_ic) / lambda_i``,
    ``T_ic = F_c R_ic``, ``e_ic`` the shape NPs' ``dL`` and ``E_i = sum_c T_ic e_ic``, returns
    (sums over events weighted by ``w``): ``sum w log lambda`` (R,), ``sR``, ``sT`` (R, C),
    ``sTe`` (R, C, S) and, with ``hessian``: ``sRe`` (R, C, S), ``sTee`` = ``sum_c T e e^T``
    (R, S, S), ``sTd2`` = ``sum_c T d2L`` (R, S), ``suu`` (R, 2C, 2C) with ``u = (R_i, T_i)``,
    ``suE`` (R, 2C, S) and ``sEE`` (R, S, S).

    Events run in blocks: each NP's code-4 terms over the block at once (inside or outside
    |alpha| < 1 is the same for all events of a dataset), the sums as dot products over it."""
    R, S = alpha.shape
    n, C = logp.shape[1], logp.shape[2]
    H = S if hessian else 0
    Hc = 2 * C if hessian else 0
    loglam = np.zeros(R)
    sR, sT = np.zeros((R, C)), np.zeros((R, C))
    sTe, sRe = np.zeros((R, C, S)), np.zeros((R, C, H))
    sTee, sEE = np.zeros((R, H, H)), np.zeros((R, H, H))
    sTd2 = np.zeros((R, H))
    suu, suE = np.zeros((R, Hc, Hc)), np.zeros((R, Hc, H))
    K = own.shape[1]
    for r in nb.prange(R):
        b = rows[r]
        q, prod = np.empty((C, _BLOCK)), np.empty((C, _BLOCK))
        d1, d2 = np.empty((C, K, _BLOCK)), np.empty((C, K, _BLOCK))
        u = np.empty((2 * C, _BLOCK))  # (R, T), then times w
        E = np.empty((S, _BLOCK))
        wb, top = np.empty(_BLOCK), np.empty(_BLOCK)
        cf = np.empty((6, _BLOCK))
        for i0 in range(0, n, _BLOCK):
            m = min(_BLOCK, n - i0)
            for i in range(m):
                wb[i] = w[b, i0 + i]
            for c in range(C):
                for i in range(m):
                    q[c, i] = logp[b, i0 + i, c] + base[r, c]
                    prod[c, i] = 1.0
                for j in range(counts[c]):
                    s = own[c, j]
                    a = alpha[r, s]
                    if abs(a) < 1.0:
                        for i in range(m):  # gather the block's coefficients (strided)
                            for x in range(6):
                                cf[x, i] = coef[b, i0 + i, c, s, x]
                        for i in range(m):
                            p, dp, d2p = _horner(a, cf[0, i], cf[1, i], cf[2, i], cf[3, i], cf[4, i], cf[5, i])
                            g = dp / p
                            d1[c, j, i] = g
                            d2[c, j, i] = d2p / p - g * g
                            prod[c, i] *= p
                    else:
                        for i in range(m):
                            slope = hi[b, i0 + i, c, s] if a >= 0 else -lo[b, i0 + i, c, s]
                            d1[c, j, i] = slope
                            d2[c, j, i] = 0.0
                            q[c, i] += a * slope
                for i in range(m):
                    pr = prod[c, i]
                    if not (pr > 1e-280 and pr < 1e280):  # under- or overflowed: sum the logs
                        prod[c, i] = 1.0
                        for j in range(counts[c]):
                            s = own[c, j]
                            if abs(alpha[r, s]) < 1.0:
                                _, val, _, _ = _code4(alpha[r, s], lo[b, i0 + i, c, s], hi[b, i0 + i, c, s],
                                                      coef[b, i0 + i, c, s])
                                q[c, i] += math.log(val)
            for i in range(m):
                # lambda_i = sum_c F_c exp(q_ic) prod_ic, relative to the largest exp(q_ic): the
                # products stay factors (no log per event and process) unless lambda underflows
                t = q[0, i]
                for c in range(1, C):
                    t = max(t, q[c, i])
                lam = 0.0
                for c in range(C):
                    x = math.exp(q[c, i] - t) * prod[c, i]
                    u[c, i] = x
                    lam += F[r, c] * x
                if not (lam > 1e-280 and lam < 1e280):
                    for c in range(C):
                        q[c, i] += math.log(prod[c, i])
                    t = q[0, i]
                    for c in range(1, C):
                        t = max(t, q[c, i])
                    lam = 0.0
                    for c in range(C):
                        x = math.exp(q[c, i] - t)
                        u[c, i] = x
                        lam += F[r, c] * x
                if wb[i] != 0.0:
                    loglam[r] += wb[i] * (t + math.log(lam))
                top[i] = lam
            for c in range(C):
                for i in range(m):
                    x = u[c, i] / top[i]
                    u[c, i] = x
                    u[C + c, i] = F[r, c] * x
                s1, s2 = 0.0, 0.0
                for i in range(m):
                    s1 += wb[i] * u[c, i]
                    s2 += wb[i] * u[C + c, i]
                sR[r, c] += s1
                sT[r, c] += s2
                for j in range(counts[c]):
                    s = own[c, j]
                    s1 = 0.0
                    for i in range(m):
                        s1 += wb[i] * u[C + c, i] * d1[c, j, i]
                    sTe[r, c, s] += s1
            if not hessian:
                continue
            for s in range(S):
                for i in range(m):
                    E[s, i] = 0.0
            for c in range(C):
                for j in range(counts[c]):
                    s = own[c, j]
                    s1, s2 = 0.0, 0.0
                    for i in range(m):
                        wT = wb[i] * u[C + c, i]
                        s1 += wb[i] * u[c, i] * d1[c, j, i]
                        s2 += wT * d2[c, j, i]
                        E[s, i] += u[C + c, i] * d1[c, j, i]
                    sRe[r, c, s] += s1
                    sTd2[r, s] += s2
                    for l in range(j + 1):
                        s1 = 0.0
                        for i in range(m):
                            s1 += wb[i] * u[C + c, i] * d1[c, j, i] * d1[c, l, i]
                        sTee[r, s, own[c, l]] += s1
            for x in range(2 * C):
                for y in range(x + 1):
                    s1 = 0.0
                    for i in range(m):
                        s1 += wb[i] * u[x, i] * u[y, i]
                    suu[r, x, y] += s1
                for s in range(S):
                    s1 = 0.0
                    for i in range(m):
                        s1 += wb[i] * u[x, i] * E[s, i]
                    suE[r, x, s] += s1
            for s in range(S):
                for t in range(s + 1):
                    s1 = 0.0
                    for i in range(m):
                        s1 += wb[i] * E[s, i] * E[t, i]
                    sEE[r, s, t] += s1
        if hessian:  # the lower triangles were summed: mirror them
            for x in range(2 * C):
                for y in range(x):
                    suu[r, y, x] = suu[r, x, y]
            for s in range(S):
                for t in range(s):
                    sEE[r, t, s] = sEE[r, s, t]
                    sTee[r, t, s] = sTee[r, s, t]
    return loglam, sR, sT, sTe, sRe, sTee, sTd2, suu, suE, sEE
