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
reassociation only: sums in another order, no change to infinities or NaN). The events are read
in a per-process layout over each process's own NPs, events last (:func:`compact_events`, made
once per batch of datasets), the normalisation sample likewise (:func:`compact`). The shape
product is multiplied out (no ``log`` per event and NP; the normalisation sums need none at all),
with a log-space path where a product under- or overflows; ``exp`` runs vectorised
(:func:`_exp_into`). The yields' factors (:func:`yield_terms`) and the assembly of value,
gradient and Hessian from the sums (:func:`assemble`) are loops too. Loops run in parallel over
datasets (and processes for the normalisation) on numba's threads. Compiled once per machine
(``cache``: ``__pycache__``), ~60 s of CPU.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from hsbi.numba_cache import ensure_cache_dir

__all__ = ["assemble", "compact", "compact_events", "event_sums", "gather_events", "norm_sums", "own_indices",
           "pool_log_factors", "yield_terms"]

ensure_cache_dir(__file__)  # numba's cache: beside this file, else a writable place


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
    # Horner's scheme for p, p' and p''/2 together (16 fused multiply-adds, the loop unrolled)
    p, d, h = c6 * a + c5, c6, 0.0
    for c in (c4, c3, c2, c1, 1.0):
        h = h * a + d
        d = d * a + p
        p = p * a + c
    return max(p, 1e-300), d, 2.0 * h


