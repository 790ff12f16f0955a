"""BG/NBD, Gamma-Gamma and CLV, checked three independent ways.

1. Against the models' definitions by numerical integration (scipy.integrate over the gamma and
   beta mixing distributions), for a handful of customers: log likelihood, P(alive), the
   conditional expectation, and the Gamma-Gamma density and posterior mean.
2. Against the published CDNOW results: the 2,357-customer summary of Fader & Hardie's CDNOW
   sample (embedded at the end of this file) must give FHL 2005's estimates, and the published
   spreadsheet's expectations.
3. Against simulation from the model: parameter recovery, interval coverage, and predicted
   against simulated purchases, P(alive) and repeat histograms.

Tolerances are stated where they are used. Simulation tests use fixed seeds, so they are
deterministic; their bounds are 4 standard errors (a 4-sigma miss has probability 6e-5), where
the standard error comes from the simulated data themselves or from the fit's observed
information, whose calibration the coverage test checks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest
from scipy import integrate, stats  # type: ignore[import-untyped]

from services.journey.domain.predictions import (
    BGNBD_PRIOR,
    DEFAULT_PENALIZER,
    BgNbdFit,
    BgNbdParams,
    GammaGammaFit,
    Holdout,
    PredictionInputError,
    PurchaseHistory,
    SimulatedCustomers,
    beta_quadrature,
    bgnbd_log_likelihood,
    clv,
    expected_order_value,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    fit_models,
    fit_quality,
    gamma_gamma_log_likelihood,
    predict,
    probability_alive,
    purchase_history,
    repeat_probabilities,
    simulate_bgnbd,
    simulate_gamma_gamma,
)

Array = npt.NDArray[np.float64]

PARAMS = BgNbdParams(r=0.8, alpha=25.0, a=0.6, b=3.2)
CUSTOMERS = [  # x, t_x, T (days)
    (0, 0.0, 30.0),
    (1, 12.5, 40.0),
    (3, 100.0, 365.0),
    (12, 200.0, 210.0),
    (2, 5.0, 400.0),
]
FOUR_SIGMA = 4.0


# ── 1. Numerical integration over the mixing distributions ───────────────────────────────────


def _gamma_pdf(value: float, shape: float, rate: float) -> float:
    if value <= 0:
        return 0.0
    log = shape * math.log(rate) + (shape - 1) * math.log(value) - rate * value
    return math.exp(log - math.lgamma(shape))


def _beta_pdf(q: float, a: float, b: float) -> float:
    if not 0 < q < 1:
        return 0.0
    log = (a - 1) * math.log(q) + (b - 1) * math.log1p(-q)
    return math.exp(log + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))


def _over_lambda(
    p: BgNbdParams, x: int, t: float, extra: Callable[[float], float] = lambda lam: 1.0
) -> float:
    """∫ λ^x e^{-λ t} extra(λ) Gamma(λ; r, alpha) dλ, split at the peak of λ^x e^{-λ t}."""

    def f(lam: float) -> float:
        return lam**x * math.exp(-lam * t) * extra(lam) * _gamma_pdf(lam, p.r, p.alpha)

    shape, rate = p.r + x, p.alpha + t
    peak = shape / rate
    upper = peak + 50 * math.sqrt(shape) / rate
    low, _ = integrate.quad(f, 0, peak, limit=200, epsabs=0, epsrel=1e-11)
    high, _ = integrate.quad(f, peak, upper, limit=200, epsabs=0, epsrel=1e-11)
    return float(low + high)


def _over_q(p: BgNbdParams, f: Callable[[float], float]) -> float:
    """∫ f(q) Beta(q; a, b) dq."""
    value, _ = integrate.quad(
        lambda q: f(q) * _beta_pdf(q, p.a, p.b), 0, 1, limit=200, epsabs=0, epsrel=1e-11
    )
    return float(value)


def _likelihood_parts(p: BgNbdParams, x: int, t_x: float, T: float) -> tuple[float, float]:
    """The two terms of the individual likelihood, integrated: (still active, left after t_x)."""
    active = _over_lambda(p, x, T) * _over_q(p, lambda q: (1 - q) ** x)
    gone = 0.0
    if x > 0:
        gone = _over_lambda(p, x, t_x) * _over_q(p, lambda q: q * (1 - q) ** (x - 1))
    return active, gone


@pytest.mark.parametrize(("x", "t_x", "T"), CUSTOMERS)
def test_log_likelihood_matches_numerical_integration(x: int, t_x: float, T: float) -> None:
    active, gone = _likelihood_parts(PARAMS, x, t_x, T)
    closed = bgnbd_log_likelihood(PARAMS, [x], [t_x], [T])[0]
    assert closed == pytest.approx(math.log(active + gone), rel=1e-9)


@pytest.mark.parametrize(("x", "t_x", "T"), CUSTOMERS)
def test_probability_alive_is_the_posterior_share_of_active(x: int, t_x: float, T: float) -> None:
    active, gone = _likelihood_parts(PARAMS, x, t_x, T)
    assert probability_alive(PARAMS, [x], [t_x], [T])[0] == pytest.approx(
        active / (active + gone), rel=1e-8
    )


@pytest.mark.parametrize(("x", "t_x", "T"), [CUSTOMERS[1], CUSTOMERS[3], CUSTOMERS[4]])
@pytest.mark.parametrize("t", [30.0, 365.0])
def test_conditional_expectation_matches_numerical_integration(
    x: int, t_x: float, T: float, t: float
) -> None:
    """E[purchases in (T, T+t]] = E[(1 - e^{-λ q t}) / q ; active] / L: while active, a customer
    of rate λ and dropout probability q expects (1 - e^{-λ q t}) / q purchases in t days."""
    p = PARAMS

    def given_q(q: float) -> float:
        future = _over_lambda(p, x, T, lambda lam: -math.expm1(-lam * q * t) / q)
        return (1 - q) ** x * future

    active, gone = _likelihood_parts(p, x, t_x, T)
    expected = expected_purchases(p, t, [x], [t_x], [T])[0]
    assert expected == pytest.approx(_over_q(p, given_q) / (active + gone), rel=1e-8)


@pytest.mark.parametrize(
    "params",
    [
        BgNbdParams(r=3.0, alpha=30.0, a=3.0, b=3000.0),
        BgNbdParams(r=3.0, alpha=30.0, a=30.0, b=300_000.0),
        BgNbdParams(r=0.3, alpha=30.0, a=300.0, b=0.05),
    ],
)
def test_extreme_parameters_still_give_the_expectation(params: BgNbdParams) -> None:
    """Where ₂F₁'s series overflows (a or b in the thousands), the expectation comes from Gauss
    quadrature over the dropout probability; checked against adaptive quadrature within 1e-4."""
    x, T, t = 3.0, 10.0, 3000.0
    k = t / (params.alpha + T)
    m = params.r + x
    posterior = stats.beta(params.a, params.b + x)

    def g(q: float) -> float:
        return -math.expm1(-m * math.log1p(q * k)) / q

    lo, hi = posterior.ppf(1e-13), posterior.isf(1e-13)
    reference, _ = integrate.quad(
        lambda q: g(q) * posterior.pdf(q), lo, hi, points=[posterior.mean()], limit=400
    )
    alive = probability_alive(params, [x], [0.0], [T])[0]
    got = expected_purchases(params, t, [x], [0.0], [T])[0]
    assert got == pytest.approx(alive * reference, rel=1e-4)


@pytest.mark.parametrize(("a", "b"), [(0.6, 3.2), (0.05, 40.0), (300.0, 2.0), (5e4, 7e4)])
def test_beta_quadrature_integrates_polynomials_exactly(a: float, b: float) -> None:
    nodes, weights = beta_quadrature(a, b, 24)
    assert weights.sum() == pytest.approx(1.0, rel=1e-12)
    for k in (1, 2, 7, 40):  # exact up to degree 2·24 - 1
        exact = math.exp(
            math.lgamma(a + k) - math.lgamma(a) + math.lgamma(a + b) - math.lgamma(a + b + k)
        )
        assert float(weights @ nodes**k) == pytest.approx(exact, rel=1e-9)


# ── 2. The published CDNOW results ────────────────────────────────────────────────────────────


def _cdnow() -> tuple[Array, Array, Array]:
    """x, t_x, T (weeks) of the 2,357 CDNOW sample customers, from ``CDNOW_SUMMARY``."""
    x: list[float] = []
    t_x: list[float] = []
    T: list[float] = []
    blocks: list[tuple[str, str, list[str]]] = []
    for line in CDNOW_SUMMARY.strip().splitlines():
        if ":" in line:
            head, body = line.split(":")
            first_id, age = head.split()
            blocks.append((first_id, age, body.split()))
        else:
            blocks[-1][2].extend(line.split())
    for first_id, age, tokens in blocks:
        assert int(first_id) == len(x) + 1, f"block {first_id} starts at customer {len(x) + 1}"
        for token in tokens:
            if "*" in token:
                count = int(token.split("*")[1])
                x += [0.0] * count
                t_x += [0.0] * count
            elif "/" in token:
                repeats, last = token.split("/")
                x.append(float(repeats))
                t_x.append(float(last))
            else:
                x.append(0.0)
                t_x.append(0.0)
            T += [float(age)] * (len(x) - len(T))
    return np.array(x), np.array(t_x), np.array(T)


def test_cdnow_summary_is_complete() -> None:
    x, t_x, T = _cdnow()
    assert x.size == 2357
    assert x.sum() == 2457  # repeat transactions in the 39-week calibration period
    assert np.count_nonzero(x) == 946
    assert np.all(t_x <= T)


def test_cdnow_reproduces_the_published_estimates() -> None:
    """FHL 2005, section 4: r = 0.243, alpha = 4.414 (weeks), a = 0.793, b = 2.426, LL =
    -9582.4. Published to 3 decimals (LL to 1), so the bound is half a unit in the last place
    plus 1e-4 for the optimiser's stopping rule."""
    x, t_x, T = _cdnow()
    fit = fit_bgnbd(x, t_x, T, penalizer=0.0)
    assert fit.converged
    assert fit.info.method == "mle"
    assert fit.r == pytest.approx(0.243, abs=6e-4)
    assert fit.alpha == pytest.approx(4.414, abs=6e-4)
    assert fit.a == pytest.approx(0.793, abs=6e-4)
    assert fit.b == pytest.approx(2.426, abs=6e-4)
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.051)
    assert fit.reliable, fit.info.reasons


