"""The arithmetic behind ``blend``: out-of-fold error Gram matrices and convex weights on them.

Under per-(gene, compound) weights the blended prediction ``sum_i w_i p_i`` of K candidates has

    mean_c wMSE_c = (1/n) sum_c sum_g W[g,c] (sum_i w_i (p_i - y))[c,g]^2 = w' Q w / n,
    Q[i, j]       = sum_c sum_g W[g,c] (p_i - y)[c,g] (p_j - y)[c,g]      (when sum_i w_i = 1)

so the K x K matrix ``Q`` is all a convex-weight fit needs: it is accumulated chunk by chunk of
held-out compounds and no candidate's full out-of-fold matrix is ever kept.

:func:`convex_weights` solves ``min w'Qw  s.t.  w >= 0, sum w = 1`` exactly by enumerating the
supports (active sets): on each support S the minimiser over the affine hull {sum_S w = 1}
solves the KKT system [[Q_SS, 1], [1', 0]] [w; lam] = [0; 1]; the answer is the best feasible
(non-negative) one. This is exact for a positive semi-definite Q: the minimiser with the smallest
support is the unique minimiser on its support's affine hull (otherwise a line of minimisers
would lead to a smaller support), so the enumeration meets it. 2^K - 1 tiny solves: fine for the
handful of candidates a blend has (at most :data:`MAX_CANDIDATES`). Among equal objectives the
smaller support wins, so an unhelpful candidate gets weight exactly 0 and is never refitted.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

#: the exact enumeration costs 2^K - 1 small solves; more candidates than this is refused
MAX_CANDIDATES = 12
_TOL = 1e-10   # objective ties, on the scale of the normalised Q (mean diagonal 1)


def error_gram(errors: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Q[i, j] = sum_c sum_g W[g,c] e_i[c,g] e_j[c,g] for K error matrices e_i (c, G).

    ``weights`` is (G, c) per gene and compound or (G,) per gene (as :func:`drugcell.metrics.
    metric_weights` returns them). float64 throughout.
    """
    k = len(errors)
    w = np.asarray(weights, dtype=np.float64)
    e = np.stack([np.asarray(x, dtype=np.float64) for x in errors]).reshape(k, -1)   # (K, c*G)
    c, g = np.asarray(errors[0]).shape
    if w.shape == (g,):
        w_flat = np.broadcast_to(w, (c, g)).reshape(-1)
    elif w.shape == (g, c):
        w_flat = w.T.reshape(-1)
    else:
        raise ValueError(f"weights must be ({g},) or ({g}, {c}), got {w.shape}")
    return (e * w_flat) @ e.T


def _face_minimiser(q: np.ndarray) -> np.ndarray:
    """argmin w'qw on {sum w = 1} (min-norm solution of the KKT system when it is not unique)."""
    k = q.shape[0]
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = q
    kkt[:k, k] = 1.0
    kkt[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return sol[:k]


def convex_weights(q: np.ndarray) -> np.ndarray:
    """The exact minimiser of w'qw over the simplex (w >= 0, sum w = 1) for a PSD ``q`` (K, K).

    Enumerates supports by size, so ties go to the fewest candidates (then the earliest ones).
    """
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] == 0:
        raise ValueError(f"q must be a non-empty square matrix, got shape {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("q has NaN/inf entries")
    k = q.shape[0]
    if k > MAX_CANDIDATES:
        raise ValueError(f"at most {MAX_CANDIDATES} candidates, got {k}")
    q = (q + q.T) / 2.0
    scale = float(np.trace(q)) / k
    if scale > 0:
        q = q / scale
    best_w, best_val = None, np.inf
    for size in range(1, k + 1):
        for support in combinations(range(k), size):
            idx = list(support)
            sub = q[np.ix_(idx, idx)]
            w_s = _face_minimiser(sub) if size > 1 else np.ones(1)
            if (w_s < -1e-9).any():
                continue
            w_s = np.clip(w_s, 0.0, None)
            w_s /= w_s.sum()
            val = float(w_s @ sub @ w_s)
            if val < best_val - _TOL:
                best_val = val
                best_w = np.zeros(k)
                best_w[idx] = w_s
    assert best_w is not None  # every single candidate is feasible
    return best_w