@nb.njit(cache=True, inline="always")
def _code4(a, lo, hi, coef):
    """(inside, value, d1, d2): inside |a| < 1 the polynomial ``p`` (clamped at 1e-300) with
    ``d log p`` and ``d2 log p``; outside the log-linear value ``a * slope`` with its slope."""
    if abs(a) < 1.0:
        p, dp, d2p = _horner(a, coef[0], coef[1], coef[2], coef[3], coef[4], coef[5])
        ip = 1.0 / p
        d1 = dp * ip
        return True, p, d1, d2p * ip - d1 * d1
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
def _norm_log(alpha_b, v_c, logv_c, lo_c, hi_c, coef_c, own_c, k, hessian, d1, d2, a1, ad2, a2):
    """The sums of :func:`norm_sums` for one dataset and process in log space, relative to
    ``exp(top)`` (running maximum of the terms' magnitudes; ``logv_c`` is ``log |v|``, the sign
    of a signed weight is ``v_c``'s): for the rare sample whose linear sums under- or overflow.
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
        e = math.exp(lg - top) if v_c[i] > 0 else -math.exp(lg - top)
        z += e
        for j in range(k):
            ej = e * d1[j]
            a1[j] += ej
            if hessian:
                ad2[j] += e * d2[j]
                for l in range(j + 1):
                    a2[j, l] += ej * d1[l]
    return z, top


_LOG2E, _LN2_HI, _LN2_LO = 1.4426950408889634, 6.93147180369123816490e-01, 1.90821492927058770002e-10


@nb.njit(cache=True, inline="always")
def _exp_into(x, out, m, bits, scale):
    """``out[i] = exp(x[i])`` for ``i < m`` in a loop that vectorises (``math.exp`` does not:
    llvmlite's wheels have no SVML): ``x = k ln 2 + r`` with |r| <= ln 2 / 2, Taylor's series of
    ``exp(r)`` to degree 12 (truncation below 1e-17), ``2^k`` written into the exponent bits of
    ``scale``, an int64 buffer ``bits`` viewed as float64. Within 1 ulp of ``math.exp`` on
    [-708, 709]; 0 below (subnormal results), inf above (what overflows the sums: the callers'
    log-space paths take over), NaN kept."""
    for i in range(m):
        y = min(max(x[i], -708.0), 709.0)
        kf = math.floor(y * _LOG2E + 0.5)
        bits[i] = (np.int64(kf) + 1023) << 52
        r = (y - kf * _LN2_HI) - kf * _LN2_LO
        out[i] = 1.0 + r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (
            1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (1 / 3628800 + r * (1 / 39916800 + r / 479001600)))))))))))
    for i in range(m):
        v = out[i] * scale[i]
        v = 0.0 if x[i] < -708.0 else v
        v = np.inf if x[i] > 709.0 else v
        out[i] = x[i] if x[i] != x[i] else v


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
    e, ed, lin, ex = np.empty(_BLOCK), np.empty(_BLOCK), np.empty(_BLOCK), np.empty(_BLOCK)
    bits = np.empty(_BLOCK, dtype=np.int64)
    scale = bits.view(np.float64)
    z = 0.0
    for j in range(k):
        a1[j], ad2[j] = 0.0, 0.0
        for l in range(k):
            a2[j, l] = 0.0
    for i0 in range(0, n, _BLOCK):
        m = min(_BLOCK, n - i0)
        outside = False
        for i in range(m):
            e[i] = v_c[i0 + i]
            lin[i] = 0.0
        for j in range(k):
            a = alpha_b[own_c[j]]
            if abs(a) < 1.0:
                cf = coef_t[j]
                for i in range(m):
                    x = i0 + i
                    p, dp, d2p = _horner(a, cf[0, x], cf[1, x], cf[2, x], cf[3, x], cf[4, x], cf[5, x])
                    ip = 1.0 / p  # one division, not two
                    g = dp * ip
                    d1[j, i] = g
                    d2[j, i] = d2p * ip - g * g
                    e[i] *= p
            else:
                row, sign = (hi_t[j], 1.0) if a >= 0 else (lo_t[j], -1.0)
                for i in range(m):
                    slope = sign * row[i0 + i]
                    d1[j, i] = slope
                    d2[j, i] = 0.0
                    lin[i] += a * slope
                outside = True
        if outside:  # one exp per event for all NPs outside |alpha| < 1
            _exp_into(lin, ex, m, bits, scale)
            for i in range(m):
                e[i] *= ex[i]
        for i in range(m):
            z += e[i]
        for j in range(k):
            s1, s2 = 0.0, 0.0
            for i in range(m):
                x = e[i] * d1[j, i]
                ed[i] = x
                s1 += x
                s2 += e[i] * d2[j, i]
            a1[j] += s1
            ad2[j] += s2
            if hessian:
                for l in range(j + 1):
                    s1 = 0.0
                    for i in range(m):
                        s1 += ed[i] * d1[l, i]
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


def compact_events(logp: np.ndarray, lo: np.ndarray, hi: np.ndarray, coef: np.ndarray, own: np.ndarray,
                   counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """The events' ``logp`` (B, n, C), ``lo``, ``hi`` (B, n, C, S) and ``coef`` (B, n, C, S, 6)
    per process over its own NPs, events last (what :func:`event_sums` reads in vectorised
    blocks): (B, C, n), (B, C, K, n), (B, C, K, n), (B, C, K, 6, n); a third of the memory of the
    dense layout with three processes. Entries past a process's ``counts`` are left unset (never
    read). The outputs are allocated by numpy, whose large arrays get transparent huge pages:
    numba's zero-filled allocation faults every 4 KiB page in, 7x slower on a VM."""
    B, n, C = logp.shape
    K = own.shape[1]
    out = (np.empty((B, C, n)), np.empty((B, C, K, n)), np.empty((B, C, K, n)), np.empty((B, C, K, 6, n)))
    _compact_events(logp, lo, hi, coef, own, counts, *out)
    return out


def gather_events(idx: np.ndarray, w: np.ndarray, logp_t: np.ndarray, lo_t: np.ndarray, hi_t: np.ndarray,
                  coef_t: np.ndarray) -> tuple[np.ndarray, ...]:
    """Datasets of events ``idx`` (B, n) of a pool in the layout of :func:`compact_events` (the
    pool's own, batch 1): ``w`` (B, n) and (B, C, n), (B, C, K, n), (B, C, K, n), (B, C, K, 6, n),
    read from the pool's compact rows (cache-sized) instead of the toys' dense ones."""
    B, n = idx.shape
    _, C, K, _, _ = coef_t.shape
    out = (np.empty((B, C, n)), np.empty((B, C, K, n)), np.empty((B, C, K, n)), np.empty((B, C, K, 6, n)))
    _gather_events(np.ascontiguousarray(idx, dtype=np.int64), logp_t, lo_t, hi_t, coef_t, *out)
    return (np.ascontiguousarray(w, dtype=np.float64), *out)