def test_cdnow_matches_the_published_spreadsheet() -> None:
    """Fader & Hardie's BG/NBD spreadsheet: E[X(t)] for a new customer at six horizons (4
    decimals, from the unrounded estimates) and E[Y(39) | x=2, t_x=30.43, T=38.86] = 1.226 (3
    decimals, from the published rounded estimates)."""
    x, t_x, T = _cdnow()
    fit = fit_bgnbd(x, t_x, T, penalizer=0.0)
    times = np.array([0.1429, 1.0, 3.0, 31.8571, 32.0, 78.0])
    published = np.array([0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576])
    new = expected_purchases(fit, times, np.zeros(6), np.zeros(6), np.zeros(6))
    np.testing.assert_allclose(new, published, atol=5e-4)
    rounded = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    assert expected_purchases(rounded, 39.0, [2], [30.43], [38.86])[0] == pytest.approx(
        1.226, abs=5e-4
    )


def test_cdnow_histogram_fits_as_published() -> None:
    """FHL 2005 fig. 2: the model's repeat histogram tracks the observed one closely."""
    x, t_x, T = _cdnow()
    fit = fit_bgnbd(x, t_x, T, penalizer=0.0)
    quality = fit_quality(fit, x, t_x, T)
    observed = [row["observed"] for row in quality.histogram]
    expected = [row["expected"] for row in quality.histogram]
    assert observed[:3] == [1411, 439, 214]
    assert sum(expected) == pytest.approx(2357, abs=0.1)
    for o, e in zip(observed, expected, strict=True):
        assert abs(o - e) <= FOUR_SIGMA * math.sqrt(e)


# ── 3. Simulation from the model ──────────────────────────────────────────────────────────────

SHOPS = {
    "cdnow-like": BgNbdParams(r=0.243, alpha=30.9, a=0.793, b=2.426),
    "frequent": BgNbdParams(r=1.5, alpha=40.0, a=0.4, b=6.0),
    "churny": BgNbdParams(r=0.6, alpha=90.0, a=2.0, b=3.0),
}


def _simulate(params: BgNbdParams, n: int, seed: int, holdout: float = 0.0) -> SimulatedCustomers:
    rng = np.random.default_rng(seed)
    ages = rng.uniform(30.0, 540.0, n)  # first orders spread over 18 months
    return simulate_bgnbd(
        params.r, params.alpha, params.a, params.b, n, ages, rng, holdout_days=holdout
    )


def _log_standard_errors(fit: BgNbdFit | GammaGammaFit) -> dict[str, float]:
    intervals = fit.info.intervals
    assert intervals is not None
    return {k: math.log(hi / lo) / (2 * 1.959963984540054) for k, (lo, hi) in intervals.items()}


@pytest.mark.parametrize("shop", sorted(SHOPS))
def test_bgnbd_recovers_the_parameters_it_was_simulated_from(shop: str) -> None:
    """n = 10,000: each log parameter within 4 of its standard errors (typically 0.03-0.1 on
    the log scale here, i.e. a few percent to 40 %), and the fit judged reliable."""
    truth = SHOPS[shop]
    sim = _simulate(truth, 10_000, seed=11)
    fit = fit_bgnbd(sim.x, sim.t_x, sim.T, penalizer=0.0)
    assert fit.converged
    assert fit.reliable, fit.info.reasons
    se = _log_standard_errors(fit)
    for name in ("r", "alpha", "a", "b"):
        estimate, true = getattr(fit, name), getattr(truth, name)
        assert abs(math.log(estimate / true)) <= FOUR_SIGMA * se[name], (name, estimate, true)
        assert se[name] < 0.25


