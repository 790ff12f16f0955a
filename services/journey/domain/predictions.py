"""Purchase predictions per customer: BG/NBD, Gamma-Gamma and a discounted CLV from both.

Notation and units (time is in **days** everywhere):

- ``x``: repeat purchases, the orders after a customer's first one;
- ``t_x``: days from the first order to the last one (0 when ``x`` is 0);
- ``T``: days from the first order to the as-of instant (the customer's age);
- ``monetary``: mean value of the repeat orders (0 when ``x`` is 0).

**BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"). While active, a
customer buys as a Poisson process of rate λ; after each repeat purchase they leave for good
with probability p. Across customers λ ~ Gamma(r, alpha) (shape r, rate alpha, so alpha is in
days) and p ~ Beta(a, b). A customer's likelihood is

    L = B(a, b+x)/B(a, b) · Γ(r+x) alpha^r / (Γ(r) (alpha+T)^(r+x))
        + [x > 0] B(a+1, b+x-1)/B(a, b) · Γ(r+x) alpha^r / (Γ(r) (alpha+t_x)^(r+x))

computed in logs with ``gammaln``, ``betaln`` and ``logaddexp``. The fit maximises the summed log
likelihood over the log parameters with L-BFGS-B and an analytic gradient; the terms that depend
on x alone are computed once per distinct x, so each evaluation costs a few array operations
over the customers. From the fit:

- P(alive) = 1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)). A customer with no
  repeat purchase has P(alive) = 1 in this model: it only loses customers after a repeat purchase.
- E[purchases in the next t days] = P(alive) (a+b+x-1)/(a-1) (1 - (1-z)^(r+x)
  ₂F₁(r+x, b+x; a+b+x-1; z)) with z = t/(alpha+T+t), FHL eq. (10), evaluated through Euler's
  transformation ₂F₁(A, B; C; z) = (1-z)^(C-A-B) ₂F₁(C-A, C-B; C; z), which keeps the series
  small for customers with many purchases.

**Gamma-Gamma** (Fader & Hardie, "The Gamma-Gamma model of monetary value"). Order values of a
customer are Gamma(p, nu) with nu ~ Gamma(q, v) across customers; fitted on the customers with
at least one repeat purchase and a positive monetary value. Expected order value:
E[M] = p (v + x m) / (p x + q - 1), a weighted mean of the population mean p v / (q-1) and the
customer's own mean m; with no repeat purchase it is the population mean. The model assumes
order value does not depend on frequency; the fit reports their correlation.

**CLV** over a horizon H (days) with a monthly discount rate d: the horizon is cut into months of
30 days (the last one shorter), and each month's expected purchases are valued at the expected
order value and discounted to today at the end of the month:
CLV = E[M] Σ_k (E[X(t_k)] - E[X(t_{k-1})]) / (1+d)^(t_k/30), t_k = min(30 k, H).

**Little data.** Nothing here refuses to answer. With no customer the prior is returned as is.
Otherwise each fit is a maximum a posteriori estimate: a weak Gaussian prior on the log
parameters, around ``BGNBD_PRIOR`` (the published CDNOW estimates, rescaled to days), holds them
where the data say little; the data outweigh it as customers accumulate (``penalizer=0`` gives
plain maximum likelihood). Gamma-Gamma does the same around the CDNOW shapes (p and q have no
unit) with a scale v that makes the prior's mean order value the sample's mean. A fit says
``reliable: false``, with its reasons, below ``RELIABLE_CUSTOMERS`` customers or
``RELIABLE_REPEATERS`` repeat buyers, when the optimiser did not converge, or when a parameter
sits at the edge of its range or is poorly determined (its 95 % interval spans more than a
factor of ``MAX_INTERVAL_RATIO``).

Pure functions of arrays: no clock, no I/O; randomness only in the simulators, from the caller's
generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from scipy.linalg import eigh_tridiagonal  # type: ignore[import-untyped]
from scipy.optimize import minimize  # type: ignore[import-untyped]
from scipy.special import (  # type: ignore[import-untyped]
    betaln,
    digamma,
    expit,
    gammaln,
    hyp2f1,
)
from scipy.stats import chi2  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float64]
Method = Literal["mle", "map", "prior"]

DAYS_PER_MONTH: Final = 30.0
RELIABLE_CUSTOMERS: Final = 200
RELIABLE_REPEATERS: Final = 50
"""Below these counts a fit is flagged unreliable: its parameters still lean on the prior."""
DEFAULT_PENALIZER: Final = 1.0
"""Prior strength: log-parameter standard deviation 1/√2, about a factor of 2 either way. Summed
over customers, the log likelihood outweighs it within a few dozen customers."""
QUADRATURE_NODES: Final = 48
MAX_INTERVAL_RATIO: Final = 20.0
FORECAST_DAYS: Final = 90.0
MAX_FORECAST_RSE: Final = 0.10
"""A fit is reliable only if the workspace's expected repeat purchases over the next
``FORECAST_DAYS`` are known to ±10 % (one standard error, from the parameters' uncertainty)."""
MAX_FREQUENCY_MONETARY_CORRELATION: Final = 0.3
HISTOGRAM_BUCKETS: Final = 8  # 0 … 6 repeat purchases and "7+"

_LOG_LOWER, _LOG_UPPER = math.log(1e-5), math.log(1e6)
_Z95: Final = 1.959963984540054


class PredictionInputError(ValueError):
    """The arrays given to a fit or a prediction are inconsistent; the message names the field."""


# ── BG/NBD ────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    r: float
    alpha: float  # days
    a: float
    b: float


BGNBD_PRIOR: Final = BgNbdParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
"""CDNOW (FHL 2005, table 1; alpha was 4.414 weeks): a music retailer with a long tail of one-time
buyers. Only a starting point for shops with too few customers to speak for themselves."""


@dataclass(frozen=True, slots=True)
class FitInfo:
    """What every fit reports besides its parameters."""

    method: Method
    log_likelihood: float
    n: int
    iterations: int
    converged: bool
    penalizer: float
    intervals: dict[str, tuple[float, float]] | None
    reasons: tuple[str, ...]

    @property
    def reliable(self) -> bool:
        return not self.reasons

    def aic(self, k: int) -> float:
        return 2 * k - 2 * self.log_likelihood

    def common_json(self, k: int) -> dict[str, Any]:
        return {
            "method": self.method,
            "log_likelihood": _num(self.log_likelihood),
            "aic": _num(self.aic(k)),
            "iterations": self.iterations,
            "converged": self.converged,
            "penalizer": self.penalizer,
            "intervals_95": None
            if self.intervals is None
            else {name: [_num(lo), _num(hi)] for name, (lo, hi) in self.intervals.items()},
            "reliable": self.reliable,
            "reasons": list(self.reasons),
        }


class _Reports:
    """What a fit's report says, read through from its ``FitInfo``."""

    __slots__ = ()
    info: FitInfo

    @property
    def log_likelihood(self) -> float:
        return self.info.log_likelihood

    @property
    def n(self) -> int:
        return self.info.n

    @property
    def iterations(self) -> int:
        return self.info.iterations

    @property
    def converged(self) -> bool:
        return self.info.converged

    @property
    def reliable(self) -> bool:
        return self.info.reliable


@dataclass(frozen=True, slots=True)
class BgNbdFit(_Reports):
    """A fitted BG/NBD model: what predictions need (the parameters) and what tells whether to
    trust them (``info``, ``forecast``)."""

    r: float
    alpha: float
    a: float
    b: float
    n_with_repeats: int
    info: FitInfo
    forecast: Forecast | None = None

    @property
    def params(self) -> BgNbdParams:
        return BgNbdParams(self.r, self.alpha, self.a, self.b)

    @property
    def aic(self) -> float:
        return self.info.aic(4)

    def to_json(self) -> dict[str, Any]:
        new_year = float(expected_purchases(self, 365.0, 0.0, 0.0, 0.0)[0])
        return {
            "model": "bg/nbd",
            "time_unit": "day",
            "params": {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b},
            "n_customers": self.n,
            "n_with_repeats": self.n_with_repeats,
            **self.info.common_json(4),
            "population": {
                "purchase_rate_per_day": _num(self.r / self.alpha),
                "dropout_probability_per_purchase": _num(self.a / (self.a + self.b)),
                "new_customer_repeat_purchases_365d": _num(new_year),
            },
            "forecast": None if self.forecast is None else self.forecast.to_json(),
        }


@dataclass(frozen=True, slots=True)
class Forecast:
    """The workspace's expected repeat purchases over the next ``days``, with the standard error
    that the parameters' uncertainty puts on it (delta method on the fit's covariance)."""

    days: float
    customers: int
    purchases: float
    relative_standard_error: float | None

    def to_json(self) -> dict[str, Any]:
        rse = self.relative_standard_error
        return {
            "days": self.days,
            "customers": self.customers,
            "expected_purchases": _num(self.purchases),
            "relative_standard_error": _num(rse),
            "interval_95": None
            if rse is None
            else [
                _num(self.purchases * max(0.0, 1 - _Z95 * rse)),
                _num(self.purchases * (1 + _Z95 * rse)),
            ],
        }


@dataclass(frozen=True, slots=True)
class _BgNbdData:
    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    ux: FloatArray  # distinct x values
    ix: npt.NDArray[np.intp]  # index of each customer's x in ux


def bgnbd_log_likelihood(
    params: BgNbdParams, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
) -> FloatArray:
    """Per-customer log likelihood (for checks and tests; the fit uses the same code)."""
    data = _bgnbd_data(x, t_x, T)
    theta = np.log([params.r, params.alpha, params.a, params.b])
    return _bgnbd_terms(theta, data, gradient=False)[0]


def _bgnbd_data(x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> _BgNbdData:
    xa, ta, Ta = _history(x, t_x, T)
    ux, ix = np.unique(xa, return_inverse=True)
    return _BgNbdData(xa, ta, Ta, ux.astype(np.float64), ix)


def _bgnbd_terms(
    theta: FloatArray, d: _BgNbdData, *, gradient: bool
) -> tuple[FloatArray, FloatArray]:
    """Per-customer log likelihood and (if asked) the summed gradient over log parameters."""
    r, alpha, a, b = np.exp(theta)
    u = d.ux
    rep = u > 0
    u1 = np.where(rep, u, 1.0)  # keeps b + u - 1 > 0 where x = 0; those entries are unused
    head = gammaln(r + u) - gammaln(r) + r * np.log(alpha) + betaln(a, b + u) - betaln(a, b)
    shift = np.where(rep, np.log(a) - np.log(b + u1 - 1), -np.inf)
    rx = r + d.x
    log_t = np.log(alpha + d.T)
    log_tx = np.log(alpha + d.t_x)
    alive = -rx * log_t
    gone = shift[d.ix] - rx * log_tx
    total = np.logaddexp(alive, gone)
    ll = head[d.ix] + total
    if not gradient:
        return ll, np.zeros(4)
    w = np.exp(gone - total)  # posterior probability of "left after the last purchase"
    counts = np.bincount(d.ix, minlength=u.size).astype(np.float64)
    dr = counts @ (digamma(r + u) - digamma(r) + np.log(alpha)) - np.sum(
        (1 - w) * log_t + w * log_tx
    )
    dalpha = d.x.size * r / alpha - np.sum(rx * ((1 - w) / (alpha + d.T) + w / (alpha + d.t_x)))
    da = counts @ (digamma(a + b) - digamma(a + b + u)) + np.sum(w) / a
    db_w = np.where(rep, -1.0 / (b + u1 - 1), 0.0)
    db = counts @ (digamma(b + u) - digamma(a + b + u) - digamma(b) + digamma(a + b)) + np.sum(
        w * db_w[d.ix]
    )
    grad = np.array([dr * r, dalpha * alpha, da * a, db * b])
    return ll, grad


def fit_bgnbd(
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    *,
    penalizer: float = DEFAULT_PENALIZER,
    prior: BgNbdParams = BGNBD_PRIOR,
) -> BgNbdFit:
    """Fit the BG/NBD model to one workspace's customers.

    ``penalizer`` λ ≥ 0 adds λ Σ (log θ - log θ_prior)² to the negative log likelihood summed
    over customers: a Gaussian prior on the log parameters with standard deviation 1/√(2λ).
    Its pull is fixed while the data's grows with every customer, so it steadies small
    workspaces and fades in large ones (simulations show it never hurt the 90-day forecast at
    the default strength). 0 is plain maximum likelihood.
    """
    _check_penalizer(penalizer)
    data = _bgnbd_data(x, t_x, T)
    n = int(data.x.size)
    n_rep = int(np.count_nonzero(data.x))
    prior_log = np.log([prior.r, prior.alpha, prior.a, prior.b])
    names = ("r", "alpha", "a", "b")
    if n == 0:
        reason = "no customers with an order: the prior parameters are used"
        info = FitInfo("prior", 0.0, 0, 0, True, penalizer, None, (reason,))
        return BgNbdFit(prior.r, prior.alpha, prior.a, prior.b, 0, info)

    reasons: list[str] = []
    if n < RELIABLE_CUSTOMERS or n_rep < RELIABLE_REPEATERS:
        reasons.append(
            f"only {n} customers, {n_rep} with repeat purchases (reliable from "
            f"{RELIABLE_CUSTOMERS} and {RELIABLE_REPEATERS})"
        )
    # Start where the mean purchase rate r/alpha matches the observed repeat rate.
    rate = max(float(data.x.sum()), 1.0) / max(float(data.T.sum()), 1.0)
    start = np.log([1.0, 1.0 / rate, 1.0, 3.0]).clip(_LOG_LOWER + 1, _LOG_UPPER - 1)

    def loglik(theta: FloatArray) -> tuple[float, FloatArray]:
        ll, grad = _bgnbd_terms(theta, data, gradient=True)
        return float(ll.sum()), grad

    opt = _maximise(loglik, start, n=n, prior_log=prior_log, penalizer=penalizer)
    ll = float(_bgnbd_terms(opt.theta, data, gradient=False)[0].sum())
    reasons += opt.reasons(names)
    forecast = _forecast(opt, data)
    rse = forecast.relative_standard_error
    if rse is not None and rse > MAX_FORECAST_RSE:
        reasons.append(
            f"the {FORECAST_DAYS:g}-day forecast is uncertain: ±{100 * _Z95 * rse:.0f} % (95 %)"
        )
    r, alpha, a, b = (float(v) for v in np.exp(opt.theta))
    info = FitInfo(
        method="mle" if penalizer == 0 else "map",
        log_likelihood=ll,
        n=n,
        iterations=opt.iterations,
        converged=opt.converged,
        penalizer=penalizer,
        intervals=opt.intervals(names),
        reasons=tuple(reasons),
    )
    return BgNbdFit(r, alpha, a, b, n_rep, info, forecast)


def _forecast(opt: _Optimum, d: _BgNbdData) -> Forecast:
    """Expected purchases of these customers in the next ``FORECAST_DAYS``; its uncertainty by
    the delta method, with the gradient by forward differences in the log parameters."""
    horizon = np.full_like(d.x, FORECAST_DAYS)

    def total(theta: FloatArray) -> float:
        r, alpha, a, b = (float(v) for v in np.exp(theta))
        p = BgNbdParams(r, alpha, a, b)
        expected = _conditional_expectation(p, horizon, d.x, d.t_x, d.T)
        return float(np.sum(expected * _palive(p, d.x, d.t_x, d.T)))

    base = total(opt.theta)
    n = int(d.x.size)
    if opt.covariance is None or not base > 0:
        return Forecast(FORECAST_DAYS, n, base, None)
    step = 1e-6
    grad = np.array([(total(opt.theta + step * e) - base) / step for e in np.eye(opt.theta.size)])
    variance = float(grad @ opt.covariance @ grad)
    return Forecast(FORECAST_DAYS, n, base, math.sqrt(max(variance, 0.0)) / base)


def probability_alive(
    fit: BgNbdFit | BgNbdParams, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
) -> FloatArray:
    """P(the customer has not left) at age T, given x repeat purchases, the last at t_x."""
    p = _params(fit)
    xa, ta, Ta = _history(x, t_x, T)
    return _palive(p, xa, ta, Ta)


def _palive(p: BgNbdParams, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
    rep = x > 0
    x1 = np.where(rep, x, 1.0)
    odds = (
        np.log(p.a)
        - np.log(p.b + x1 - 1)
        + (p.r + x) * (np.log(p.alpha + T) - np.log(p.alpha + t_x))
    )
    return np.where(rep, expit(-odds), 1.0)


def expected_purchases(
    fit: BgNbdFit | BgNbdParams,
    t: npt.ArrayLike,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
) -> FloatArray:
    """Expected purchases in the next ``t`` days of a customer with history (x, t_x, T).

    With x = t_x = T = 0 it is the expectation for a customer who just made a first order,
    E[X(t)] of FHL eq. (9).
    """
    p = _params(fit)
    xa, ta, Ta = _history(x, t_x, T)
    tt = np.asarray(t, dtype=np.float64)
    if np.any(~np.isfinite(tt)) or np.any(tt < 0):
        raise PredictionInputError("t must be finite and ≥ 0 days")
    tt, xa, ta, Ta = np.broadcast_arrays(tt, xa, ta, Ta)
    return _conditional_expectation(p, tt, xa, ta, Ta) * _palive(p, xa, ta, Ta)


def _conditional_expectation(
    p: BgNbdParams, t: FloatArray, x: FloatArray, t_x: FloatArray, T: FloatArray
) -> FloatArray:
    """Expected purchases in the next t days given alive now (FHL eq. 10 without P(alive))."""
    # (a+b+x-1)/(a-1) is 0/0 at a = 1; moving a by 1e-6 changes the model by far less than
    # the estimate's own uncertainty.
    a = p.a if abs(p.a - 1.0) > 1e-6 else 1.0 + 1e-6
    z = t / (p.alpha + T + t)
    c = a + p.b + x - 1
    with np.errstate(all="ignore"):
        series = hyp2f1(a + p.b - 1 - p.r, a - 1, c, z)
        out = np.asarray(c / (a - 1) * (1 - np.exp((a - 1) * np.log1p(-z)) * series))
    # The series overflows for extreme parameters (a or b in the thousands); the expectation
    # lies in [0, (r+x) t/(alpha+T)] (the purchases of a customer who never leaves).
    ceiling = (p.r + x) * t / (p.alpha + T)
    broken = ~np.isfinite(out) | (out < -1e-9) | (out > ceiling * (1 + 1e-9) + 1e-12)
    if np.any(broken):
        out = out.copy()
        out[broken] = _expectation_by_quadrature(p, t[broken], x[broken], T[broken])
    return np.asarray(np.clip(out, 0.0, ceiling), dtype=np.float64)


def _expectation_by_quadrature(
    p: BgNbdParams, t: FloatArray, x: FloatArray, T: FloatArray
) -> FloatArray:
    """E[(1 - (1 + q t/(alpha+T))^-(r+x)) / q] over q ~ Beta(a, b+x), the dropout probability
    given the history (λ integrated out in closed form), by Gauss quadrature for that Beta."""
    ux, ix = np.unique(x, return_inverse=True)
    nodes = np.empty((ux.size, QUADRATURE_NODES))
    weights = np.empty_like(nodes)
    for i, u in enumerate(ux.tolist()):
        nodes[i], weights[i] = beta_quadrature(p.a, p.b + u, QUADRATURE_NODES)
    q = nodes[ix]
    k = (t / (p.alpha + T))[:, None]
    g = -np.expm1(-(p.r + x)[:, None] * np.log1p(q * k)) / q
    return np.asarray(np.sum(weights[ix] * g, axis=1), dtype=np.float64)


def beta_quadrature(a: float, b: float, n: int) -> tuple[FloatArray, FloatArray]:
    """Gauss nodes and weights (summing to 1) for expectations under Beta(a, b).

    Golub-Welsch on the three-term recurrence of the Jacobi polynomials: the weights come from
    the eigenvectors, so no gamma function is evaluated and large a, b cannot overflow.
    """
    alpha, beta = b - 1.0, a - 1.0  # Jacobi weight (1-u)^alpha (1+u)^beta on [-1, 1]
    k = np.arange(n, dtype=np.float64)
    s = 2 * k + alpha + beta
    with np.errstate(divide="ignore", invalid="ignore"):
        diagonal = np.where(
            k == 0, (beta - alpha) / (alpha + beta + 2), (beta**2 - alpha**2) / (s * (s + 2))
        )
    m = np.arange(1, n, dtype=np.float64)
    s = 2 * m + alpha + beta
    off_sq = 4 * m * (m + alpha) * (m + beta) * (m + alpha + beta) / (s**2 * (s + 1) * (s - 1))
    # At m = 1 the factor (1 + alpha + beta) cancels; written out it cannot divide 0 by 0.
    off_sq[0] = 4 * (1 + alpha) * (1 + beta) / ((2 + alpha + beta) ** 2 * (3 + alpha + beta))
    u, vectors = eigh_tridiagonal(diagonal, np.sqrt(off_sq))
    return np.asarray((1 + u) / 2, dtype=np.float64), np.asarray(vectors[0] ** 2, dtype=np.float64)


def repeat_probabilities(
    fit: BgNbdFit | BgNbdParams, T: npt.ArrayLike, buckets: int = HISTOGRAM_BUCKETS
) -> FloatArray:
    """P(X(T) = k) for k = 0 … buckets-2 and P(X(T) ≥ buckets-1), per customer (FHL eq. 8).

    Returns an array of shape (len(T), buckets).
    """
    p = _params(fit)
    Ta = np.asarray(T, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(Ta)) or np.any(Ta < 0):
        raise PredictionInputError("T must be finite and ≥ 0")
    with np.errstate(divide="ignore"):
        log_keep = np.log(p.alpha) - np.log(p.alpha + Ta)  # log P(no purchase) for λ's mixture
        log_buy = np.log(Ta) - np.log(p.alpha + Ta)
    out = np.empty((Ta.size, buckets))
    cdf = np.zeros(Ta.size)
    base = betaln(p.a, p.b)
    for k in range(buckets - 1):
        buy_term = k * log_buy if k > 0 else np.zeros_like(Ta)
        log_nb = gammaln(p.r + k) - gammaln(p.r) - gammaln(k + 1.0) + p.r * log_keep + buy_term
        nb = np.exp(log_nb)
        prob = math.exp(betaln(p.a, p.b + k) - base) * nb
        if k > 0:
            prob = prob + math.exp(betaln(p.a + 1, p.b + k - 1) - base) * (1 - cdf)
        out[:, k] = prob
        cdf = np.minimum(cdf + nb, 1.0)
    out[:, -1] = np.maximum(1.0 - out[:, :-1].sum(axis=1), 0.0)
    return out


# ── Gamma-Gamma ───────────────────────────────────────────────────────────────────────────────

GG_PRIOR_P: Final = 6.25
GG_PRIOR_Q: Final = 3.74
"""CDNOW shapes (Fader & Hardie's Gamma-Gamma note). They have no unit; the scale v comes from
the workspace's own mean order value."""


@dataclass(frozen=True, slots=True)
class GammaGammaFit(_Reports):
    """A fitted Gamma-Gamma model of order value."""

    p: float
    q: float
    v: float
    sample_mean: float
    """Mean of the customers' mean order values; used for new customers when q ≤ 1."""
    correlation: float | None
    """Pearson correlation of frequency and monetary value among repeat buyers."""
    info: FitInfo

    @property
    def population_mean(self) -> float:
        """Expected order value of a customer with no repeat purchase yet."""
        return self.p * self.v / (self.q - 1) if self.q > 1 else self.sample_mean

    def to_json(self) -> dict[str, Any]:
        return {
            "model": "gamma-gamma",
            "params": {"p": _num(self.p), "q": _num(self.q), "v": _num(self.v)},
            "n_repeat_buyers": self.n,
            **self.info.common_json(3),
            "population_mean_order_value": _num(self.population_mean),
            "sample_mean_order_value": _num(self.sample_mean),
            "frequency_monetary_correlation": _num(self.correlation),
        }


def gamma_gamma_log_likelihood(
    p: float, q: float, v: float, frequency: npt.ArrayLike, monetary: npt.ArrayLike
) -> FloatArray:
    """Per-customer log density of the mean order value (customers with x ≥ 1, m > 0)."""
    x, m = _monetary(frequency, monetary)
    ux, ix = np.unique(x, return_inverse=True)
    return _gg_terms(np.log([p, q, v]), x, m, ux, ix, gradient=False)[0]


def _gg_terms(
    theta: FloatArray,
    x: FloatArray,
    m: FloatArray,
    ux: FloatArray,
    ix: npt.NDArray[np.intp],
    *,
    gradient: bool,
) -> tuple[FloatArray, FloatArray]:
    p, q, v = np.exp(theta)
    px = p * x
    log_vmx = np.log(v + m * x)
    ll = (
        (gammaln(p * ux + q) - gammaln(p * ux))[ix]
        - gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * log_vmx
    )
    if not gradient:
        return ll, np.zeros(3)
    dp = np.sum(x * ((digamma(p * ux + q) - digamma(p * ux))[ix] + np.log(m * x) - log_vmx))
    dq = np.sum(digamma(p * ux + q)[ix] - log_vmx) + x.size * (np.log(v) - digamma(q))
    dv = x.size * q / v - np.sum((px + q) / (v + m * x))
    return ll, np.array([dp * p, dq * q, dv * v])


def fit_gamma_gamma(
    frequency: npt.ArrayLike,
    monetary: npt.ArrayLike,
    *,
    penalizer: float = DEFAULT_PENALIZER,
    fallback_mean: float | None = None,
) -> GammaGammaFit:
    """Fit Gamma-Gamma on the customers with at least one repeat purchase and m > 0.

    ``fallback_mean`` (e.g. the workspace's mean first-order value) sets the scale of the prior
    when no customer has a repeat purchase yet; without it such a fit has no order value (NaN).
    ``penalizer`` is as for ``fit_bgnbd``, around the prior shapes and scale.
    """
    _check_penalizer(penalizer)
    x, m = _monetary(frequency, monetary)
    n = int(x.size)
    if n:
        sample_mean = float(m.mean())
    else:
        sample_mean = math.nan if fallback_mean is None else float(fallback_mean)
    prior_v = sample_mean * (GG_PRIOR_Q - 1) / GG_PRIOR_P
    names = ("p", "q", "v")
    correlation = None
    if n >= 3 and np.ptp(x) > 0 and np.ptp(m) > 0:
        correlation = float(np.corrcoef(x, m)[0, 1])
    if n == 0 or not math.isfinite(prior_v) or prior_v <= 0:
        reason = (
            "no repeat purchases: prior shapes, scale from the mean order value"
            if math.isfinite(prior_v) and prior_v > 0
            else "no order values to learn from: expected order value unknown"
        )
        info = FitInfo("prior", 0.0, n, 0, True, penalizer, None, (reason,))
        return GammaGammaFit(GG_PRIOR_P, GG_PRIOR_Q, prior_v, sample_mean, correlation, info)

    reasons: list[str] = []
    if n < RELIABLE_REPEATERS:
        reasons.append(
            f"only {n} customers with repeat purchases (reliable from {RELIABLE_REPEATERS})"
        )
    prior_log = np.log([GG_PRIOR_P, GG_PRIOR_Q, prior_v])
    ux, ix = np.unique(x, return_inverse=True)

    def loglik(theta: FloatArray) -> tuple[float, FloatArray]:
        ll, grad = _gg_terms(theta, x, m, ux, ix, gradient=True)
        return float(ll.sum()), grad

    opt = _maximise(loglik, prior_log, n=n, prior_log=prior_log, penalizer=penalizer)
    p, q, v = (float(val) for val in np.exp(opt.theta))
    reasons += opt.reasons(names)
    if q <= 1:
        reasons.append(
            f"q = {q:.3g} ≤ 1: order values too heavy-tailed for a population mean; "
            "customers without repeat purchases get the sample mean"
        )
    if correlation is not None and abs(correlation) > MAX_FREQUENCY_MONETARY_CORRELATION:
        reasons.append(
            f"order value correlates with frequency (rho = {correlation:.2f}): "
            "the model assumes they are independent"
        )
    ll = float(_gg_terms(opt.theta, x, m, ux, ix, gradient=False)[0].sum())
    info = FitInfo(
        method="mle" if penalizer == 0 else "map",
        log_likelihood=ll,
        n=n,
        iterations=opt.iterations,
        converged=opt.converged,
        penalizer=penalizer,
        intervals=opt.intervals(names),
        reasons=tuple(reasons),
    )
    return GammaGammaFit(p, q, v, sample_mean, correlation, info)


def expected_order_value(
    fit: GammaGammaFit, frequency: npt.ArrayLike, monetary: npt.ArrayLike
) -> FloatArray:
    """Expected value of a customer's next order; the population mean for those with x = 0."""
    x = np.asarray(frequency, dtype=np.float64)
    m = np.asarray(monetary, dtype=np.float64)
    if x.shape != m.shape:
        raise PredictionInputError(f"monetary must have the shape of frequency, {x.shape}")
    if np.any(~np.isfinite(x)) or np.any(x < 0):
        raise PredictionInputError("frequency must be finite and ≥ 0")
    if np.any(~np.isfinite(m)):
        raise PredictionInputError("monetary must be finite")
    own = (x > 0) & (m > 0)
    # The posterior of nu is Gamma(p x + q, v + x m), so E[p / nu] = p (v + x m) / (p x + q - 1)
    # wherever p x + q > 1; past that edge (q ≤ 1 and tiny p) the customer's own mean stands.
    denominator = fit.p * x + fit.q - 1
    finite = own & (denominator > 0)
    posterior = fit.p * (fit.v + x * m) / np.where(finite, denominator, 1.0)
    return np.where(finite, posterior, np.where(own, m, fit.population_mean))


# ── CLV and per-customer predictions ──────────────────────────────────────────────────────────


def clv(
    bgnbd: BgNbdFit | BgNbdParams,
    gg: GammaGammaFit,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    monetary: npt.ArrayLike,
    horizon_days: float,
    monthly_discount_rate: float = 0.01,
) -> FloatArray:
    """Discounted value of each customer's purchases over the next ``horizon_days``."""
    if not math.isfinite(horizon_days) or horizon_days < 0:
        raise PredictionInputError(f"horizon_days must be ≥ 0, got {horizon_days}")
    if not math.isfinite(monthly_discount_rate) or monthly_discount_rate <= -1:
        raise PredictionInputError(
            f"monthly_discount_rate must be > -1, got {monthly_discount_rate}"
        )
    p = _params(bgnbd)
    xa, ta, Ta = _history(x, t_x, T)
    value = expected_order_value(gg, xa, np.asarray(monetary, dtype=np.float64))
    alive = _palive(p, xa, ta, Ta)
    months = math.ceil(horizon_days / DAYS_PER_MONTH)
    total = np.zeros_like(xa)
    before = np.zeros_like(xa)
    for k in range(1, months + 1):
        edge = min(k * DAYS_PER_MONTH, horizon_days)
        upto = _conditional_expectation(p, np.full_like(xa, edge), xa, ta, Ta) * alive
        total += (upto - before) / (1 + monthly_discount_rate) ** (edge / DAYS_PER_MONTH)
        before = upto
    return np.asarray(total * value, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class PurchaseHistory:
    """Per-customer sufficient statistics for the models (days)."""

    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    monetary: FloatArray


def purchase_history(
    *,
    first_order_days_ago: npt.ArrayLike,
    last_order_days_ago: npt.ArrayLike,
    order_count: npt.ArrayLike,
    revenue: npt.ArrayLike,
    first_order_value: npt.ArrayLike | None = None,
) -> PurchaseHistory:
    """The models' inputs from profile aggregates of customers with at least one order.

    Days ago are counted back from the as-of instant (``rfm.days_before``). Monetary is the mean
    of the repeat orders when ``first_order_value`` is known, else the mean of all orders: the
    profile keeps only total revenue, and the first order then weighs in as one order among x+1.
    """
    first = np.asarray(first_order_days_ago, dtype=np.float64)
    last = np.asarray(last_order_days_ago, dtype=np.float64)
    count = np.asarray(order_count, dtype=np.float64)
    money = np.asarray(revenue, dtype=np.float64)
    n = first.size
    for name, arr in (
        ("first_order_days_ago", first),
        ("last_order_days_ago", last),
        ("order_count", count),
        ("revenue", money),
    ):
        if arr.ndim != 1 or arr.size != n:
            raise PredictionInputError(f"{name} must be a one-dimensional array of {n} values")
        if not np.all(np.isfinite(arr)):
            raise PredictionInputError(f"{name} must be finite")
    if np.any(count < 1) or np.any(count != np.floor(count)):
        raise PredictionInputError("order_count must be a whole number ≥ 1 for every customer")
    if np.any(last < 0):
        raise PredictionInputError(
            "last_order_days_ago is negative: orders after the as-of instant "
            "(an earlier as-of needs the order history, not the profile totals)"
        )
    if np.any(first < last):
        raise PredictionInputError("first_order_days_ago must be ≥ last_order_days_ago")
    x = count - 1
    rep = x > 0
    t_x = np.where(rep, first - last, 0.0)
    if first_order_value is None:
        monetary = np.where(rep, money / count, 0.0)
    else:
        first_value = np.asarray(first_order_value, dtype=np.float64)
        if first_value.shape != money.shape or not np.all(np.isfinite(first_value)):
            raise PredictionInputError(f"first_order_value must hold {n} finite values")
        monetary = np.where(rep, (money - first_value) / np.where(rep, x, 1.0), 0.0)
    return PurchaseHistory(x=x, t_x=t_x, T=first.copy(), monetary=monetary)


@dataclass(frozen=True, slots=True)
class CustomerPredictions:
    """Per-customer predictions, aligned with the history they were computed from."""

    probability_alive: FloatArray
    purchases_30d: FloatArray
    purchases_90d: FloatArray
    expected_order_value: FloatArray
    clv: FloatArray
    clv_horizon_days: float

    def fields(self) -> list[dict[str, float | None]]:
        """One dict per customer, under the names segments, templates and the API use
        (probabilities and purchases to 4 decimals, money to 2; an unknown value is None)."""
        columns = {
            "p_alive": (self.probability_alive, 4),
            "expected_orders_30d": (self.purchases_30d, 4),
            "expected_orders_90d": (self.purchases_90d, 4),
            "expected_order_value": (self.expected_order_value, 2),
            "clv": (self.clv, 2),
        }
        lists = {name: values.tolist() for name, (values, _) in columns.items()}
        return [
            {
                name: None if not math.isfinite(v := lists[name][i]) else round(v, digits)
                for name, (_, digits) in columns.items()
            }
            for i in range(self.clv.size)
        ]


def predict(
    bgnbd: BgNbdFit,
    gg: GammaGammaFit,
    history: PurchaseHistory,
    *,
    clv_horizon_days: float = 365.0,
    monthly_discount_rate: float = 0.01,
) -> CustomerPredictions:
    """Every per-customer prediction for one workspace, from its two fits."""
    h = history
    return CustomerPredictions(
        probability_alive=probability_alive(bgnbd, h.x, h.t_x, h.T),
        purchases_30d=expected_purchases(bgnbd, 30.0, h.x, h.t_x, h.T),
        purchases_90d=expected_purchases(bgnbd, 90.0, h.x, h.t_x, h.T),
        expected_order_value=expected_order_value(gg, h.x, h.monetary),
        clv=clv(bgnbd, gg, h.x, h.t_x, h.T, h.monetary, clv_horizon_days, monthly_discount_rate),
        clv_horizon_days=clv_horizon_days,
    )


# ── Fit quality ───────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Holdout:
    """Purchases each customer made in the ``days`` after the calibration's as-of instant."""

    purchases: FloatArray
    days: float


@dataclass(frozen=True, slots=True)
class FitQuality:
    log_likelihood: float
    aic: float
    n_customers: int
    n_with_repeats: int
    converged: bool
    reliable: bool
    histogram: list[dict[str, Any]]
    chi_square: float
    degrees_of_freedom: int
    calibration: dict[str, Any] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        dof = self.degrees_of_freedom
        return {
            "log_likelihood": _num(self.log_likelihood),
            "aic": _num(self.aic),
            "n_customers": self.n_customers,
            "n_with_repeats": self.n_with_repeats,
            "converged": self.converged,
            "reliable": self.reliable,
            "repeat_histogram": self.histogram,
            "chi_square": _num(self.chi_square),
            "degrees_of_freedom": dof,
            "p_value": _num(float(chi2.sf(self.chi_square, dof))) if dof > 0 else None,
            "calibration": self.calibration,
        }


def fit_quality(
    fit: BgNbdFit,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    *,
    holdout: Holdout | None = None,
) -> FitQuality:
    """How well ``fit`` describes the data it was fitted on, and if a holdout is given, how well
    it predicted the purchases that followed.

    In sample: the number of customers with 0, 1, … 6 and 7+ repeat purchases against the
    number the model expects given each customer's age (FHL fig. 2), with a χ² over the buckets
    expecting at least 5 customers (with thousands of customers any real shop fails the test
    at 5 %; the table shows where). Holdout: total and per-bucket mean purchases, observed and
    predicted (FHL fig. 4), and the mean absolute error per customer.
    """
    xa, ta, Ta = _history(x, t_x, T)
    buckets = HISTOGRAM_BUCKETS
    expected = repeat_probabilities(fit, Ta, buckets).sum(axis=0)
    observed = np.bincount(np.minimum(xa, buckets - 1).astype(np.intp), minlength=buckets)
    labels = [str(k) for k in range(buckets - 1)] + [f"{buckets - 1}+"]
    histogram = [
        {"repeats": label, "observed": int(o), "expected": round(float(e), 2)}
        for label, o, e in zip(labels, observed, expected, strict=True)
    ]
    usable = expected >= 5
    chi_square = float(np.sum((observed[usable] - expected[usable]) ** 2 / expected[usable]))
    dof = max(int(usable.sum()) - 1 - 4, 0)
    calibration = None if holdout is None else _calibration(fit, xa, ta, Ta, holdout, labels)
    return FitQuality(
        log_likelihood=fit.log_likelihood,
        aic=fit.aic,
        n_customers=fit.n,
        n_with_repeats=fit.n_with_repeats,
        converged=fit.converged,
        reliable=fit.reliable,
        histogram=histogram,
        chi_square=chi_square,
        degrees_of_freedom=dof,
        calibration=calibration,
    )


def _calibration(
    fit: BgNbdFit,
    x: FloatArray,
    t_x: FloatArray,
    T: FloatArray,
    holdout: Holdout,
    labels: list[str],
) -> dict[str, Any]:
    actual = np.asarray(holdout.purchases, dtype=np.float64)
    if actual.shape != x.shape:
        raise PredictionInputError(f"holdout purchases must hold {x.size} values, one a customer")
    if np.any(~np.isfinite(actual)) or np.any(actual < 0):
        raise PredictionInputError("holdout purchases must be finite and ≥ 0")
    if not math.isfinite(holdout.days) or holdout.days <= 0:
        raise PredictionInputError(f"holdout days must be > 0, got {holdout.days}")
    predicted = expected_purchases(fit, holdout.days, x, t_x, T)
    bucket = np.minimum(x, len(labels) - 1).astype(np.intp)
    customers = np.bincount(bucket, minlength=len(labels))
    obs_sum = np.bincount(bucket, weights=actual, minlength=len(labels))
    pred_sum = np.bincount(bucket, weights=predicted, minlength=len(labels))
    observed_total = float(actual.sum())
    predicted_total = float(predicted.sum())
    return {
        "holdout_days": holdout.days,
        "observed_purchases": observed_total,
        "predicted_purchases": round(predicted_total, 2),
        "relative_error": _num((predicted_total - observed_total) / observed_total)
        if observed_total > 0
        else None,
        "mean_absolute_error": _num(float(np.mean(np.abs(predicted - actual)))) if x.size else None,
        "by_repeats": [
            {
                "repeats": label,
                "customers": int(c),
                "observed_mean": _num(o / c) if c else None,
                "predicted_mean": _num(p / c) if c else None,
            }
            for label, c, o, p in zip(labels, customers, obs_sum, pred_sum, strict=True)
        ],
    }


@dataclass(frozen=True, slots=True)
class ModelReport:
    """Both fits and the BG/NBD fit quality: what ``ciclo predict fit`` prints."""

    bgnbd: BgNbdFit
    gamma_gamma: GammaGammaFit
    quality: FitQuality

    @property
    def reliable(self) -> bool:
        return self.bgnbd.reliable and self.gamma_gamma.reliable

    def to_json(self) -> dict[str, Any]:
        return {
            "time_unit": "day",
            "reliable": self.reliable,
            "bgnbd": self.bgnbd.to_json(),
            "gamma_gamma": self.gamma_gamma.to_json(),
            "quality": self.quality.to_json(),
        }


def fit_models(
    history: PurchaseHistory,
    *,
    holdout: Holdout | None = None,
    penalizer: float = DEFAULT_PENALIZER,
    fallback_mean: float | None = None,
) -> ModelReport:
    """Fit BG/NBD and Gamma-Gamma on one workspace's history and assess the BG/NBD fit."""
    h = history
    bgnbd = fit_bgnbd(h.x, h.t_x, h.T, penalizer=penalizer)
    gg = fit_gamma_gamma(h.x, h.monetary, penalizer=penalizer, fallback_mean=fallback_mean)
    quality = fit_quality(bgnbd, h.x, h.t_x, h.T, holdout=holdout)
    return ModelReport(bgnbd=bgnbd, gamma_gamma=gg, quality=quality)


# ── Simulators (used by tests and the benchmark) ──────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class SimulatedCustomers:
    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    holdout: FloatArray
    """Purchases in the ``holdout_days`` after T (zeros when none were asked for)."""
    alive: npt.NDArray[np.bool_]
    """Whether the customer had not yet left at T (what P(alive) estimates)."""


def simulate_bgnbd(
    r: float,
    alpha: float,
    a: float,
    b: float,
    n: int,
    T: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    holdout_days: float = 0.0,
) -> SimulatedCustomers:
    """Customers drawn from the BG/NBD model, each observed T days after their first order.

    Given N Poisson arrivals over a window, their times are uniform: the arrivals before T are
    Binomial(N, T / window), and the k-th of n uniform times on [0, T] is T · Beta(k, n-k+1).
    A customer leaves after their D-th repeat purchase, D ~ Geometric(p).
    """
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = np.clip(rng.beta(a, b, n), 1e-12, 1.0)
    age = np.broadcast_to(np.asarray(T, dtype=np.float64), (n,)).copy()
    window = age + holdout_days
    arrivals = rng.poisson(lam * window)
    allowed = rng.geometric(p)
    made = np.minimum(arrivals, allowed)
    share = np.divide(age, window, out=np.zeros_like(age), where=window > 0)
    early = rng.binomial(arrivals, share)
    x = np.minimum(early, made)
    last = rng.beta(np.maximum(x, 1), np.maximum(early - x + 1, 1))
    t_x = np.where(x > 0, age * last, 0.0)
    return SimulatedCustomers(
        x=x.astype(np.float64),
        t_x=t_x,
        T=age,
        holdout=(made - x).astype(np.float64),
        alive=x < allowed,
    )


def simulate_gamma_gamma(
    p: float, q: float, v: float, frequency: npt.ArrayLike, rng: np.random.Generator
) -> FloatArray:
    """Mean order value of each customer's ``frequency`` repeat orders (0 where there are none).

    nu ~ Gamma(q, rate v) per customer; the sum of x orders of Gamma(p, rate nu) is Gamma(p x, nu).
    """
    x = np.asarray(frequency, dtype=np.float64)
    nu = rng.gamma(q, 1.0 / v, x.size)
    total = rng.gamma(np.maximum(p * x, 1e-12), 1.0 / nu)
    return np.where(x > 0, total / np.maximum(x, 1.0), 0.0)


# ── Shared helpers ────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class _Optimum:
    theta: FloatArray
    iterations: int
    converged: bool
    covariance: FloatArray | None

    def intervals(self, names: tuple[str, ...]) -> dict[str, tuple[float, float]] | None:
        if self.covariance is None:
            return None
        half = _Z95 * np.sqrt(np.diag(self.covariance))
        with np.errstate(over="ignore"):
            low, high = np.exp(self.theta - half), np.exp(self.theta + half)
        return {
            name: (lo, hi) for name, lo, hi in zip(names, low.tolist(), high.tolist(), strict=True)
        }

    def reasons(self, names: tuple[str, ...]) -> list[str]:
        out: list[str] = []
        if not self.converged:
            out.append("the optimiser did not converge")
        edge = [
            name
            for name, t in zip(names, self.theta.tolist(), strict=True)
            if t <= _LOG_LOWER + 1e-6 or t >= _LOG_UPPER - 1e-6
        ]
        if edge:
            out.append(f"{', '.join(edge)} at the edge of the allowed range")
        if self.covariance is None:
            out.append("the data do not determine the parameters (flat likelihood)")
            return out
        spread = 2 * _Z95 * np.sqrt(np.diag(self.covariance))  # log of high / low
        loose = [
            name
            for name, s in zip(names, spread.tolist(), strict=True)
            if s > math.log(MAX_INTERVAL_RATIO)
        ]
        if loose and not edge:
            out.append(
                f"{', '.join(loose)} poorly determined (95 % interval wider than a factor of 20)"
            )
        return out


def _maximise(
    loglik: Callable[[FloatArray], tuple[float, FloatArray]],
    start: FloatArray,
    *,
    n: int,
    prior_log: FloatArray,
    penalizer: float,
) -> _Optimum:
    """Maximise a log likelihood over log parameters (with the optional Gaussian prior)."""

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        ll, grad = loglik(theta)
        diff = theta - prior_log
        value = -(ll - penalizer * float(diff @ diff)) / n
        slope = -(grad - 2 * penalizer * diff) / n
        if not math.isfinite(value) or not np.all(np.isfinite(slope)):
            return math.inf, np.zeros_like(theta)
        return value, slope

    bounds = [(_LOG_LOWER, _LOG_UPPER)] * start.size
    options = {"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-7}
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
    theta = np.asarray(result.x, dtype=np.float64)
    return _Optimum(
        theta=theta,
        iterations=int(result.nit),
        converged=bool(result.success),
        covariance=_covariance(objective, theta, n),
    )


def _covariance(
    objective: Callable[[FloatArray], tuple[float, FloatArray]], theta: FloatArray, n: int
) -> FloatArray | None:
    """Inverse observed information on the log scale, by central differences of the gradient;
    None when the Hessian is not positive definite (a ridge or a boundary)."""
    k = theta.size
    step = 1e-4
    hessian = np.empty((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = step
        hessian[:, j] = (objective(theta + e)[1] - objective(theta - e)[1]) / (2 * step)
    hessian = (hessian + hessian.T) / 2 * n
    if not np.all(np.isfinite(hessian)):
        return None
    try:
        np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        return None
    return np.asarray(np.linalg.inv(hessian), dtype=np.float64)


def _history(
    x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    xa = np.atleast_1d(np.asarray(x, dtype=np.float64))
    ta = np.atleast_1d(np.asarray(t_x, dtype=np.float64))
    Ta = np.atleast_1d(np.asarray(T, dtype=np.float64))
    if not xa.shape == ta.shape == Ta.shape or xa.ndim != 1:
        raise PredictionInputError(
            f"x, t_x and T must be one-dimensional and of one length, got shapes "
            f"{xa.shape}, {ta.shape}, {Ta.shape}"
        )
    for name, arr in (("x", xa), ("t_x", ta), ("T", Ta)):
        if not np.all(np.isfinite(arr)):
            raise PredictionInputError(f"{name} must be finite")
        if np.any(arr < 0):
            raise PredictionInputError(f"{name} must be ≥ 0")
    if np.any(xa != np.floor(xa)):
        raise PredictionInputError("x must hold whole numbers of repeat purchases")
    if np.any(ta > Ta * (1 + 1e-9) + 1e-9):
        raise PredictionInputError("t_x must be ≤ T: the last purchase cannot follow the as-of")
    return xa, np.where(xa > 0, np.minimum(ta, Ta), 0.0), Ta


def _monetary(frequency: npt.ArrayLike, monetary: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """The repeat buyers with a positive mean order value (refund-only customers drop out)."""
    x = np.atleast_1d(np.asarray(frequency, dtype=np.float64))
    m = np.atleast_1d(np.asarray(monetary, dtype=np.float64))
    if x.shape != m.shape or x.ndim != 1:
        raise PredictionInputError(
            f"frequency and monetary must be one-dimensional and of one length, got shapes "
            f"{x.shape}, {m.shape}"
        )
    if not np.all(np.isfinite(x)) or np.any(x < 0) or np.any(x != np.floor(x)):
        raise PredictionInputError("frequency must hold whole numbers ≥ 0")
    if not np.all(np.isfinite(m)):
        raise PredictionInputError("monetary must be finite")
    keep = (x > 0) & (m > 0)
    return x[keep], m[keep]


def _check_penalizer(penalizer: float) -> None:
    if not (math.isfinite(penalizer) and penalizer >= 0):
        raise PredictionInputError(f"penalizer must be a finite number ≥ 0, got {penalizer}")


def _params(fit: BgNbdFit | BgNbdParams) -> BgNbdParams:
    return fit.params if isinstance(fit, BgNbdFit) else fit


def _num(value: float | None) -> float | None:
    """JSON has no NaN or infinity: an undefined figure is null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