@nb.njit(cache=True, parallel=True)
def _gather_events(idx, logp_t, lo_t, hi_t, coef_t, logp_o, lo_o, hi_o, coef_o):
    B, n = idx.shape
    _, C, K, _, _ = coef_t.shape
    for b in nb.prange(B):
        for c in range(C):
            for i in range(n):
                logp_o[b, c, i] = logp_t[0, c, idx[b, i]]
            for j in range(K):
                for i in range(n):
                    lo_o[b, c, j, i] = lo_t[0, c, j, idx[b, i]]
                for i in range(n):
                    hi_o[b, c, j, i] = hi_t[0, c, j, idx[b, i]]
                for x in range(6):
                    for i in range(n):
                        coef_o[b, c, j, x, i] = coef_t[0, c, j, x, idx[b, i]]


def pool_log_factors(alpha: np.ndarray, starts: np.ndarray, own: np.ndarray, counts: np.ndarray, lo_t: np.ndarray,
                     hi_t: np.ndarray, coef_t: np.ndarray) -> np.ndarray:
    """``sum_s log I4(alpha_s)`` over its own process's shape NPs for every event of a toy pool
    (B, N), per row of ``alpha`` (B, S): the pool's events grouped by process (``starts`` (C + 1,)
    their boundaries), its terms in the layout of :func:`compact_events` (batch 1). What the
    toys' draws reweight the pool by."""
    out = np.empty((alpha.shape[0], coef_t.shape[-1]))
    _pool_log_factors(np.ascontiguousarray(alpha), starts, own, counts, lo_t, hi_t, coef_t, out)
    return out


@nb.njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def _pool_log_factors(alpha, starts, own, counts, lo_t, hi_t, coef_t, out):
    B, C = alpha.shape[0], counts.shape[0]
    for b in nb.prange(B):
        for c in range(C):
            e0, e1 = starts[c], starts[c + 1]
            prod = np.ones(e1 - e0)
            for e in range(e0, e1):
                out[b, e] = 0.0
            for j in range(counts[c]):
                a = alpha[b, own[c, j]]
                if abs(a) < 1.0:
                    cf = coef_t[0, c, j]
                    for e in range(e0, e1):
                        p, _, _ = _horner(a, cf[0, e], cf[1, e], cf[2, e], cf[3, e], cf[4, e], cf[5, e])
                        prod[e - e0] *= p
                else:
                    row, sign = (hi_t[0, c, j], 1.0) if a >= 0 else (lo_t[0, c, j], -1.0)
                    for e in range(e0, e1):
                        out[b, e] += a * sign * row[e]
            for e in range(e0, e1):
                pr = prod[e - e0]
                if pr > 1e-280 and pr < 1e280:
                    out[b, e] += math.log(pr)
                else:  # under- or overflowed: the logs one by one
                    for j in range(counts[c]):
                        a = alpha[b, own[c, j]]
                        if abs(a) < 1.0:
                            cf = coef_t[0, c, j]
                            p, _, _ = _horner(a, cf[0, e], cf[1, e], cf[2, e], cf[3, e], cf[4, e], cf[5, e])
                            out[b, e] += math.log(p)


@nb.njit(cache=True, parallel=True)
def _compact_events(logp, lo, hi, coef, own, counts, logp_t, lo_t, hi_t, coef_t):
    B, n, C = logp.shape
    for b in nb.prange(B):
        # blocks of events: the block's dense rows stay in cache while each destination row is
        # written contiguously
        for i0 in range(0, n, 64):
            i1 = min(n, i0 + 64)
            for c in range(C):
                for i in range(i0, i1):
                    logp_t[b, c, i] = logp[b, i, c]
                for j in range(counts[c]):
                    s = own[c, j]
                    for i in range(i0, i1):
                        lo_t[b, c, j, i] = lo[b, i, c, s]
                    for i in range(i0, i1):
                        hi_t[b, c, j, i] = hi[b, i, c, s]
                    for x in range(6):
                        for i in range(i0, i1):
                            coef_t[b, c, j, x, i] = coef[b, i, c, s, x]