def test_intervals_cover_the_true_parameters_about_95_percent_of_the_time() -> None:
    """40 fits of 2,000 customers: each parameter's 95 % interval should miss about twice; at
    most 6 misses (P(≥ 7 misses | 5 %) ≈ 0.3 %) shows the standard errors are not too small."""
    truth = SHOPS["frequent"]
    misses = dict.fromkeys(("r", "alpha", "a", "b"), 0)
    for seed in range(40):
        sim = _simulate(truth, 2_000, seed=100 + seed)
        fit = fit_bgnbd(sim.x, sim.t_x, sim.T, penalizer=0.0)
        assert fit.info.intervals is not None
        for name, (lo, hi) in fit.info.intervals.items():
            misses[name] += not lo <= getattr(truth, name) <= hi
    assert max(misses.values()) <= 6, misses


@pytest.mark.parametrize("t", [30.0, 180.0])
def test_expected_purchases_of_a_new_customer_match_simulation(t: float) -> None:
    truth = SHOPS["churny"]
    rng = np.random.default_rng(5)
    n = 200_000
    sim = simulate_bgnbd(truth.r, truth.alpha, truth.a, truth.b, n, t, rng)
    predicted = expected_purchases(truth, t, [0], [0.0], [0.0])[0]
    standard_error = sim.x.std() / math.sqrt(n)
    assert abs(sim.x.mean() - predicted) <= FOUR_SIGMA * standard_error


def test_conditional_expectation_matches_simulated_holdout_purchases() -> None:
    """Customers simulated for T + 90 days: in every bucket of calibration repeats, the true
    model's expected holdout purchases match the simulated ones within 4 standard errors."""
    truth = SHOPS["cdnow-like"]
    sim = _simulate(truth, 100_000, seed=3, holdout=90.0)
    predicted = expected_purchases(truth, 90.0, sim.x, sim.t_x, sim.T)
    bucket = np.minimum(sim.x, 7)
    for k in range(8):
        sel = bucket == k
        gap = sim.holdout[sel] - predicted[sel]
        assert abs(gap.sum()) <= FOUR_SIGMA * gap.std() * math.sqrt(sel.sum()), k


def test_probability_alive_matches_the_simulated_share_still_active() -> None:
    truth = SHOPS["churny"]
    sim = _simulate(truth, 100_000, seed=4)
    alive = probability_alive(truth, sim.x, sim.t_x, sim.T)
    deciles = np.minimum((alive * 10).astype(int), 9)
    for d in np.unique(deciles):
        sel = deciles == d
        if sel.sum() < 200:
            continue
        gap = sim.alive[sel].astype(float) - alive[sel]
        assert abs(gap.sum()) <= FOUR_SIGMA * gap.std() * math.sqrt(sel.sum()), d


def test_repeat_histogram_matches_simulation() -> None:
    truth = SHOPS["frequent"]
    sim = _simulate(truth, 50_000, seed=8)
    probabilities = repeat_probabilities(truth, sim.T)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    expected = probabilities.sum(axis=0)
    observed = np.bincount(np.minimum(sim.x, 7).astype(int), minlength=8)
    for o, e in zip(observed, expected, strict=True):
        assert abs(o - e) <= FOUR_SIGMA * math.sqrt(e)


def test_calibration_report_on_simulated_holdout() -> None:
    truth = SHOPS["frequent"]
    sim = _simulate(truth, 20_000, seed=9, holdout=90.0)
    fit = fit_bgnbd(sim.x, sim.t_x, sim.T)
    quality = fit_quality(
        fit,
        sim.x,
        sim.t_x,
        sim.T,
        holdout=Holdout(sim.holdout, 90.0),
    )
    calibration = quality.calibration
    assert calibration is not None
    assert calibration["observed_purchases"] == sim.holdout.sum()
    # 20,000 customers buy ~15,000 times in 90 days: Poisson noise alone is ~1 %.
    assert abs(calibration["relative_error"]) < 0.05
    assert sum(row["customers"] for row in calibration["by_repeats"]) == 20_000
    assert quality.chi_square >= 0
    assert quality.degrees_of_freedom == 3


def test_the_forecast_uncertainty_flags_a_young_small_shop() -> None:
    """300 customers, all within their first 60 days: too early to see anyone leave. The fit
    answers, but its 90-day forecast is wide and it says so."""
    truth = SHOPS["cdnow-like"]
    rng = np.random.default_rng(21)
    sim = simulate_bgnbd(truth.r, truth.alpha, truth.a, truth.b, 300, rng.uniform(1, 60, 300), rng)
    fit = fit_bgnbd(sim.x, sim.t_x, sim.T)
    assert fit.forecast is not None and fit.forecast.relative_standard_error is not None
    assert fit.forecast.relative_standard_error > 0.10
    assert not fit.reliable
    assert any("forecast is uncertain" in reason for reason in fit.info.reasons)


def test_a_large_fit_has_a_tight_forecast() -> None:
    sim = _simulate(SHOPS["frequent"], 20_000, seed=12)
    fit = fit_bgnbd(sim.x, sim.t_x, sim.T)
    assert fit.forecast is not None and fit.forecast.relative_standard_error is not None
    assert fit.forecast.relative_standard_error < 0.03
    assert fit.forecast.purchases == pytest.approx(
        expected_purchases(fit, 90.0, sim.x, sim.t_x, sim.T).sum()
    )


def test_the_penalizer_pulls_toward_the_prior() -> None:
    sim = _simulate(SHOPS["frequent"], 300, seed=13)
    prior = np.log([BGNBD_PRIOR.r, BGNBD_PRIOR.alpha, BGNBD_PRIOR.a, BGNBD_PRIOR.b])
    distances = []
    for penalizer in (0.0, DEFAULT_PENALIZER, 30.0, 10_000.0):
        fit = fit_bgnbd(sim.x, sim.t_x, sim.T, penalizer=penalizer)
        distances.append(float(np.linalg.norm(np.log([fit.r, fit.alpha, fit.a, fit.b]) - prior)))
    assert distances == sorted(distances, reverse=True)
    assert distances[-1] < 0.05


# ── Gamma-Gamma ───────────────────────────────────────────────────────────────────────────────

GG = (6.25, 3.74, 15.44)  # p, q, v


@pytest.mark.parametrize(("x", "m"), [(1, 12.0), (2, 35.5), (7, 18.2), (25, 9.0)])
def test_gamma_gamma_density_matches_numerical_integration(x: int, m: float) -> None:
    """The mean of x orders of Gamma(p, nu) is Gamma(p x, nu x); nu ~ Gamma(q, v)."""
    p, q, v = GG
    value, _ = integrate.quad(
        lambda nu: (
            stats.gamma(a=p * x, scale=1 / (nu * x)).pdf(m) * stats.gamma(a=q, scale=1 / v).pdf(nu)
        ),
        0,
        np.inf,
        limit=400,
    )
    assert gamma_gamma_log_likelihood(p, q, v, [x], [m])[0] == pytest.approx(
        math.log(value), rel=1e-8
    )


