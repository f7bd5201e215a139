"""The `fitted` engagement scorer: a logistic regression of "returns within H days".

Method. Let `end` be the last event time plus one microsecond (the log holds
events before `end`) and H the horizon. At an as-of time t (default end - 2H)
the training users are those with an event before t (a user first seen later
has no features at t and is not in the frame); their features are
`user_features(events, t)` and their label is 1 when they have any event in
[t, t + H). The half-open window continues `user_features`' "strictly before
t", so no event is lost or counted twice. Features are transformed (log1p of
the count-like ones, the rest as they are), standardised with the training
mean and standard deviation, and a feature that is constant, or a linear
combination of the ones before it, is dropped. statsmodels' `Logit` is fitted
by Newton's method (maximum likelihood), which gives standard errors, z and p.

On a large log both periods use a random sample of at most `max_users` users (all
of each sampled user's events; seeded, so the fit is repeatable): half a million
users pin eleven coefficients down, and the fit then costs the same at any scale.

Evaluation is out of time, never on the fitting data: the same coefficients
score the features at t + H and are judged on the labels in [t + H, t + 2H)
(by default the last H days of the log). The report holds that period's AUC
(Mann-Whitney, ties counted half), a decile calibration table, the base rate,
and the AUC of `SeedScorer` on the same users for comparison.

`score` takes features computed at any time (the log's end, to rank users
now) and returns the probability of returning within H, with one `c_<feature>`
column per kept feature: coefficient x standardised feature, the log-odds
contributions, so intercept + sum(c_*) = logit(score).
"""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl

from audience.data.schema import TIME, USER
from audience.data.stats import distinct
from audience.errors import ConfigError
from audience.model.features import user_features
from audience.model.scoring import Frame, SeedScorer

#: Model features in order; the count-like ones enter as log1p(x).
LOG_FEATURES: Final = (
    "interactions",
    "unique_products",
    "active_days",
    "per_active_day",
    "events_7d",
    "events_30d",
)
FEATURES: Final = (*LOG_FEATURES, "days_since_first", "mean_weight", "purchase_share", "recency")
LABEL: Final = "returned"
#: Users the fit and its validation use at most (a seeded random sample beyond).
MAX_USERS: Final = 500_000


def sampled(users: int, size: int, seed: int) -> npt.NDArray[np.int64]:
    """The places, in user id order, of the `size` users the fit samples among `users`
    (both engines draw them here, so they fit on the same users): Floyd's draw without
    replacement, seeded, in memory proportional to `size` alone; sorted."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, np.arange(users - size, users) + 1)
    chosen: set[int] = set()
    for top, pick in zip(range(users - size, users), picks.tolist(), strict=True):
        chosen.add(top if pick in chosen else pick)
    return np.sort(np.fromiter(chosen, np.int64, size))


_MIN_EIGEN: Final = 1e-9  # a standardised feature this close to a combination of others is dropped


def labelled_features(
    events: pl.DataFrame, as_of: datetime, horizon: timedelta, weights: dict[str, float]
) -> pl.DataFrame:
    """`user_features` at `as_of` plus `returned`: any event in [as_of, as_of + horizon)."""
    window = events.filter((pl.col(TIME) >= as_of) & (pl.col(TIME) < as_of + horizon))
    back = window.get_column(USER).unique().implode()
    return user_features(events, as_of, weights).with_columns(pl.col(USER).is_in(back).alias(LABEL))


def auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """P(score of a random positive > a random negative), ties counted half."""
    y = np.asarray(labels, dtype=bool)
    positives, negatives = int(y.sum()), int(y.size - y.sum())
    if positives == 0 or negatives == 0:
        raise ConfigError("labels", "AUC needs at least one positive and one negative")
    ranks = pl.Series(np.asarray(scores, dtype=np.float64)).rank("average").to_numpy()
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def calibration(
    labels: npt.ArrayLike, probs: npt.ArrayLike, bins: int = 10
) -> list[dict[str, Any]]:
    """Equal-count bins of predicted probability: n, mean predicted, observed rate."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    position = np.empty(p.size, dtype=np.int64)
    position[np.argsort(p, kind="stable")] = np.arange(p.size)
    which = position * bins // max(p.size, 1)
    return [
        {"bin": b + 1, "n": int(m.sum()), "mean_predicted": float(p[m].mean()),
         "observed_rate": float(y[m].mean())}
        for b in range(bins)
        if (m := which == b).any()
    ]  # fmt: skip


def _transform(name: str) -> pl.Expr:
    col = pl.col(name).cast(pl.Float64)
    return col.log1p() if name in LOG_FEATURES else col