@nb.njit(cache=True, parallel=True)
def norm_sums(alpha, v, logv, lo, hi, coef, lo_t, hi_t, coef_t, own, counts, hessian, logspace=False):
    """Over the normalisation sample: per dataset ``b`` (rows of ``alpha`` (B, S)) and process
    ``c``, ``log N_c`` (B, C), ``E_pi[dL]`` (B, C, S) and, with ``hessian``,
    ``Cov_pi(dL) + diag E_pi[d2L]`` (B, C, S, S), where ``pi`` is the sample weight ``v`` (C, n)
    (signed MC weights allowed; ``logv`` the log of its magnitude; 0 and -inf: padding) times
    the shape product, normalised (a sum that is not positive gives NaN: the fit fails).
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
            z, top = _norm_log(alpha[b], v[c], logv[c], lo[c], hi[c], coef[c], own_c, k, hessian, d1, d2, a1, ad2,
                               a2)
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
def event_sums(rows, alpha, base, F, w, logp_t, lo_t, hi_t, coef_t, own, counts, hessian):
    """Over the events of datasets ``rows`` (R,) of a batch (``w`` (Bd, n) and the per-process
    layout of :func:`compact_events`: ``logp_t`` (Bd, C, n), ``lo_t``/``hi_t`` (Bd, C, K, n),
    ``coef_t`` (Bd, C, K, 6, n)) at shape NPs ``alpha`` (R, S), with
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
    C, n = logp_t.shape[1], logp_t.shape[2]
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
        wb, top, wTd = np.empty(_BLOCK), np.empty(_BLOCK), np.empty(_BLOCK)
        tq, xq, ex = np.empty(_BLOCK), np.empty(_BLOCK), np.empty(_BLOCK)
        bits = np.empty(_BLOCK, dtype=np.int64)
        scale = bits.view(np.float64)
        for i0 in range(0, n, _BLOCK):
            m = min(_BLOCK, n - i0)
            for i in range(m):
                wb[i] = w[b, i0 + i]
            for c in range(C):
                lp = logp_t[b, c]
                for i in range(m):
                    q[c, i] = lp[i0 + i] + base[r, c]
                    prod[c, i] = 1.0
                for j in range(counts[c]):
                    a = alpha[r, own[c, j]]
                    if abs(a) < 1.0:
                        cf = coef_t[b, c, j]
                        for i in range(m):
                            x = i0 + i
                            p, dp, d2p = _horner(a, cf[0, x], cf[1, x], cf[2, x], cf[3, x], cf[4, x], cf[5, x])
                            ip = 1.0 / p
                            g = dp * ip
                            d1[c, j, i] = g
                            d2[c, j, i] = d2p * ip - g * g
                            prod[c, i] *= p
                    else:
                        row, sign = (hi_t[b, c, j], 1.0) if a >= 0 else (lo_t[b, c, j], -1.0)
                        for i in range(m):
                            slope = sign * row[i0 + i]
                            d1[c, j, i] = slope
                            d2[c, j, i] = 0.0
                            q[c, i] += a * slope
                for i in range(m):
                    pr = prod[c, i]
                    if not (pr > 1e-280 and pr < 1e280):  # under- or overflowed: sum the logs
                        prod[c, i] = 1.0
                        x = i0 + i
                        for j in range(counts[c]):
                            a = alpha[r, own[c, j]]
                            if abs(a) < 1.0:
                                cf = coef_t[b, c, j]
                                val, _, _ = _horner(a, cf[0, x], cf[1, x], cf[2, x], cf[3, x], cf[4, x], cf[5, x])
                                q[c, i] += math.log(val)
            # lambda_i = sum_c F_c exp(q_ic) prod_ic, relative to the largest exp(q_ic): the
            # products stay factors (no log per event and process) unless lambda under- or
            # overflows; the logs of lambda summed as logs of their products (one log per block
            # where the events' weights are 1)
            for i in range(m):
                t = q[0, i]
                for c in range(1, C):
                    t = max(t, q[c, i])
                tq[i] = t
                top[i] = 0.0
            for c in range(C):
                for i in range(m):
                    xq[i] = q[c, i] - tq[i]
                _exp_into(xq, ex, m, bits, scale)
                fc = F[r, c]
                for i in range(m):
                    x = ex[i] * prod[c, i]
                    u[c, i] = x
                    top[i] += fc * x
            acc, tsum = 1.0, 0.0
            for i in range(m):
                lam = top[i]
                if not (lam > 1e-280 and lam < 1e280):
                    for c in range(C):
                        q[c, i] += math.log(prod[c, i])
                    t = q[0, i]
                    for c in range(1, C):
                        t = max(t, q[c, i])
                    tq[i] = t
                    lam = 0.0
                    for c in range(C):
                        x = math.exp(q[c, i] - t)
                        u[c, i] = x
                        lam += F[r, c] * x
                    top[i] = lam
                if wb[i] == 1.0:
                    acc *= lam
                    tsum += tq[i]
                    if not (acc > 1e-200 and acc < 1e200):
                        loglam[r] += math.log(acc)
                        acc = 1.0
                elif wb[i] != 0.0:
                    loglam[r] += wb[i] * (tq[i] + math.log(lam))
            loglam[r] += tsum + math.log(acc)
            for i in range(m):
                top[i] = 1.0 / top[i]
            for c in range(C):
                for i in range(m):
                    x = u[c, i] * top[i]
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
                        wTd[i] = wT * d1[c, j, i]
                    sRe[r, c, s] += s1
                    sTd2[r, s] += s2
                    for l in range(j + 1):
                        s1 = 0.0
                        for i in range(m):
                            s1 += wTd[i] * d1[c, l, i]
                        sTee[r, s, own[c, l]] += s1
            for x in range(2 * C):
                for i in range(m):
                    wTd[i] = wb[i] * u[x, i]
                for y in range(x + 1):
                    s1 = 0.0
                    for i in range(m):
                        s1 += wTd[i] * u[y, i]
                    suu[r, x, y] += s1
                for s in range(S):
                    s1 = 0.0
                    for i in range(m):
                        s1 += wTd[i] * E[s, i]
                    suE[r, x, s] += s1
            for s in range(S):
                for i in range(m):
                    wTd[i] = wb[i] * E[s, i]
                for t in range(s + 1):
                    s1 = 0.0
                    for i in range(m):
                        s1 += wTd[i] * E[t, i]
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