@pytest.mark.parametrize(("x", "m"), [(1, 12.0), (4, 60.0), (30, 20.0)])
def test_expected_order_value_is_the_posterior_mean(x: int, m: float) -> None:
    """E[order value] = E[p / nu | x, m̄], nu's posterior by integration."""
    p, q, v = GG
    fit = replace(fit_gamma_gamma(*_gg_sample(p, q, v, 5_000, seed=1)), p=p, q=q, v=v)

    def weight(nu: float) -> float:
        return float(
            stats.gamma(a=p * x, scale=1 / (nu * x)).pdf(m) * stats.gamma(a=q, scale=1 / v).pdf(nu)
        )

    norm, _ = integrate.quad(weight, 0, np.inf, limit=400)
    mean, _ = integrate.quad(lambda nu: p / nu * weight(nu), 0, np.inf, limit=400)
    assert expected_order_value(fit, [x], [m])[0] == pytest.approx(mean / norm, rel=1e-7)
    assert expected_order_value(fit, [0], [0.0])[0] == pytest.approx(p * v / (q - 1))


def _gg_sample(p: float, q: float, v: float, n: int, seed: int) -> tuple[Array, Array]:
    rng = np.random.default_rng(seed)
    frequency = 1.0 + rng.poisson(2.0, n).astype(np.float64)
    return frequency, simulate_gamma_gamma(p, q, v, frequency, rng)


def test_gamma_gamma_recovers_the_parameters_it_was_simulated_from() -> None:
    """n = 10,000 repeat buyers: each log parameter within 4 of its standard errors."""
    frequency, monetary = _gg_sample(*GG, 10_000, seed=2)
    fit = fit_gamma_gamma(frequency, monetary, penalizer=0.0)
    assert fit.converged
    assert fit.reliable, fit.info.reasons
    se = _log_standard_errors(fit)
    for name, true in zip(("p", "q", "v"), GG, strict=True):
        assert abs(math.log(getattr(fit, name) / true)) <= FOUR_SIGMA * se[name], name
    assert abs(fit.correlation or 0.0) < 0.05


def test_gamma_gamma_skips_customers_without_repeat_purchases_or_value() -> None:
    frequency, monetary = _gg_sample(*GG, 2_000, seed=3)
    padded_f = np.concatenate([frequency, [0, 0, 3]])
    padded_m = np.concatenate([monetary, [0.0, 0.0, -5.0]])  # a refund-only customer
    a = fit_gamma_gamma(frequency, monetary)
    b = fit_gamma_gamma(padded_f, padded_m)
    assert (a.p, a.q, a.v, a.n) == (b.p, b.q, b.v, b.n)


def test_order_value_that_rises_with_frequency_is_flagged() -> None:
    rng = np.random.default_rng(4)
    frequency = 1.0 + rng.poisson(3.0, 500)
    monetary = 10.0 * frequency * rng.gamma(20.0, 1 / 20.0, 500)
    fit = fit_gamma_gamma(frequency, monetary)
    assert fit.correlation is not None and fit.correlation > 0.3
    assert not fit.reliable
    assert any("correlates with frequency" in reason for reason in fit.info.reasons)


def test_without_repeat_purchases_the_order_value_comes_from_the_fallback_mean() -> None:
    fit = fit_gamma_gamma([0, 0, 0], [0.0, 0.0, 0.0], fallback_mean=42.0)
    assert fit.info.method == "prior"
    assert not fit.reliable
    assert expected_order_value(fit, [0, 0], [0.0, 0.0]).tolist() == pytest.approx([42.0, 42.0])
    unknown = fit_gamma_gamma([0], [0.0])
    assert math.isnan(expected_order_value(unknown, [0], [0.0])[0])
    assert unknown.to_json()["population_mean_order_value"] is None


def test_heavy_tailed_order_values_give_new_customers_the_sample_mean() -> None:
    """q ≤ 1 has no population mean; the posterior mean of a repeat buyer still exists."""
    fit = replace(fit_gamma_gamma(*_gg_sample(*GG, 1_000, seed=5)), q=0.8)
    assert fit.population_mean == fit.sample_mean
    values = expected_order_value(fit, [0, 3], [0.0, 50.0])
    assert values[0] == fit.sample_mean
    assert values[1] == pytest.approx(fit.p * (fit.v + 3 * 50.0) / (3 * fit.p + 0.8 - 1))


def test_unknown_order_values_reach_the_customer_fields_as_none() -> None:
    history = PurchaseHistory(np.zeros(3), np.zeros(3), np.array([5.0, 9.0, 30.0]), np.zeros(3))
    report = fit_models(history)  # no repeat buyers and no fallback mean
    rows = predict(report.bgnbd, report.gamma_gamma, history).fields()
    assert rows[0]["expected_order_value"] is None and rows[0]["clv"] is None
    assert rows[0]["p_alive"] == 1.0


# ── CLV ───────────────────────────────────────────────────────────────────────────────────────


def _clv_fixture() -> tuple[BgNbdFit, GammaGammaFit, Array, Array, Array, Array]:
    sim = _simulate(SHOPS["frequent"], 3_000, seed=14)
    bg = fit_bgnbd(sim.x, sim.t_x, sim.T)
    rng = np.random.default_rng(15)
    monetary = simulate_gamma_gamma(*GG, sim.x, rng)
    gg = fit_gamma_gamma(sim.x, monetary)
    return bg, gg, sim.x, sim.t_x, sim.T, monetary


def test_undiscounted_clv_is_expected_purchases_times_order_value() -> None:
    bg, gg, x, t_x, T, monetary = _clv_fixture()
    value = expected_order_value(gg, x, monetary)
    purchases = expected_purchases(bg, 365.0, x, t_x, T)
    got = clv(bg, gg, x, t_x, T, monetary, 365.0, monthly_discount_rate=0.0)
    np.testing.assert_allclose(got, purchases * value, rtol=1e-10)


def test_clv_discounts_each_month_at_its_end() -> None:
    bg, gg, x, t_x, T, monetary = _clv_fixture()
    d = 0.02
    value = expected_order_value(gg, x, monetary)
    e30 = expected_purchases(bg, 30.0, x, t_x, T)
    e45 = expected_purchases(bg, 45.0, x, t_x, T)
    one_month = clv(bg, gg, x, t_x, T, monetary, 30.0, d)
    np.testing.assert_allclose(one_month, value * e30 / (1 + d), rtol=1e-10)
    month_and_a_half = clv(bg, gg, x, t_x, T, monetary, 45.0, d)
    manual = value * (e30 / (1 + d) + (e45 - e30) / (1 + d) ** 1.5)
    np.testing.assert_allclose(month_and_a_half, manual, rtol=1e-10)


def test_clv_grows_with_the_horizon_and_shrinks_with_the_discount_rate() -> None:
    bg, gg, x, t_x, T, monetary = _clv_fixture()
    short = clv(bg, gg, x, t_x, T, monetary, 90.0)
    long = clv(bg, gg, x, t_x, T, monetary, 730.0)
    steep = clv(bg, gg, x, t_x, T, monetary, 730.0, monthly_discount_rate=0.05)
    assert np.all(long >= short) and np.all(steep <= long)
    assert np.all(steep >= 0)
    assert np.all(clv(bg, gg, x, t_x, T, monetary, 0.0) == 0)
    with pytest.raises(PredictionInputError, match="horizon_days"):
        clv(bg, gg, x, t_x, T, monetary, -1.0)
    with pytest.raises(PredictionInputError, match="monthly_discount_rate"):
        clv(bg, gg, x, t_x, T, monetary, 30.0, -1.0)


