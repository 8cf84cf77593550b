"""The brain's model: LightGBM trained on the synthetic set, its artefact, and its explanations.

The artefact is a folder: `model.txt` (LightGBM's text format; never pickle, which would run code
on load) and `meta.json` {version, trained_at, seed, rows, features, params, metrics}. It is
written into a temporary sibling folder and renamed into place, so a reader never sees half of
it, and two brains training on first start together leave one whole model.

Reasons come from the model itself: LightGBM's `pred_contrib=True` gives each feature's SHAP value
(Lundberg et al. 2018, "Consistent Individualized Feature Attribution for Tree Ensembles"), whose
sum plus the bias is the raw score, so one call gives both the score and its reasons.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from fraud.brain.features import FEATURE_NAMES, SILENT_WHEN_MISSING, Facts, feature_vector, reason_message
from fraud.brain.synthetic import SEED, Labelled, generate
from fraud.engine.transaction import History, Reason

MODEL_FILE: Final = "model.txt"
META_FILE: Final = "meta.json"
# Tuned on the synthetic set for quality first (held-out ROC AUC), then for the cost of one
# pred_contrib call, which grows with trees x leaves. Measured (2 shared cores): 150 trees of 31
# leaves, AUC 0.967 at ~4x the cost of 80 of 15 (AUC 0.971); 40 of 15, AUC 0.969 at a third of it.
# deterministic + one thread: the same seed gives the same model.txt, byte for byte.
PARAMS: Final[dict[str, Any]] = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
ROUNDS: Final = 80
# Share of users held out for evaluation (split by user: none of their rows is trained on).
HOLDOUT: Final = 0.2
# Reasons: features pushing towards fraud by more than this (log-odds), strongest first, at most 5.
# 0.25 is odds x1.28: below it a sentence is noise to an analyst (at 0.05 a routine payment came
# back with "0 transactions in the 24 hours before" as its reason); a routine payment has none.
REASON_FLOOR: Final = 0.25
MAX_REASONS: Final = 5
# Reasons explain a score above the ordinary: below this probability (a fifth of the synthetic
# set's fraud rate of ~2.4 %) a payment is routine and gets none, and the brain skips the SHAP
# pass (pred_contrib: ~270 us against ~30 for the plain prediction, most of a Score call's model
# time). On the synthetic set 81 % of honest payments fall below it and 3.5 % of frauds; a single
# weak signal (a new merchant, a new country, night) still scores two to eight times above it.
EXPLAIN_FLOOR: Final = 0.005
# The features that, for a first payment, say only "no earlier transaction of this user".
FIRST_PAYMENT_ALSO: Final = ("minutes_since_last", "history_size")


@dataclass(frozen=True)
class Explained:
    """One transaction scored: `score` the probability of fraud (0..1), `reasons` strongest first."""

    score: float
    reasons: tuple[Reason, ...]


class BrainModel:
    """A loaded model: `explain` scores one transaction with its reasons, `explain_many` several
    at once; `version` names it."""

    def __init__(self, booster: lgb.Booster, meta: dict[str, Any]) -> None:
        self.booster = booster
        self.meta = meta
        self.version: str = meta["version"]

    def explain(
        self, *, amount: float, currency: str, country: str, merchant: str, created_at_ms: int, history: History
    ) -> Explained:
        """Scores one transaction (fields as fraud.proto's Transaction; `amount` > 0, finite):
        `explain_many` of it alone, as the brain's Score call does."""
        return self.explain_many([Facts(amount, currency, country, merchant, created_at_ms, history)])[0]

    def explain_many(self, items: Sequence[Facts]) -> list[Explained]:
        """Scores `items` (each as fraud.proto's Transaction; `amount` > 0, finite), one
        `Explained` per item in their order; [] for none.

        One plain prediction on the matrix of all rows, then one SHAP pass (`pred_contrib`) on
        the rows scoring EXPLAIN_FLOOR or more: LightGBM's cost per call, not per row, is most of
        a small batch's (measured in docs/fraud.md, "The model"). A row's score and reasons are
        those it gets alone (LightGBM predicts each row of a matrix on its own, with one thread
        the same arithmetic in the same order): see `_reasons`.
        """
        if not items:
            return []
        rows = [
            feature_vector(
                amount=f.amount,
                currency=f.currency,
                country=f.country,
                merchant=f.merchant,
                created_at_ms=f.created_at_ms,
                history=f.history,
            )
            for f in items
        ]
        features = np.array(rows, dtype=np.float64)
        # Plain floats and lists from here: numpy's per-element work (a comparison, flatnonzero,
        # scalars) cost ~4 us more per call, measured, as much as 16 more rows' predictions.
        scores: list[float] = np.asarray(self.booster.predict(features, num_threads=1)).tolist()
        above = [i for i, score in enumerate(scores) if score >= EXPLAIN_FLOOR]
        reasons: dict[int, tuple[Reason, ...]] = {}
        if above:
            shown = features if len(above) == len(rows) else features[above]
            contributions = self.booster.predict(shown, pred_contrib=True, num_threads=1)
            for i, row_contributions in zip(above, contributions, strict=True):
                reasons[i] = _reasons(rows[i], row_contributions, items[i])
        return [Explained(score, reasons.get(i, ())) for i, score in enumerate(scores)]


def _reasons(row: list[float], contributions: npt.NDArray[np.float64], facts: Facts) -> tuple[Reason, ...]:
    """The reasons of one row scored at or above EXPLAIN_FLOOR, from its feature values (`row`,
    FEATURE_NAMES order) and its SHAP values (`contributions`: one per feature, then the bias).

    The features whose SHAP contribution exceeds REASON_FLOOR, strongest first, at most
    MAX_REASONS, each with its analyst sentence (fraud.brain.features); a missing value of
    SILENT_WHEN_MISSING (no rate, not a first payment) is never one, and for a first payment
    FIRST_PAYMENT_ALSO count as first_payment.
    """
    by_feature = dict(zip(FEATURE_NAMES, (float(c) for c in contributions[:-1]), strict=True))
    values = dict(zip(FEATURE_NAMES, row, strict=True))
    if not math.isnan(values["first_payment"]):
        # A first payment: "no earlier transaction" (minutes_since_last NaN, history_size 0) is
        # the fact first_payment states, so their SHAP values are summed under its one reason
        # (a group's SHAP value is its members' sum); split, the trees' choice between equal
        # splits decided which of the three an analyst was told.
        for same in FIRST_PAYMENT_ALSO:
            by_feature["first_payment"] += by_feature.pop(same)
    ranked = sorted(((c, name, values[name]) for name, c in by_feature.items()), reverse=True)
    return tuple(
        Reason(name, reason_message(name, value, facts), round(c, 4))
        for c, name, value in ranked
        if c > REASON_FLOOR and not (name in SILENT_WHEN_MISSING and math.isnan(value))
    )[:MAX_REASONS]


def matrix(rows: list[Labelled]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The feature matrix (FEATURE_NAMES columns) and the 0/1 labels of `rows`."""
    features = [
        feature_vector(
            amount=r.tx.amount,
            currency=r.currency,
            country=r.tx.country,
            merchant=r.tx.merchant,
            created_at_ms=r.tx.at_ms,
            history=r.history,
        )
        for r in rows
    ]
    return np.array(features, dtype=np.float64), np.array([r.fraud for r in rows], dtype=np.float64)


def held_out(user_id: str) -> bool:
    """Whether `user_id` is in the evaluation split: a stable hash, so the split never moves."""
    return zlib.crc32(user_id.encode()) % 1000 < HOLDOUT * 1000


def roc_auc(labels: npt.NDArray[np.float64], scores: npt.NDArray[np.float64]) -> float:
    """ROC AUC by the Mann-Whitney U statistic (ties given half credit through average ranks)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    # Average ranks over tied scores.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if not n_pos or not n_neg:
        return math.nan
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


Vector = npt.NDArray[np.float64]


def at_threshold(labels: Vector, scores: Vector, threshold: float) -> dict[str, float]:
    """Precision and recall of "score >= threshold" (precision 0 when nothing is flagged)."""
    flagged = scores >= threshold
    hits = float((flagged & (labels == 1)).sum())
    return {
        "precision": hits / float(flagged.sum()) if flagged.any() else 0.0,
        "recall": hits / float((labels == 1).sum()) if (labels == 1).any() else 0.0,
    }


def train(
    *, seed: int = SEED, review_threshold: float = 0.5, decline_threshold: float = 0.9
) -> tuple[str, dict[str, Any]]:
    """Generates the synthetic set with `seed`, trains on the users outside the held-out split and
    evaluates on the others. Returns (model.txt's text, meta without `version`/`trained_at`).

    Metrics: ROC AUC, precision and recall at the review and decline thresholds (the settings'
    REVIEW_THRESHOLD and DECLINE_THRESHOLD), rows, fraud rate, seconds taken.
    """
    started = time.perf_counter()
    rows = generate(seed)
    train_rows = [r for r in rows if not held_out(r.user_id)]
    test_rows = [r for r in rows if held_out(r.user_id)]
    x_train, y_train = matrix(train_rows)
    x_test, y_test = matrix(test_rows)
    params = {**PARAMS, "seed": seed}
    dataset = lgb.Dataset(x_train, y_train, feature_name=list(FEATURE_NAMES), free_raw_data=True)
    booster = lgb.train(params, dataset, num_boost_round=ROUNDS)
    scores = np.asarray(booster.predict(x_test), dtype=np.float64)
    metrics = {
        "roc_auc": round(roc_auc(y_test, scores), 4),
        "review": {k: round(v, 4) for k, v in at_threshold(y_test, scores, review_threshold).items()},
        "decline": {k: round(v, 4) for k, v in at_threshold(y_test, scores, decline_threshold).items()},
        "review_threshold": review_threshold,
        "decline_threshold": decline_threshold,
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
        "fraud_rate": round(float(np.mean([r.fraud for r in rows])), 4),
        "seconds": round(time.perf_counter() - started, 2),
    }
    meta = {"seed": seed, "rows": len(rows), "features": list(FEATURE_NAMES), "params": params, "metrics": metrics}
    return booster.model_to_string(), meta


def version_of(model_text: str) -> str:
    """ "lgbm-" and the first 12 hex digits of model.txt's SHA-256."""
    return "lgbm-" + hashlib.sha256(model_text.encode()).hexdigest()[:12]


def save(model_dir: Path, model_text: str, meta: dict[str, Any], *, replace: bool) -> dict[str, Any]:
    """Writes the artefact into `model_dir` atomically; returns the meta written (with `version`
    and `trained_at`). Without `replace`, an artefact already there (another brain was quicker)
    is kept and this one dropped; with it, the old one is swapped out.

    Raises OSError when the parent folder cannot be written.
    """
    stamp = {"version": version_of(model_text), "trained_at": datetime.now(UTC).isoformat()}
    meta = {**stamp, **{k: v for k, v in meta.items() if k not in stamp}}
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}-", dir=model_dir.parent))
    try:
        (staging / MODEL_FILE).write_text(model_text)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if replace and model_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}-old-", dir=model_dir.parent))
            model_dir.rename(retired / "model")
            shutil.rmtree(retired, ignore_errors=True)
        try:
            staging.rename(model_dir)  # rename(2), atomic: both in one folder
        except OSError:
            if not (model_dir / META_FILE).exists():
                raise
            return load(model_dir).meta  # a brain that started with this one won the race
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
    return meta