@nb.njit(cache=True, parallel=True)
def yield_terms(theta, nf, lo, hi, coef, log_nu0, lumi):
    """The yields' factors per dataset (rows of ``theta`` (B, P)) and process: the normfactor
    product ``F`` (B, C), its derivatives ``Q`` (B, C, P) and ``F2`` (B, C, P, P), ``log G``
    (B, C) (log nu0, code-4 normsys terms, lumi) and its first and (diagonal) second derivatives
    ``dG``, ``d2G`` (B, C, P). ``nf`` (C, P) bool, ``lo``/``hi`` (C, P), ``coef`` (C, P, 6),
    ``log_nu0`` (C,), ``lumi`` (C,) (-1: none): :attr:`ChannelModel.kernel_constants`."""
    B, P = theta.shape
    C = nf.shape[0]
    F, logG = np.ones((B, C)), np.zeros((B, C))
    Q, dG, d2G = np.zeros((B, C, P)), np.zeros((B, C, P)), np.zeros((B, C, P))
    F2 = np.zeros((B, C, P, P))
    for b in nb.prange(B):
        th = theta[b]
        for c in range(C):
            for f in range(P):
                if not nf[c, f]:
                    continue
                F[b, c] *= th[f]
                q = 1.0
                for g in range(P):
                    if nf[c, g] and g != f:
                        q *= th[g]
                        x = 1.0
                        for h in range(P):
                            if nf[c, h] and h != f and h != g:
                                x *= th[h]
                        F2[b, c, f, g] = x
                Q[b, c, f] = q
            lg = log_nu0[c]
            for p in range(P):
                inside, val, g1, g2 = _code4(th[p], lo[c, p], hi[c, p], coef[c, p])
                lg += math.log(val) if inside else val
                dG[b, c, p], d2G[b, c, p] = g1, g2
            j = lumi[c]
            if j >= 0:
                lam = max(th[j], 1e-300)
                lg += math.log(lam)
                dG[b, c, j] += 1.0 / lam
                d2G[b, c, j] -= 1.0 / (lam * lam)
            logG[b, c] = lg
    return F, Q, F2, logG, dG, d2G