# ── Little data, bad input, the report ────────────────────────────────────────────────────────


def test_no_customers_returns_the_prior_and_says_so() -> None:
    fit = fit_bgnbd([], [], [])
    assert (fit.r, fit.alpha, fit.a, fit.b) == (
        BGNBD_PRIOR.r,
        BGNBD_PRIOR.alpha,
        BGNBD_PRIOR.a,
        BGNBD_PRIOR.b,
    )
    assert fit.info.method == "prior"
    assert not fit.reliable
    report = fit_models(PurchaseHistory(*(np.zeros(0),) * 4))
    body = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert body["reliable"] is False
    assert body["bgnbd"]["n_customers"] == 0


def test_a_handful_of_one_time_buyers_gets_finite_predictions_and_a_warning() -> None:
    x, t_x, T = np.zeros(5), np.zeros(5), np.array([1.0, 3.0, 10.0, 20.0, 40.0])
    fit = fit_bgnbd(x, t_x, T)
    assert fit.info.method == "map"
    assert not fit.reliable
    assert any(reason.startswith("only 5 customers, 0 with repeat") for reason in fit.info.reasons)
    values = [fit.r, fit.alpha, fit.a, fit.b, fit.log_likelihood]
    assert all(math.isfinite(v) for v in values)
    e = expected_purchases(fit, 90.0, x, t_x, T)
    assert np.all(np.isfinite(e)) and np.all(e >= 0)
    assert np.all(probability_alive(fit, x, t_x, T) == 1.0)


def test_customers_who_just_ordered_do_not_break_the_fit() -> None:
    n = 50
    fit = fit_bgnbd(np.zeros(n), np.zeros(n), np.zeros(n))
    assert all(math.isfinite(v) for v in (fit.r, fit.alpha, fit.a, fit.b))
    assert fit.log_likelihood == 0.0  # nobody could have bought again yet
    assert not fit.reliable


def test_small_data_sits_between_the_prior_and_the_data() -> None:
    """30 frequent buyers: the default fit moves from the prior toward what they show, without
    the wild values plain maximum likelihood can take on so few customers."""
    sim = _simulate(SHOPS["frequent"], 30, seed=16)
    fit = fit_bgnbd(sim.x, sim.t_x, sim.T)
    assert not fit.reliable
    observed_rate = sim.x.sum() / sim.T.sum()
    prior_rate = BGNBD_PRIOR.r / BGNBD_PRIOR.alpha
    assert prior_rate < fit.r / fit.alpha < 2 * observed_rate
    assert all(0.01 < getattr(fit, k) < 1000 for k in ("r", "a", "b"))


@pytest.mark.parametrize(
    ("x", "t_x", "T", "message"),
    [
        ([1], [50.0], [40.0], "t_x must be ≤ T"),
        ([-1], [0.0], [40.0], "x must be ≥ 0"),
        ([1.5], [1.0], [40.0], "whole numbers"),
        ([1], [float("nan")], [40.0], "t_x must be finite"),
        ([1, 2], [1.0], [40.0], "one length"),
    ],
)
def test_bad_histories_are_refused_with_the_field_named(
    x: list[float], t_x: list[float], T: list[float], message: str
) -> None:
    with pytest.raises(PredictionInputError, match=message):
        fit_bgnbd(x, t_x, T)


def test_bad_options_are_refused() -> None:
    with pytest.raises(PredictionInputError, match="penalizer"):
        fit_bgnbd([1], [1.0], [2.0], penalizer=-1.0)
    with pytest.raises(PredictionInputError, match="t must be"):
        expected_purchases(PARAMS, -5.0, [1], [1.0], [2.0])
    fit = fit_bgnbd([1, 0], [1.0, 0.0], [2.0, 3.0])
    with pytest.raises(PredictionInputError, match="holdout purchases"):
        fit_quality(fit, [1, 0], [1.0, 0.0], [2.0, 3.0], holdout=Holdout(np.zeros(3), 30.0))


def test_purchase_history_from_profile_totals() -> None:
    history = purchase_history(
        first_order_days_ago=[100.0, 30.0, 5.0],
        last_order_days_ago=[10.0, 30.0, 1.0],
        order_count=[4, 1, 2],
        revenue=[200.0, 35.0, 90.0],
    )
    assert history.x.tolist() == [3, 0, 1]
    assert history.t_x.tolist() == [90.0, 0.0, 4.0]
    assert history.T.tolist() == [100.0, 30.0, 5.0]
    assert history.monetary.tolist() == [50.0, 0.0, 45.0]  # mean of all orders
    exact = purchase_history(
        first_order_days_ago=[100.0],
        last_order_days_ago=[10.0],
        order_count=[4],
        revenue=[200.0],
        first_order_value=[80.0],
    )
    assert exact.monetary.tolist() == [40.0]  # (200 - 80) / 3 repeat orders


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"last_order_days_ago": [-1.0]}, "after the as-of"),
        ({"order_count": [0]}, "order_count"),
        ({"first_order_days_ago": [1.0], "last_order_days_ago": [2.0]}, "first_order_days_ago"),
    ],
)
def test_purchase_history_refuses_impossible_profiles(
    kwargs: dict[str, list[float]], message: str
) -> None:
    base: dict[str, list[float]] = {
        "first_order_days_ago": [10.0],
        "last_order_days_ago": [2.0],
        "order_count": [2],
        "revenue": [20.0],
    }
    with pytest.raises(PredictionInputError, match=message):
        purchase_history(**(base | kwargs))


def test_the_report_that_ciclo_predict_fit_prints() -> None:
    sim = _simulate(SHOPS["frequent"], 5_000, seed=17, holdout=60.0)
    rng = np.random.default_rng(18)
    monetary = simulate_gamma_gamma(*GG, sim.x, rng)
    history = PurchaseHistory(sim.x, sim.t_x, sim.T, monetary)
    report = fit_models(history, holdout=Holdout(sim.holdout, 60.0))
    body = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert set(body) == {"time_unit", "reliable", "bgnbd", "gamma_gamma", "quality"}
    assert body["reliable"] is True
    bg = body["bgnbd"]
    assert set(bg["params"]) == {"r", "alpha", "a", "b"}
    assert bg["n_customers"] == 5_000 and bg["method"] == "map"
    assert bg["aic"] == pytest.approx(8 - 2 * bg["log_likelihood"])
    assert set(bg["intervals_95"]) == {"r", "alpha", "a", "b"}
    assert bg["forecast"]["days"] == 90.0
    assert set(body["gamma_gamma"]["params"]) == {"p", "q", "v"}
    assert len(body["quality"]["repeat_histogram"]) == 8
    assert body["quality"]["calibration"]["holdout_days"] == 60.0

    predictions = predict(report.bgnbd, report.gamma_gamma, history)
    assert predictions.purchases_90d.shape == (5_000,)
    assert np.all(predictions.purchases_90d >= predictions.purchases_30d)
    assert np.all((predictions.probability_alive > 0) & (predictions.probability_alive <= 1))
    assert np.all(predictions.clv >= 0)
    rows = predictions.fields()
    assert len(rows) == 5_000
    assert set(rows[0]) == {
        "p_alive",
        "expected_orders_30d",
        "expected_orders_90d",
        "expected_order_value",
        "clv",
    }
    assert rows[7]["p_alive"] == round(float(predictions.probability_alive[7]), 4)
    assert rows[7]["clv"] == round(float(predictions.clv[7]), 2)