def exists(model_dir: Path) -> bool:
    return (model_dir / MODEL_FILE).is_file() and (model_dir / META_FILE).is_file()


class ModelOutdated(ValueError):
    """The artefact was trained on other features than this code computes (an earlier Sentinel's
    model): scoring with it would feed it the wrong columns (LightGBM: a wrong-sized row)."""


def load(model_dir: Path) -> BrainModel:
    """Loads the artefact of `model_dir`. Raises OSError when a file is missing, ValueError when
    model.txt does not match the version in meta.json (an artefact edited by hand), and
    ModelOutdated when its features are not FEATURE_NAMES."""
    text = (model_dir / MODEL_FILE).read_text()
    meta = json.loads((model_dir / META_FILE).read_text())
    if version_of(text) != meta.get("version"):
        raise ValueError(f"{model_dir / MODEL_FILE} does not match the version {meta.get('version')!r} of meta.json")
    if meta.get("features") != list(FEATURE_NAMES):
        features = meta.get("features")
        raise ModelOutdated(f"{model_dir} was trained on the features {features}, not on {list(FEATURE_NAMES)}")
    return BrainModel(lgb.Booster(model_str=text), meta)


def ensure(
    model_dir: Path, *, review_threshold: float = 0.5, decline_threshold: float = 0.9
) -> tuple[BrainModel, float | None]:
    """The model of `model_dir`, trained and saved first when it has none (a first start) or when
    it was trained on other features (`ModelOutdated`: the brain of an upgraded Sentinel retrains
    rather than answer every call with an error).

    Returns (model, seconds spent training, None when the artefact was already there). Raises as
    `load` and `save` do.
    """
    replace = False
    if exists(model_dir):
        try:
            return load(model_dir), None
        except ModelOutdated:
            replace = True
    started = time.perf_counter()
    text, meta = train(review_threshold=review_threshold, decline_threshold=decline_threshold)
    save(model_dir, text, meta, replace=replace)
    return load(model_dir), time.perf_counter() - started