@nb.njit(cache=True, parallel=True)
def assemble(F, Q, F2, logG, dG, d2G, idx, mean, second, loglam, sR, sT, sTe, sRe, sTee, sTd2, suu, suE, sEE,
             hessian):
    """A channel's NLL (B,), gradient (B, P) and, with ``hessian``, Hessian (B, P, P) from the
    yields' factors (:func:`yield_terms`), the normalisation's ``E_pi[dL]`` and
    ``Cov_pi(dL) + diag E_pi[d2L]`` (``mean`` (B, C, S), ``second`` (B, C, S, S):
    :func:`norm_sums`) and the events' sums (:func:`event_sums`); ``idx`` (S,) the shape NPs'
    parameter positions. The formulas: :mod:`hsbi.inference.derivatives`."""
    B, C, P = Q.shape
    S = idx.shape[0]
    value, grad = np.zeros(B), np.zeros((B, P))
    H = np.zeros((B, P, P)) if hessian else np.zeros((B, 0, 0))
    for b in nb.prange(B):
        G, Y = np.exp(logG[b]), np.empty(C)
        a = dG[b].copy()  # (C, P): dq_ic / dtheta without the event's shape terms
        Te = np.zeros((C, P))
        for c in range(C):
            Y[c] = F[b, c] * G[c]
            value[b] += Y[c]
            for s in range(S):
                a[c, idx[s]] -= mean[b, c, s]
                Te[c, idx[s]] = sTe[b, c, s]
        value[b] -= loglam[b]
        for c in range(C):
            for p in range(P):
                grad[b, p] += Y[c] * dG[b, c, p] + (G[c] - sR[b, c]) * Q[b, c, p] - sT[b, c] * a[c, p] - Te[c, p]
        if not hessian:
            continue
        Hb = H[b]
        M = np.empty((2 * C, P))  # (Q_c, a_c)
        RD = np.empty((C, P))  # sum_i w R_ic D_ic
        for c in range(C):
            for p in range(P):
                M[c, p], M[C + c, p] = Q[b, c, p], a[c, p]
                RD[c, p] = sR[b, c] * a[c, p]
            for s in range(S):
                RD[c, idx[s]] += sRe[b, c, s]
        uM = np.zeros((2 * C, P))  # suu M
        for x in range(2 * C):
            for y in range(2 * C):
                for p in range(P):
                    uM[x, p] += suu[b, x, y] * M[y, p]
        uE = np.zeros((2 * C, P))
        for x in range(2 * C):
            for s in range(S):
                uE[x, idx[s]] = suE[b, x, s]
        for c in range(C):
            g_, y_, r_, t_ = G[c], Y[c], sR[b, c], sT[b, c]
            for p in range(P):
                qp, dp, ap, rp, tp = Q[b, c, p], dG[b, c, p], a[c, p], RD[c, p], Te[c, p]
                for q in range(P):
                    qq, dq, aq = Q[b, c, q], dG[b, c, q], a[c, q]
                    Hb[p, q] += ((g_ - r_) * F2[b, c, p, q] + g_ * (qp * dq + dp * qq) + y_ * dp * dq
                                 - qp * RD[c, q] - rp * qq - t_ * ap * aq - ap * Te[c, q] - tp * aq)
                Hb[p, p] += (y_ - t_) * d2G[b, c, p]
        for x in range(2 * C):
            for p in range(P):
                mp, ep = M[x, p], uE[x, p]
                for q in range(P):
                    Hb[p, q] += mp * uM[x, q] + mp * uE[x, q] + ep * M[x, q]
        for s in range(S):
            Hb[idx[s], idx[s]] -= sTd2[b, s]
            for t in range(S):
                x = sEE[b, s, t] - sTee[b, s, t]
                for c in range(C):
                    x += sT[b, c] * second[b, c, s, t]
                Hb[idx[s], idx[t]] += x
    return value, grad, H