def _design(frame: pl.DataFrame, names: tuple[str, ...]) -> npt.NDArray[np.float64]:
    return frame.select(_transform(n) for n in names).to_numpy().astype(np.float64)


def _keep(z: npt.NDArray[np.float64]) -> list[int]:
    """Columns kept in order: not constant, not a linear combination of those kept before."""
    gram = z.T @ z / max(len(z), 1)
    keep: list[int] = []
    for j in range(z.shape[1]):
        trial = [*keep, j]
        if np.linalg.eigvalsh(gram[np.ix_(trial, trial)]).min() > _MIN_EIGEN:
            keep.append(j)
    return keep


def _logit(y: npt.NDArray[np.float64], z: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Newton MLE of y on [1, z]: coefficients, standard errors, z, p, log-likelihood.

    Separation, non-convergence or a singular Hessian reach us as statsmodels
    warnings (and overflow or sqrt-of-negative RuntimeWarnings); inside this block
    only they become a ConfigError, because such a fit has no usable coefficients
    or standard errors. Everything read from the result is read inside the block.
    """
    # Imported here: statsmodels takes about a second to import, and only fitting needs it.
    from statsmodels.discrete.discrete_model import Logit
    from statsmodels.tools import sm_exceptions as sme

    failures = (sme.ConvergenceWarning, sme.PerfectSeparationWarning, sme.HessianInversionWarning)
    with warnings.catch_warnings():
        for category in (*failures, RuntimeWarning):
            warnings.simplefilter("error", category)
        try:
            exog = np.column_stack([np.ones(len(z)), z])
            r = Logit(y, exog, check_rank=False).fit(method="newton", maxiter=100, disp=0)
            out = {k: np.asarray(getattr(r, k)) for k in ("params", "bse", "tvalues", "pvalues")}
            if not all(np.isfinite(v).all() for v in out.values()):
                raise np.linalg.LinAlgError("non-finite standard errors")
            return {**out, "llf": float(r.llf), "iterations": int(r.mle_retvals["iterations"])}
        except (*failures, RuntimeWarning, sme.PerfectSeparationError, np.linalg.LinAlgError) as e:
            raise ConfigError(
                "scorer",
                f"the logistic regression cannot be fitted on this log ({e}): the features"
                " separate returning users (too few users?); use the seed scorer",
            ) from e


def fit_period(
    first: datetime, last: datetime, horizon_days: float, as_of: datetime | None = None
) -> tuple[datetime, datetime]:
    """(the fitting time, the log's end) of a log from `first` to `last`: at `as_of`,
    default end - 2 horizons; a ConfigError when the log cannot hold both horizons."""
    if not (np.isfinite(horizon_days) and horizon_days > 0):
        raise ConfigError("horizon_days", f"must be a positive number of days, not {horizon_days}")
    h = timedelta(days=horizon_days)
    end = last + timedelta(microseconds=1)
    t = end - 2 * h if as_of is None else as_of
    if not first < t <= end - 2 * h:
        days = (end - first) / timedelta(days=1)
        raise ConfigError(
            "horizon_days" if as_of is None else "as_of",
            f"the log spans {days:.1f} days ({first} to {end}); fitting at {t} needs events"
            f" before it and 2 x {horizon_days:g} days after it (fit and validation horizons)",
        )
    return t, end


class FittedScorer:
    """Logistic regression of returning within `horizon_days`; build it with `fit`."""

    name = "fitted"

    def __init__(
        self,
        intercept: float,
        coefficients: dict[str, float],
        mean: dict[str, float],
        std: dict[str, float],
        report: dict[str, Any],
    ) -> None:
        self.intercept, self.coefficients = intercept, coefficients
        self.mean, self.std, self.report = mean, std, report

    @classmethod
    def fit(
        cls,
        events: pl.DataFrame,
        weights: dict[str, float],
        horizon_days: float = 30.0,
        as_of: datetime | None = None,
        seed: int = 0,
        max_users: int = MAX_USERS,
    ) -> FittedScorer:
        """Fit at `as_of` (default: log end - 2H), validate on the next H days.

        The fit is deterministic given `seed`, which draws the users sampled when
        the log has more than `max_users`.
        """
        if events.is_empty():
            raise ConfigError("events", "the log is empty")
        first, last = events[TIME].min(), events[TIME].max()
        assert isinstance(first, datetime) and isinstance(last, datetime)
        t, end = fit_period(first, last, horizon_days, as_of)
        h = timedelta(days=horizon_days)
        known = distinct(events.get_column(USER))
        if known.len() > max_users:
            chosen = known.gather(sampled(known.len(), max_users, seed)).implode()
            events = events.filter(pl.col(USER).is_in(chosen))
        train = labelled_features(events, t, h, weights)
        valid = labelled_features(events, t + h, h, weights)
        return cls.of_frames(train, valid, weights, horizon_days, (t, end), known.len(), max_users)

    @classmethod
    def of_frames(
        cls,
        train: pl.DataFrame,
        valid: pl.DataFrame,
        weights: dict[str, float],
        horizon_days: float,
        period: tuple[datetime, datetime],
        users_in_log: int,
        max_users: int = MAX_USERS,
    ) -> FittedScorer:
        """`fit`'s model from the labelled features (`labelled_features`, sorted by user)
        at the fitting time and one horizon later; `period`: (fitting time, log end).
        The Spark engine computes the frames, and fits here on the driver."""
        t, end = period
        h = timedelta(days=horizon_days)
        for label, frame in (("fitting", train), ("validation", valid)):
            k = int(frame[LABEL].sum())
            if k in (0, frame.height):
                raise ConfigError(
                    "scorer",
                    f"in the {label} period {'none' if k == 0 else 'each'} of the"
                    f" {frame.height} users returns within {horizon_days:g} days, so there is"
                    " nothing to learn or measure: use a longer log, another horizon or the seed"
                    " scorer",
                )
        x = _design(train, FEATURES)
        mu, sd = x.mean(axis=0), x.std(axis=0)
        safe = np.where(sd > 0, sd, 1.0)
        keep = _keep((x - mu) / safe)
        names = tuple(FEATURES[j] for j in keep)
        y = train[LABEL].to_numpy().astype(np.float64)
        result = _logit(y, ((x - mu) / safe)[:, keep])
        beta, se, z, p = (result[k] for k in ("params", "bse", "tvalues", "pvalues"))
        rate = float(y.mean())  # the intercept-only model's log-likelihood, for McFadden's R2
        llnull = y.size * (rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
        table = {
            n: {"coef": float(beta[i]), "se": float(se[i]), "z": float(z[i]), "p": float(p[i])}
            for i, n in enumerate(("const", *names))
        }
        scorer = cls(
            float(beta[0]),
            {n: float(b) for n, b in zip(names, beta[1:], strict=True)},
            {n: float(mu[j]) for n, j in zip(names, keep, strict=True)},
            {n: float(sd[j]) for n, j in zip(names, keep, strict=True)},
            {},
        )
        yv = valid[LABEL].to_numpy()
        pv = scorer.score(valid)["score"].to_numpy()
        scorer.report = {
            "horizon_days": float(horizon_days),
            "as_of_fit": t.isoformat(),
            "as_of_validation": (t + h).isoformat(),
            "log_end": end.isoformat(),
            "weights": dict(weights),
            "transform": {n: "log1p" if n in LOG_FEATURES else "identity" for n in names},
            "dropped": [n for n in FEATURES if n not in names],
            "coefficients": table,
            "users_in_log": users_in_log,
            "users_sampled": min(users_in_log, max_users),
            "fit": {
                "users": train.height,
                "positives": int(y.sum()),
                "base_rate": rate,
                "log_likelihood": result["llf"],
                "pseudo_r2": float(1 - result["llf"] / llnull),
                "iterations": result["iterations"],
            },
            "validation": {
                "users": valid.height,
                "positives": int(yv.sum()),
                "base_rate": float(yv.mean()),
                "mean_predicted": float(pv.mean()),
                "brier": float(np.mean((pv - yv) ** 2)),
                "auc": auc(yv, pv),
                "seed_auc": auc(yv, SeedScorer().score(valid)["score"].to_numpy()),
                "calibration": calibration(yv, pv),
            },
        }
        return scorer

    def score(self, features: Frame) -> Frame:
        """user_id, score (P(return within H)) and `c_<feature>` log-odds terms, input order."""
        terms = [
            ((_transform(n) - self.mean[n]) / self.std[n] * b).alias(f"c_{n}")
            for n, b in self.coefficients.items()
        ]
        logit = pl.sum_horizontal(pl.lit(self.intercept), *(f"c_{n}" for n in self.coefficients))
        return features.select(USER, *terms).select(
            USER, (1 / (1 + (-logit).exp())).alias("score"), *(f"c_{n}" for n in self.coefficients)
        )

    def params(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "method": "logistic regression, statsmodels Logit (Newton MLE)",
            "features": list(self.coefficients),  # coefficients: the report's table
            "mean": self.mean,
            "std": self.std,
            **self.report,
        }