# Fader & Hardie's CDNOW sample, calibration period (39 weeks from 1 January 1997): 2,357
# customers, in order of their first purchase. One block per cohort: "<first customer> <T>:"
# then, per customer, "x/t_x" (repeat purchases / weeks from the first to the last) or "0" for
# none; "0*k" is k customers in a row without a repeat purchase. Times in weeks, as published.
CDNOW_SUMMARY = """
1 38.86: 2/30.43 1/1.71 0*3 7/29.43 1/5 0 2/35.71 0 5/24.43 0*5 10/34.14 1/4.86
19 38.71: 3/28.29 0 2/14.57 0*4 1/1.57 0 1/29.43 0 1/5.86 0*4 1/27.14 0*2 1/2.14 0*2
41 38.57: 0*4 1/24.43 12/34.43 0*2 1/1.57 0*6 2/33.14 1/4.29
58 38.43: 0 1/38.43 0 4/29.43 0 1/16.14 0*3 2/21.14 0*2 3/29.29 0*2 1/5.86 0 1/5.14 0*2
78 38.29: 0 3/16.86 0*2 1/7.43 0*3 7/26.43 0 10/35.43 0*2 1/33.29 6/37.43 0*5 2/31.86 4/37.57
    1/23.86
101 38.14: 5/36.14 0*3 1/24.14 1/6.14 0*2 1/0.29 0 1/0.29 0*2 1/24.14 0 1/5.29 0*4 1/3 0*3
    1/7.14
126 38.00: 0*3 4/7.57 3/26 0 1/24 2/28.43 0 1/23.43 2/7.43 0 2/16.86 1/2.14 1/15.71 0 5/6.86
    2/28.57 7/34.14 2/35.71 0 4/29.29 13/37.86 0 4/33 4/35.29 0*2 1/2.86 0 1/6.43 29/37.71
158 37.86: 0 3/24.71 0*2 1/2 0 10/37 0*2 13/28.14 0*2 1/37.43 0*5
176 37.71: 0*2 6/32.86 8/36.14 0*3 1/5 0 4/36.14 0 2/7.86 3/21.14 3/6 0*5 6/27 0 1/1.57 0*2
200 37.57: 2/14.29 0 2/7 2/31 0*2 1/18 0 1/0.29 0*2 7/17.86 0*3 2/29 0 4/24.29
218 37.43: 0 1/14.86 1/27.43 0*5 2/11.43 0 1/2 1/1.86 2/33 0 3/36.57 0*9 4/31.43
243 37.29: 1/8.29 5/5.14 0*2 2/24 0 1/1.86 2/20.43 0*2 1/32 0 1/0.43 0 5/16.14 0*2 1/5.86
    2/28.57 0 1/36.86 0*2 1/0.14 2/35.57 1/5.71
269 37.14: 0 1/2 0 1/3.86 0 3/24.29 1/34 13/30.71 0*5 3/19.43 3/32.86 1/3 0*2 3/31.57 0 5/36.43
    0 2/35.43 1/0.43 0 1/0.71 0*2
297 37.00: 1/15.29 1/1.14 0*3 3/34.43 1/36.29 1/17.86 0 1/3.43 0*3 4/4.29 0 2/34.57 0 3/27.71
    0*2 1/19.86 0 1/16.57 0 2/32
322 36.86: 0 1/8.86 3/2.71 25/27.29 0*4 5/22.57 0 2/14.14 0*3 5/36 0*2 1/22.43 0*4
344 36.71: 2/22.57 0*3 1/22.57 0 2/22.57 1/9.57 0*5 1/2.57 2/23.71 0*4 2/10.57 4/28.71 0
366 36.57: 0 1/11.71 3/17.43 0 1/14.14 0*5 1/5.71 1/10.43 1/22 0*3 11/36.43 0*2 4/31.14 0*2
388 36.43: 1/15.29 2/10.14 0*4 1/25.86 1/4.43 0 3/21.29 1/8 0*2 2/21.86 0 8/31.14 1/6.14 0
    2/15.86 1/31.86 0*2 1/21.71 0 2/3.43 0*2
415 36.29: 3/20.86 0*6 2/12.43 2/19.71 0*3 1/4.43 2/30 0*5 1/8.43 0*4 1/18.14 2/26.14 4/26.71
    0*2
444 36.14: 2/3.14 0 6/27.14 0 1/2.14 0 1/7.86 1/8.86 1/17 2/11 1/27.14 0 7/28.29 4/15.14 0*3
    7/25.43 0 1/8.57 1/17 0 2/23 1/31.57 0 4/30.43 0 1/2.43 0*2 2/33.71 0*2 4/36 0
479 36.00: 0 2/21.29 1/21.57 0 1/8.57 0 11/33.14 0 4/9 0*3 4/17.43 0 3/30.43 0 1/36 1/2.14 0*2
    6/26.57 3/5.57 0*3
504 35.86: 0 2/14.29 0 2/31 0 18/35.14 0 1/5.29 0 1/7.86 0*3 5/29.57 0 1/35.86 0 6/34.86 0
    2/11.14 0*2 2/22.71 0 1/29.86
529 35.71: 1/20.86 0*2 1/12.86 0 1/4.57 2/29.43 0*3 1/0.14 0 2/31.71 0 2/22.43 0*4 1/22 10/33.57
    0 1/6.71 3/3.43 3/23.71 0 2/32.43 0*2
558 35.57: 12/23.86 0 1/7.57 2/29 2/34.43 0*4 5/33.43 0*2 2/24.86 0 5/8.71 0 1/26.71 1/5.43 0
    1/7.29 0*6
584 35.43: 1/35.43 2/21.57 0*6 1/29 7/17.14 0*2 2/32.71 0*2 2/25.86 0 4/21.43 0*2 3/30 0 1/31.29
    0 2/13.57 2/22 0
611 35.29: 1/10.29 1/20.86 2/33.57 0*4 2/3.86 0*2 1/7.86 0 1/23.86 0 3/11.14 0*4 1/34.29 0*2
    1/2.71 0*3
637 35.14: 0*4 3/26.71 0 4/28.43 0*4 2/11.57 1/8.57 1/6.43 0*4 5/31.14 1/5.86 0*2 1/7.14 2/8.29
    1/33.71 0*4
666 35.00: 1/20.86 0 8/33.57 1/4.43 0 6/29.29 1/8.14 2/3.86 0 3/25.29 6/23 0 1/20.43 0 2/16.29
    5/25.14 0 1/28 0*6 1/18.86 1/6 0 13/34.43 0*2 1/3.57
697 34.86: 3/25.86 0 5/14.43 0 2/17.43 1/22.86 0*2 1/11.14 0 1/4 1/0.57 0*3 4/30.57 6/33.57
    1/1.71 2/9.71 0*2 2/12 0 7/34.86 0*5 3/20.29 0 5/17 0
730 34.71: 2/10.57 1/4.57 3/33.71 0*6 1/13.29 0 1/24.86 0*3 2/14.43 0 1/12.57 0*2 1/7.14
    10/29.29 0*4 3/16.43 3/17.14 0*2
760 34.57: 2/9.14 5/34.57 4/23.14 0*7 1/3.71 0*4 1/16 1/0.29 3/9.29 1/8.71 0*3
782 34.43: 0 6/32.86 2/25.57 0*8 1/2.14 6/30.86 0 1/5.86 0 2/8.14 0*2 7/33.71 0*3 2/20.71 0*4
    2/12.71
811 34.29: 0 1/7.29 13/33.86 7/5.57 0*2 3/32 0 1/22.14 0 1/4.71 1/19.71 2/0.86 0*3 1/8.29 0*2
    1/21.14 1/23.86 0*4 2/31 1/0.57 0*2 1/26.71
841 34.14: 19/34 2/21 2/28 0 2/21 2/14 0*3 1/6.57 0*3 1/0.43 0 1/10.57 0 1/1.43 0*2 2/18.29 0*3
    1/14.86 0 7/31.43 0*5 1/0.14 0*2 1/27.71
877 34.00: 1/16.57 0*2 2/8.71 0 1/9.86 1/15.29 0*2 4/28.14 0*2 1/13.71 0*3 1/23.86 0*3 5/14.71
    1/10.29 0 1/24.86 0 1/9.71 0 1/2.29 0*3 7/26 2/20.14 1/12.71 0*2
913 33.86: 0*3 1/15.71 0*4 2/32.71 0*6 1/8.57 0 4/26.14 0 1/4.57 1/23 0 1/2.57 0 1/3.71
938 33.71: 2/33 0 1/3 0*3 2/33.71 0 4/15.29 0 1/6.14 7/32.57 1/1.14 0 1/2.29 0*2 4/24 0 1/6.71
    0*4 1/1 0 7/30.14 1/11 0 6/29.86 0 5/18.29 0 2/14.29 0 1/17.43 0 6/30.43 0 2/11.43 0*3
981 33.57: 2/16 2/27.14 0*2 6/25 0*2 1/20 0 1/24.29 0*3 2/10.71 0*4 1/1.71 4/24.43 0*2 1/26.71 0
    1/3.86 0
1007 33.43: 0 1/1.43 0 5/21.14 2/18.86 0*3 3/26 0 12/32.43 1/9.14 0*2 2/21.43 0*15 4/14.29
1038 33.29: 1/23.14 1/8.71 0*2 3/18 0 1/33.29 0 1/0.57 0*4 4/25 0*2 2/19.14 0 5/32.29 0 3/24.57
    1/0.14 0*2 3/13.14 0*4
1067 33.14: 0*4 2/4 0*3 2/4.86 3/19.29 0*4 11/32 0*2 2/2.29 0 1/19 0 7/28.71 0*2 1/19 0 3/12 0
    2/28 0 1/2 0 4/25
1100 33.00: 2/15.29 2/6 1/18.29 0*5 1/8.57 3/30.29 0*2 1/18.43 1/0.86 6/18.43 0*2 4/29 0*2
    1/1.29 0 2/9.86 0 1/2.43 3/9.71 7/30.43 2/15 0 5/32.14 0*3
1133 32.86: 0 5/32.43 0 12/17.71 1/18.43 0 1/18.86 0 1/0.71 0*4 3/8.57 0*5 1/12.14 0 1/0.57 0*3
1158 32.71: 0*2 4/31.43 0*3 2/15.43 0 4/1.29 0 1/0.71 0 1/2.71 0 3/6 0*5 1/8.86 0*2 3/28.43 0
1183 32.57: 3/20.57 4/20.71 1/30.14 0 2/32.57 1/3.57 2/31.71 1/0.86 0*2 2/1.14 1/1.57 0*3 1/0.57
    7/15 0 6/26.71 0 6/29.57 0*3 1/0.29
1208 32.43: 0*9 1/6.14 0*2 1/3.71 0*6 3/28.14 0*2
1230 32.29: 3/25.86 0 3/27.57 0 8/23 0 1/0.86 0*2 2/13.14 0*2 11/30.86 0 1/1.29 8/32.29 0 1/3.57
    0 1/7.86 0*2 3/23.43 0*5 3/14.29 1/2.86 0 1/19.86 6/25 0 2/21.43
1265 32.14: 1/18.57 1/0.14 0 1/2.86 1/0.71 0 3/11.86 2/18.71 0*3 2/2.43 1/7.29 1/15.86 0*4
    3/1.43 2/8.29 0 3/19.14 0*2 1/6.29 4/24.71 0 6/30.71 0 1/5.86 1/30.14 4/27.71 0 2/27.14 0
    4/31.57
1301 32.00: 0*4 2/21.57 0 1/29.71 0 1/18 2/8 0*2 1/10.14 0*2 2/11.86 1/9.14 0*2 3/6.29 0*6 1/19
    1/29.29 3/23.71 2/27.14 0*3 1/4.57
1335 31.86: 0*3 4/29.14 0 1/1.57 3/3.29 0*6 3/30.71 1/23.71 0 1/1 1/30.57 2/11.14 0 2/24.29 0*3
    3/25.71 0 1/30.57 0 1/19.29 0
1365 31.71: 9/30.57 0*2 4/8.43 0 2/23.43 0 5/26 0*2 1/5.29 0*2 1/23 0*2 2/11.71 0*5 4/30.29 1/5
    0
1390 31.57: 0 1/1 5/22.86 0*3 1/7.57 0 1/11.14 0 1/8 0 1/6.57 0*4 1/0.86 3/28.14 0*2 2/14 0
    14/30.29 4/16.86
1415 31.43: 0*6 2/30.14 0*2 2/24.71 0 3/18.71 0 2/6.29 0*2 1/1.43 1/27.43 6/19.57 1/26.14
    6/18.14 0 1/2.71 2/7.43 0*2 2/22.57 1/22.57 0 2/21.43 1/31.14 0
1447 31.29: 1/9.57 0 2/21 0*2 3/17.43 0*7 4/13.14 0 4/20.14 0 1/6 0*2 5/29.14 0 2/26.86 0
1471 31.14: 1/17.14 0 5/26.86 0 1/2.29 2/26.29 0 2/12.29 2/19.14 0*2 1/16.71 0*6 1/26.14 2/5 0*4
    3/22.14 0 4/22 0 1/2 0*2 3/25.86 1/3.14 0 2/25.14 0 2/4
1508 31.00: 1/10.43 0*3 4/19 0*3 26/30.86 1/30.57 6/26.14 0*2 1/8.29 0*3 2/30.57 0*3 2/1.57 0*2
    1/17.43 2/19.71 0 1/29.29 0*3
1539 30.86: 14/29.86 0 1/2.71 0 2/5.14 4/25.43 0 1/2.71 6/29.29 0*2 1/0.14 3/26 1/2.14 0*4
    1/16.29 1/2.29 0 8/28.71 0*6 3/25.86 0 1/5.43 0*2 3/30.29 0 1/1.14
1575 30.71: 1/10.71 1/3 1/22 0 1/3.86 9/12 0*2 3/26.43 0*4 1/7.57 0*4 1/2 0 2/4 0 4/20.29 1/25
    0*6 2/21.43 0 1/24.71 1/30.29
1609 30.57: 1/14.71 0 3/17.57 2/6 0 2/27.71 5/28.43 0 1/16.57 0*2 1/1.71 1/25.86 0*4 1/3.29 0
    5/25.86 1/28.14 0 1/5.71 0 4/26.71 0*5
1639 30.43: 4/21.71 3/12.71 0*3 1/17.29 0 1/3.29 0 2/8.86 0*3 2/24.43 4/20.86 0*4 2/19.57 0*3
    1/16.86 0 1/6
1665 30.29: 1/4.29 0*2 3/16.86 3/30.29 0 2/25.71 0 1/21.14 0 1/24.57 0*3 5/28.29 1/8.29 3/18.29
    0 2/19.43 1/1.86 0 1/10.14 0*3 1/22 0 2/3.86 0*3
1696 30.14: 2/17.71 3/20.86 0*2 5/30 0 2/2 0*5 1/1.29 1/16.14 0*2 9/28.57 2/8.86 0 1/6.29 1/2.14
    0*3 1/21.86 1/21.86 0*4
1726 30.00: 0*2 2/5.43 0*4 3/29.71 0*3 1/20.86 0*4 2/25.14 0 4/25.14 0 4/28.43 3/24.43 0 3/16
    2/15.71 0*5 4/7.57 0
1758 29.86: 0*2 5/26.57 3/6.29 2/15.29 2/28.71 0*2 3/24.71 2/16.86 4/26.57 0 7/28 1/21.57
    2/20.71 0 2/8.14 2/15.29 0 3/2.43 0*3 1/24.57 0 1/14 0*2 3/12.71 0*2 1/2.86 6/26.43 0
    1/17.57 0 2/24.86 3/5.71 0*2
1798 29.71: 3/9.71 0 1/20.14 0*7 5/29.57 0*3 1/21.14 0*7 9/23.43 4/28.14 2/27.57 0*2 1/5 4/8
1827 29.57: 1/20.86 0 1/1 0 1/20.86 0*2 1/19.71 0 1/0.71 0*3 1/1.71 0 1/14.29 5/29.43 0 1/25 0*3
    1/27 0 1/9.71 0 1/2 0 1/1.57
1856 29.43: 1/26.29 0*3 7/28.57 0*2 1/28.57 0 1/24 0*6 1/2.43 1/9.57 0*2 1/24.14 0 2/10.71 0*3
    1/11.43 0
1884 29.29: 0*2 1/16.29 15/23.86 0 1/16.29 0 2/20.57 0*2 3/22.57 0*4 1/12.14 0 21/4.71 2/20.43
    0*3 3/19.86 0*2 3/16.14 2/20.57 1/2.14 0*2 1/0.43
1915 29.14: 1/17.14 1/3.29 0*2 1/25.14 2/18.29 2/3.71 1/5.14 0*2 4/28.57 0*3 2/27.86 0*2 1/22.71
    0 1/19.14 1/11.14 0*3 2/27.71 0*3 2/20.14 0
1945 29.00: 0 2/4 0*3 1/15.14 0*2 6/21.29 0 11/23.29 0*2 1/3.86 1/1.57 0 1/28 1/18.29 2/10.86
    2/25.43 0 3/1.43 0*8
1975 28.86: 1/8.86 0*4 1/1.71 17/28.43 2/23.71 2/11.86 0 2/3 0 2/21.29 0*4 1/16.71 0*8
2001 28.71: 0*4 3/15.86 0 1/22.71 0*2 1/15.14 0 2/8.43 0*4 1/15.57 0*4 1/13 0 7/24.29 0*2 1/8.71
    0
2029 28.57: 0 3/15.14 0*2 2/25.29 4/21.71 0 1/2.29 0*4 2/9.57 1/2.14 0 4/25.14 2/5.71 0*2
    1/14.86 3/15 0*2 1/11 0*2 1/13.14 0 1/8.43 1/25.43 0*2
2061 28.43: 0*7 2/27.71 3/27.71 0 1/13.86 0 1/4.14 1/21.14 3/7.29 3/27.71 0*4 1/1.43 0 2/8.43 0
    1/0.86
2086 28.29: 0*3 1/28.29 1/1.29 0 2/5.43 0 2/22.14 0 3/26 0 4/11.14 0 1/11 1/7.57 0*2 1/18.86 0
    3/21.14 0*3 1/13.29 1/1.57 0*5 1/19 0 1/4.29
2120 28.14: 0 3/27.71 0 6/12.43 0*4 3/24.43 0*3 2/25 5/9.57 0 1/3.57 0*2 1/2.86 0 1/7.14 0*2
    2/17 0 1/5.43 2/24.57 0
2148 28.00: 0 7/26.86 0*2 2/14.29 0 2/21.86 2/2.86 0*5 2/8.43 0 8/27.57 0*2 5/18.43 0 1/8.43 0
    1/1.43 0 1/3.57 0*2 1/11.29 0 3/8 0
2179 27.86: 2/20.57 0*3 2/12.57 1/19.57 0*4 1/0.14 0 2/25.71 0*4 2/23.71 0*2 1/7.43 0 1/23.57
    2/24.43 0*2 1/1.71 0
2207 27.71: 2/7.57 0*2 3/25.71 0*3 1/21.57 0*3 1/14 0 9/25.29 3/20.14 0*6
2228 27.57: 3/19.86 0*2 2/26.43 0 1/27.29 1/21.43 1/7.71 0*3 2/6.43 6/27.57 0*6
2247 27.43: 0*3 1/9.71 0 1/8.43 0 1/3.71 0*5 1/9 4/23 0*2 2/27 0*5 1/16.29
2271 27.29: 0*3 1/4.86 0*3 1/22.14 0 2/20.71 0 1/0.71 0*2 6/13.29 0*4 1/15.86 0*2 2/15.43
    6/21.14
2295 27.14: 0 1/12.14 0*4 2/19 0 7/23.43 0 1/24.43 2/8.29 1/6.14 1/1.57 1/0.43 0*2 1/25.86 5/18
    0 1/7.86 0*2 2/13.29 0*6 1/2.57 0*2
2328 27.00: 1/21.43 0 1/13.71 0 5/13 1/20.43 0 1/2.57 2/6.86 0*2 1/11.71 2/17.57 0 1/6.29 0 2/12
    0 1/7.57 2/9.86 7/24.14 1/9.29 2/21.86 0*3 5/24.29 0 4/26.57 0
"""
