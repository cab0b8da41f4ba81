"""The leaderboard estimate: the expected score on new compounds *on new plates*, with an interval.

Why CV alone is optimistic: every compound's truth carries the effect of the plates its wells sat
on. A held-out training compound shares plates with training compounds (and its plate effect is,
on average, half averaged away over two plates); the contest's test compounds sit on a few plates
of their own, so the whole test set shares a handful of random plate offsets that no structure
model can predict. CV misses this term and cannot see that it is one random draw.

What is estimated, from the training data alone (never from simulator parameters): the DMSO
wells on every training plate give each plate's deviation D_p from the mean profile and its
sampling noise N_p (:class:`~drugcell.data.plates.PlateLayout`). For a held-out compound c with
CV residual e_c = pred - truth, o_c = sum_p a_cp D_p (a_cp: its share of wells on plate p) is its
own plates' part, and base_c = sum_g W_gc (e_cg + o_cg)^2 (less the noise o_c adds) its error
against its plate-free profile. The own-plate contribution cv_c - base_c is kept as measured: it
holds the coupling of Mejia weights to the plate effect (the weights are t-statistics of the
compound's wells, so they rise on the genes its plate moves, for test compounds as for training
ones), which is far stronger when a compound's wells share one plate (the plate then adds nothing
to its within-compound variance). So it is averaged separately over the training compounds whose
wells sat on one plate and over those spread over several, and mixed in the test layout's
proportions (n wells placed at random on k test plates all land on one with probability k^(1-n)):

    estimate = mean_c base_c + k^(1-n) mean_one(cv - base) + (1 - k^(1-n)) mean_spread(cv - base)

(with fewer than ``MIN_CLASS`` compounds of either kind: base_c + (f_test / f_c)(cv_c - base_c),
f = sum_p a_cp^2 the share of one plate's variance).

The interval adds what CV cannot see: the whole test set shares the offsets of its k plates, so
the leaderboard is one random draw. How much a plate moves a model's score is measured on the CV
scores themselves: regressing each held-out compound's wMSE on its shares of wells per training
plate gives every plate's excess (its effect on the score through the truth, the weights and the
model's error alike); their spread, less the regression's sampling noise, is the between-plate
variance of the score. A Monte Carlo then resamples as many compounds as the test set has
(paired across predictors), draws k training plates' excesses (shrunk to that variance) and
spreads the compounds' wells over them; the 2.5% and 97.5% quantiles are the interval.
The replicate-noise floor is what a perfect predictor of each compound's
expected profile would still score: the well noise of n test wells (within-plate DMSO variance /
n) plus the new-plate term.

Assumptions (say them beside the figure): plate effects on compound wells equal those on DMSO
wells; a test compound's wells land on the test plates at random; without plate information (e.g.
L1000 adapters) the estimate is the CV score and its compound-bootstrap interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from drugcell.data.plates import PlateLayout
from drugcell.errors import DrugcellInputError

COLUMNS = ["predictor", "metric", "estimate", "ci_low", "ci_high", "cv_mean", "plate_term", "floor",
           "gap_closed", "reference"]
MIN_CLASS = 10         # compounds needed to measure the own-plate contribution of one layout
DEFAULT_RESAMPLES = 1000


@dataclass
class TestLayout:
    """What the estimate assumes about the test set: how many plates, how many wells per compound."""

    plates: int = 6
    replicates: int = 2
    compounds: int = 1064   # the leaderboard averages over these (the contest's 1,064)

    def plate_fraction(self) -> float:
        """E[sum_j b_j^2] for n wells placed independently and uniformly on k plates."""
        n, k = self.replicates, self.plates
        return 1.0 / n + (1.0 - 1.0 / n) / k


@dataclass
class PlateModel:
    """The training plates as the estimate uses them (built once per run)."""

    D: np.ndarray            # (P, G) deviation of each usable plate's DMSO mean from their mean
    N: np.ndarray            # (P, G) sampling variance of each plate mean
    A: np.ndarray            # (C, P) each compound's share of wells on each usable plate
    sigma2: np.ndarray       # (G,) between-plate variance, noise removed
    well_var: np.ndarray     # (G,) pooled within-plate DMSO variance (well noise)
    layout: TestLayout

    wells: np.ndarray = None  # (C,) wells of each compound on the usable plates

    def __post_init__(self) -> None:  # float32 copies for the (n, G) products of every fold
        self.D32 = self.D.astype(np.float32)
        self.N32 = self.N.astype(np.float32)

    def estimable(self) -> np.ndarray:
        """(P,) plates whose score excess can be estimated: wells of at least ``MIN_CLASS`` compounds."""
        return (self.A > 0).sum(axis=0) >= MIN_CLASS

    def own_fraction(self) -> np.ndarray:
        """(C,) f_c = sum_p a_cp^2: the share of one plate's variance in a training compound's truth."""
        return (self.A ** 2).sum(axis=1)

    def test_fraction(self) -> float:
        """The same for a test compound on new plates (n wells at random on k plates)."""
        return self.layout.plate_fraction()

    def own_part(self, test_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(o_c, its noise variance) of a fold's held-out compounds, (n, G) float32 each."""
        a = self.A[test_idx].astype(np.float32)
        return a @ self.D32, np.square(a) @ self.N32

    def fold_terms(self, own: tuple[np.ndarray, np.ndarray], weights: np.ndarray) -> np.ndarray:
        """(3, n) per held-out compound under one metric's weights ((n, G) or (G,)): the weighted
        between-plate variance, the weighted well noise and the own plates' part (noise removed)."""
        o, noise = own
        w = np.broadcast_to(weights, o.shape) if weights.ndim == 1 else weights
        return np.stack([w @ self.sigma2, w @ self.well_var,
                         np.einsum("cg,cg->c", w, np.square(o) - noise, dtype=np.float64)])

    def base_terms(self, own: tuple[np.ndarray, np.ndarray], resid: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(n,) base_c: a predictor's held-out residuals ``pred - truth`` (n, G) with the own plates'
        part added back (the plate-free error), under one metric's weights, less the noise o_c adds."""
        o, noise = own
        r = o + resid
        w = np.broadcast_to(weights, r.shape) if weights.ndim == 1 else weights
        sq = np.square(r)
        sq -= noise
        return np.einsum("cg,cg->c", w, sq, dtype=np.float64)

    @classmethod
    def from_layout(cls, plates: PlateLayout, layout: TestLayout) -> PlateModel | None:
        ok = plates.usable()
        n_estimable = int(((plates.compound_counts[:, ok] > 0).sum(axis=0) >= MIN_CLASS).sum())
        if ok.sum() < 3 or n_estimable < 3:
            return None
        D = plates.deviations()
        counts = plates.compound_counts[:, ok].astype(np.float64)
        total = plates.compound_counts.sum(axis=1).astype(np.float64)
        A = counts / np.maximum(total, 1.0)[:, None]
        well_var = plates.control_var[ok].astype(np.float64).mean(axis=0)
        return cls(D, plates.noise_variance(), A, plates.plate_variance(), well_var, layout, counts.sum(axis=1))


@dataclass
class _Terms:
    """Per compound (rows in run order) the pieces of one (predictor, metric)."""

    base: np.ndarray        # sum W r^2 less the noise o_c adds


@dataclass
class LeaderboardEstimator:
    """Collects, fold by fold, what the estimate needs; :meth:`finish` runs the Monte Carlo."""

    n_compounds: int
    model: PlateModel | None
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    test_compounds: int = 0            # without plates: the test set's size (0 = the training set's)
    _terms: dict[tuple[str, str], _Terms] = field(default_factory=dict)
    _cv: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    _sig: dict[str, np.ndarray] = field(default_factory=dict)
    _well: dict[str, np.ndarray] = field(default_factory=dict)
    _own: dict[str, np.ndarray] = field(default_factory=dict)

    def coupling(self, metric: str) -> float:
        """kappa: how much larger the weighted plate effect is on a compound's own plates than the
        plate variance predicts (sum_g W_gc o_cg^2 against f_c sum_g W_gc sigma2_g, over compounds).

        Mejia weights are t-statistics of the compound's wells against the rest, so a gene its plate
        moves gets a larger weight: the weights and the plate effect are coupled, in the training
        compounds and in the test compounds alike (their weights come from their own wells). 1 when
        there is no coupling; measured, 2-3 on simulated VCPI-layout data.
        """
        if self.model is None:
            return 1.0
        frac = self.model.own_fraction()
        den = float(np.mean(frac * self._sig[metric]))
        num = float(np.mean(self._own[metric]))
        return max(num / den, 0.0) if den > 0 else 1.0

    def add_fold_weights(self, metric: str, test_idx: np.ndarray, weights: np.ndarray) -> None:
        """The metric's weights of the fold's held-out compounds: (n, G) per compound or (G,) per gene."""
        if self.model is not None:
            self.add_fold_terms(metric, test_idx, self.model.fold_terms(self.model.own_part(test_idx), weights))

    def add_fold_terms(self, metric: str, test_idx: np.ndarray, terms: np.ndarray) -> None:
        """:meth:`PlateModel.fold_terms` of a fold's held-out compounds (computed where the fit ran)."""
        for store, row in zip((self._sig, self._well, self._own), terms):
            store.setdefault(metric, np.zeros(self.n_compounds))[test_idx] = row

    def add(self, predictor: str, metric: str, test_idx: np.ndarray, resid: np.ndarray | None,
            weights: np.ndarray, wmse: np.ndarray) -> None:
        """One predictor's held-out residuals ``pred - truth`` (n, G) under one metric's weights."""
        base = None
        if self.model is not None:
            base = self.model.base_terms(self.model.own_part(test_idx), resid, weights)
        self.add_terms(predictor, metric, test_idx, wmse, base)

    def add_terms(self, predictor: str, metric: str, test_idx: np.ndarray, wmse: np.ndarray,
                  base: np.ndarray | None) -> None:
        """One predictor's held-out scores and (with plates) its :meth:`PlateModel.base_terms`.
        Entries are placed by compound, so the order folds arrive in changes nothing but the order
        of :meth:`finish`'s rows (first arrival of each (predictor, metric))."""
        key = (predictor, metric)
        self._cv.setdefault(key, np.full(self.n_compounds, np.nan))[test_idx] = wmse
        if self.model is None:
            return
        t = self._terms.get(key)
        if t is None:
            t = self._terms[key] = _Terms(np.zeros(self.n_compounds))
        t.base[test_idx] = base

    # ------------------------------------------------------------------ the estimate
    def finish(self, reference: str | None = None) -> pd.DataFrame:
        """One row per (predictor, metric): columns :data:`COLUMNS`."""
        rows = []
        layouts = self._draw_layouts()  # the test layouts drawn, shared by every predictor and metric (paired)
        for (pred, metric), cv in self._cv.items():
            if np.isnan(cv).any():
                raise DrugcellInputError(f"leaderboard estimate: {pred} has no CV score for some compounds")
            est, lo, hi, term, floor = self._one(pred, metric, cv, layouts)
            rows.append({"predictor": pred, "metric": metric, "estimate": est, "ci_low": lo, "ci_high": hi,
                         "cv_mean": float(cv.mean()), "plate_term": term, "floor": floor})
        out = pd.DataFrame(rows, columns=COLUMNS[:-2])
        return _gap_closed(out, reference)

    def _n_test(self) -> int:
        """Compounds in the test set: the leaderboard is a mean over these, not over the training set
        (0: the training set's size)."""
        n = self.model.layout.compounds if self.model is not None else self.test_compounds
        return int(n) if n else self.n_compounds

    def _draw_layouts(self) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """Per resample: the test compounds drawn (with replacement, as many as the test set has),
        the k training plates standing in for the new ones, and their shares of the test set's wells."""
        rng = np.random.default_rng(self.seed)
        n, m = self._n_test(), self.model
        if m is None:
            return [(rng.integers(0, self.n_compounds, n), None, None) for _ in range(self.resamples)]
        k, reps, n_plates = m.layout.plates, m.layout.replicates, int(m.estimable().sum())
        out = []
        for _ in range(self.resamples):
            idx = rng.integers(0, self.n_compounds, n)
            plates = rng.choice(n_plates, size=k, replace=k > n_plates)
            shares = np.bincount(rng.integers(0, k, size=n * reps), minlength=k) / (n * reps)
            out.append((idx, plates, shares))
        return out

    def plate_excess(self, cv: np.ndarray) -> np.ndarray:
        """(P',) the excess on the per-compound score of each plate the test draws come from
        (:meth:`PlateModel.estimable`), shrunk to the between-plate variance: least squares of
        cv_c - mean on the shares a_cp (pseudo-inverse: plates that always hold the same compounds
        split their effect), then the coefficients' sampling noise (residual variance x diag of the
        pseudo-inverse) is taken out of their spread."""
        a = self.model.A[:, self.model.estimable()]
        y = cv - cv.mean()
        inv = np.linalg.pinv(a.T @ a)
        delta = inv @ (a.T @ y)
        resid = y - a @ delta
        dof = max(len(y) - a.shape[1], 1)
        noise = float(resid @ resid) / dof * np.diag(inv)
        spread = float(np.var(delta, ddof=1)) if len(delta) > 1 else 0.0
        between = max(spread - float(noise.mean()), 0.0)
        centred = delta - delta.mean()
        return centred * np.sqrt(between / spread) if spread > 0 else centred * 0.0

    def _one(self, pred: str, metric: str, cv: np.ndarray, layouts) -> tuple[float, float, float, float, float]:
        m = self.model
        if m is None:  # no plates: the CV mean and its compound bootstrap (at the test set's size)
            boot = np.array([cv[idx].mean() for idx, *_ in layouts])
            lo, hi = np.quantile(boot, [0.025, 0.975])
            return float(cv.mean()), float(lo), float(hi), 0.0, float("nan")
        t = self._terms[(pred, metric)]
        f = m.test_fraction()
        expected = self._expected(t.base, cv, f)
        excess = self.plate_excess(cv)
        draws = np.array([expected[idx].mean() + float(shares @ excess[plates]) for idx, plates, shares in layouts])
        lo, hi = np.quantile(draws, [0.025, 0.975])
        kappa = self.coupling(metric)
        floor = float(np.mean(self._well[metric] / m.layout.replicates + kappa * self._sig[metric] * f))
        return float(expected.mean()), float(lo), float(hi), float(expected.mean() - cv.mean()), floor

    def _expected(self, base: np.ndarray, cv: np.ndarray, f_test: float) -> np.ndarray:
        """Per compound: base_c plus the own-plate contribution cv - base expected for the test
        layout. Mejia weights couple to the plate effect much more when a compound's wells share
        one plate (the plate then adds nothing to the within-compound variance, so t rises on every
        gene the plate moves), so the contribution is measured separately on the training compounds
        whose wells all sat on one plate and on those spread over several, and mixed in the test
        layout's proportions (all n wells on one of k plates: k^(1-n)). With too few compounds of
        either kind, the contribution is rescaled by f_test / f_c instead (:meth:`_rescaled`)."""
        m = self.model
        counts = m.wells
        one = (m.A.max(axis=1) >= 1.0 - 1e-9) & (counts >= 2)
        spread = (m.A.max(axis=1) < 1.0 - 1e-9) & (counts >= 2)
        if one.sum() < MIN_CLASS or spread.sum() < MIN_CLASS:
            return self._rescaled(base, cv, f_test)
        contrib = cv - base
        k, n = m.layout.plates, m.layout.replicates
        p_one = float(k) ** (1 - n)
        return base + p_one * contrib[one].mean() + (1.0 - p_one) * contrib[spread].mean()

    def _rescaled(self, base: np.ndarray, cv: np.ndarray, f_test: float) -> np.ndarray:
        """Per compound: the plate-free error plus its own-plate contribution rescaled to the test
        layout, base_c + (f_test / f_c) (cv_c - base_c). The contribution is kept as measured (it includes
        the coupling of Mejia weights to the plate effect and its cross term with the model's
        error); only its share of one plate's variance changes."""
        f_c = self.model.own_fraction()
        ratio = np.where(f_c > 0, f_test / np.where(f_c > 0, f_c, 1.0), 1.0)
        return base + ratio * (cv - base)


def _gap_closed(table: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """Share of the gap from the reference's estimate to the noise floor that each model closes."""
    table = table.copy()
    table["gap_closed"] = np.nan
    table["reference"] = reference or ""
    if reference is None:
        return table
    for _, sub in table.groupby("metric"):
        ref = sub[sub.predictor == reference]
        if ref.empty:
            continue
        ref_est, floor = float(ref["estimate"].iloc[0]), float(ref["floor"].iloc[0])
        gap = ref_est - floor
        if np.isfinite(gap) and gap > 0:
            table.loc[sub.index, "gap_closed"] = (ref_est - sub["estimate"]) / gap
    return table
