"""The brain's data, features and model, in-process: the History replay, held-out quality, a
reason naming each planted pattern, determinism and the artefact's safety."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fraud.brain import model as brain_model
from fraud.brain.features import FEATURE_NAMES, Facts, feature_vector, reason_message
from fraud.brain.synthetic import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    NO_RATE,
    PATTERNS,
    START_MS,
    Earlier,
    generate,
    history_of,
)
from fraud.engine.currencies import PER_EUR
from fraud.engine.transaction import History, decide

NOW = START_MS + 20 * DAY_MS + 14 * HOUR_MS  # a weekday afternoon, UTC


def test_history_of_counts_each_window_back_from_the_transaction_excluding_it() -> None:
    # Given a user's earlier transactions at known distances before NOW, and one after it
    earlier = [
        Earlier(NOW - 2 * DAY_MS, 40.0, "FR", "m1"),  # outside 24 h
        Earlier(NOW - 24 * HOUR_MS, 10.0, "DE", "m2"),  # exactly 24 h back: the window's far edge, out
        Earlier(NOW - 3 * HOUR_MS, 20.0, "ES", "m1"),
        Earlier(NOW - 30 * MINUTE_MS, 1.5, "FR", "m3"),  # small
        Earlier(NOW - 10 * MINUTE_MS, 2.0, "FR", "m3"),  # small (<= 2.00 EUR); 10 min edge, out of 10m
        Earlier(NOW - 1 * MINUTE_MS, 5.0, "FR", "m3"),
        Earlier(NOW + MINUTE_MS, 999.0, "BR", "m9"),  # later: not history
    ]
    tx = Earlier(NOW, 30.0, "ES", "m2")

    # When its History is computed
    h = history_of(earlier, tx)

    # Then every field follows fraud.proto's definitions
    amounts = [40.0, 10.0, 20.0, 1.5, 2.0, 5.0]
    logs = [math.log(a) for a in amounts]
    mean = sum(logs) / len(logs)
    assert h == History(
        count_total=6,
        count_10m=1,
        count_1h=3,
        count_24h=4,
        small_count_1h=2,
        amount_1h=8.5,
        log_amount_mean=pytest.approx(mean),
        log_amount_std=pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in logs) / len(logs))),
        last_at_ms=NOW - MINUTE_MS,
        country_seen=True,
        merchant_seen=True,
        countries_24h=2,  # ES and FR; DE is exactly 24 h back
    )


def test_history_of_a_first_transaction_is_all_zero_and_needs_two_for_a_spread() -> None:
    assert history_of([], Earlier(NOW, 10.0, "FR", "m1")) == History()
    one = history_of([Earlier(NOW - DAY_MS, 10.0, "FR", "")], Earlier(NOW, 10.0, "", ""))
    assert (one.log_amount_std, one.country_seen, one.merchant_seen) == (0.0, False, False)


def test_the_model_is_well_above_chance_on_users_it_never_saw(brain_model_dir: Path) -> None:
    metrics = brain_model.load(brain_model_dir).meta["metrics"]
    assert metrics["roc_auc"] >= 0.95
    assert metrics["review"]["precision"] >= 0.85
    assert metrics["decline"]["precision"] >= 0.95
    assert metrics["test_rows"] > 10_000


def _habit(amount: float = 25.0) -> list[Earlier]:
    """Twenty days of one purchase a day around `amount` (a realistic spread), at home (FR), at
    three merchants, in the afternoon."""
    factors = [0.6, 1.4, 0.8, 1.2, 1.0, 0.7, 1.5, 0.9, 1.1, 1.3] * 2
    return [
        Earlier(NOW - (20 - i) * DAY_MS - 30 * MINUTE_MS, round(amount * f, 2), "FR", f"m{i % 3}")
        for i, f in enumerate(factors)
    ]


def _planted(pattern: str) -> tuple[list[Earlier], Earlier]:
    """A transaction with one planted pattern on top of an honest habit."""
    habit = _habit()
    if pattern == "amount_vs_habit":
        return habit, Earlier(NOW, 900.0, "FR", "m1")
    if pattern == "velocity_10m":
        burst = [Earlier(NOW - k * MINUTE_MS, 24.0, "FR", "m1") for k in range(1, 8)]
        return habit + burst, Earlier(NOW, 24.0, "FR", "m1")
    if pattern == "new_country":
        return habit, Earlier(NOW, 30.0, "BR", "m1")
    if pattern == "new_merchant":
        return habit, Earlier(NOW, 30.0, "FR", "m-new")
    if pattern == "night":
        return habit, Earlier(NOW - 11 * HOUR_MS, 30.0, "FR", "m1")  # 03:00 UTC
    if pattern == "first_payment":
        return [], Earlier(NOW, 9000.0, "FR", "m-new")  # a user never seen, 9,000.00 EUR at once
    assert pattern == "small_amounts_1h"
    testing = [Earlier(NOW - k * 4 * MINUTE_MS, 1.0, "FR", "m-shop") for k in range(1, 12)]
    return habit + testing, Earlier(NOW, 1.0, "FR", "m-shop")


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_top_reason_of_a_planted_pattern_names_it(brain_model_dir: Path, pattern: str) -> None:
    # Given an honest habit and a transaction showing one fraud pattern
    earlier, tx = _planted(pattern)
    model = brain_model.load(brain_model_dir)
    honest = model.explain(
        amount=25.0,
        currency="EUR",
        country="FR",
        merchant="m1",
        created_at_ms=NOW,
        history=history_of(_habit(), Earlier(NOW, 25.0, "FR", "m1")),
    )

    # When the model explains it
    explained = model.explain(
        amount=tx.amount,
        currency="EUR",
        country=tx.country,
        merchant=tx.merchant,
        created_at_ms=tx.at_ms,
        history=history_of(earlier, tx),
    )

    # Then its strongest reason is that pattern's feature, and it scores above the honest twin
    assert explained.reasons[0].code == pattern, explained.reasons
    assert explained.score > honest.score
    assert all(r.contribution and r.contribution > brain_model.REASON_FLOOR for r in explained.reasons)
    assert len(explained.reasons) <= brain_model.MAX_REASONS


def test_reason_messages_quote_what_an_analyst_checks(brain_model_dir: Path) -> None:
    model = brain_model.load(brain_model_dir)
    messages = {}
    for pattern in PATTERNS:
        earlier, tx = _planted(pattern)
        history = history_of(earlier, tx)
        explained = model.explain(
            amount=tx.amount,
            currency="EUR",
            country=tx.country,
            merchant=tx.merchant,
            created_at_ms=tx.at_ms,
            history=history,
        )
        messages[pattern] = explained.reasons[0].message
    assert messages["amount_vs_habit"].startswith("amount ") and "x the user's usual" in messages["amount_vs_habit"]
    assert messages["velocity_10m"] == "7 transactions in the 10 minutes before"
    assert messages["new_country"] == "first transaction from BR"
    assert messages["new_merchant"] == "first transaction at merchant m-new"
    assert messages["night"] == "at 03:00 UTC, outside the usual daytime hours"
    assert messages["small_amounts_1h"] == (
        "12 charges of at most 2.00 EUR in the last hour, this one included (card testing)"
    )
    assert messages["first_payment"] == (
        "first EUR payment of this user: 9,000.00 EUR, far above what new users pay (typically about 27 EUR)"
    )


def test_sentences_count_and_quote_amounts_as_people_write_them() -> None:
    facts = Facts(1.234, "BHD", "FR", "m", 0, History(count_total=1, log_amount_mean=0.0))
    assert reason_message("velocity_10m", 1.0, facts) == "1 transaction in the 10 minutes before"
    assert reason_message("small_amounts_1h", 1.0, facts).startswith("1 charge of at most")
    assert reason_message("amount_log", 0.2, facts) == "amount 1.234 BHD"
    yen = Facts(12000.0, "JPY", "", "", 0, History())
    assert reason_message("amount_log", 9.4, yen) == f"amount 12,000 JPY (about {12000 / PER_EUR['JPY']:,.2f} EUR)"
    assert reason_message("small_amounts_1h", 3.0, yen).startswith(
        f"3 charges of at most {2 * PER_EUR['JPY']:,.0f} JPY (2.00 EUR) in the last hour"
    )
    assert reason_message("countries_24h", 1.0, facts) == "1 country in the last 24 hours"


def test_the_same_seed_trains_the_same_model(brain_model_dir: Path) -> None:
    text, _ = brain_model.train()
    assert brain_model.version_of(text) == brain_model.load(brain_model_dir).version


def test_the_synthetic_set_is_reproducible_and_labels_every_pattern() -> None:
    first, second = generate(users=200), generate(users=200)
    assert first == second
    assert {row.pattern for row in first if row.fraud} == set(PATTERNS)


def _first_features(amount: float, currency: str, country: str, merchant: str) -> dict[str, float]:
    """The features, by name, of a user's first transaction (no history) at NOW."""
    row = feature_vector(
        amount=amount, currency=currency, country=country, merchant=merchant, created_at_ms=NOW, history=History()
    )
    return dict(zip(FEATURE_NAMES, row, strict=True))


def test_features_of_a_first_transaction_claim_no_habit() -> None:
    row = _first_features(500.0, "EUR", "BR", "m1")
    assert (row["amount_vs_habit"], row["new_country"], row["new_merchant"], row["history_size"]) == (0, 0, 0, 0)
    assert math.isnan(row["minutes_since_last"])
    assert row["first_payment"] == 500.0


def test_roc_auc_matches_the_mann_whitney_definition() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1], dtype=np.float64)
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4], dtype=np.float64)
    # Pairs (positive, negative) ranked right: 0.35>0.1; 0.8 beats all 3; 0.4 beats 0.1, ties 0.4 twice.
    assert brain_model.roc_auc(labels, scores) == pytest.approx((1 + 3 + 1 + 0.5 * 2) / 9)


def test_a_second_brain_keeps_the_artefact_the_first_one_saved(tmp_path: Path, brain_model_dir: Path) -> None:
    # Given a model already saved in the folder (another brain won the race)
    target = tmp_path / "model"
    text = (brain_model_dir / brain_model.MODEL_FILE).read_text()
    meta = json.loads((brain_model_dir / brain_model.META_FILE).read_text())
    first = brain_model.save(target, text, meta, replace=False)

    # When a second one saves its own without `replace`, then `make train` saves with it
    second = brain_model.save(target, text + "\n", meta, replace=False)
    kept = brain_model.load(target).version
    replaced = brain_model.save(target, text + "\n", meta, replace=True)

    # Then the first stayed until the replacement, and no staging folder is left behind
    assert second["version"] == first["version"] == kept
    assert brain_model.load(target).version == replaced["version"] != kept
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_an_artefact_edited_by_hand_is_refused(tmp_path: Path, brain_model_dir: Path) -> None:
    target = tmp_path / "model"
    text = (brain_model_dir / brain_model.MODEL_FILE).read_text()
    meta = json.loads((brain_model_dir / brain_model.META_FILE).read_text())
    brain_model.save(target, text, meta, replace=False)
    (target / brain_model.MODEL_FILE).write_text(text.replace("learning_rate", "learning_rate", 1) + " ")
    with pytest.raises(ValueError, match="does not match the version"):
        brain_model.load(target)


def test_a_model_of_an_earlier_versions_features_is_retrained_on_start(tmp_path: Path, brain_model_dir: Path) -> None:
    # Given an artefact trained on other features (as an upgrade finds the last version's)
    target = tmp_path / "model"
    meta = json.loads((brain_model_dir / brain_model.META_FILE).read_text())
    brain_model.save(target, (brain_model_dir / brain_model.MODEL_FILE).read_text(), meta, replace=False)
    (target / brain_model.META_FILE).write_text(json.dumps(meta | {"features": meta["features"][:-1]}))

    # Then it is not served as it is...
    with pytest.raises(brain_model.ModelOutdated, match="trained on the features"):
        brain_model.load(target)
    # ...and a starting brain trains a model of this version's features in its place
    model, trained_s = brain_model.ensure(target)
    assert trained_s is not None and model.meta["features"] == list(FEATURE_NAMES)
    assert brain_model.load(target).version == model.version


def test_history_of_counts_small_charges_by_their_value_in_eur() -> None:
    # Given charges within the hour in JPY (2.00 EUR is ~351 JPY) and in AED (no ECB rate)
    bound = 2 * PER_EUR["JPY"]
    yen = [Earlier(NOW - k * MINUTE_MS, amount, "JP", "m") for k, amount in enumerate([2.0, 300.0, 400.0], 1)]
    dirham = [Earlier(NOW - MINUTE_MS, 1.0, "AE", "m")]

    # Then a small charge is one of at most 2.00 EUR in its currency, and none is without a rate
    assert 300.0 < bound < 400.0
    assert history_of(yen, Earlier(NOW, 50.0, "JP", "m"), "JPY").small_count_1h == 2
    assert history_of(dirham, Earlier(NOW, 1.0, "AE", "m"), "AED").small_count_1h == 0


def _explain(model: brain_model.BrainModel, earlier: list[Earlier], tx: Earlier, currency: str):  # type: ignore[no-untyped-def]
    return model.explain(
        amount=tx.amount,
        currency=currency,
        country=tx.country,
        merchant=tx.merchant,
        created_at_ms=tx.at_ms,
        history=history_of(earlier, tx, currency),
    )


def test_a_yen_payment_within_a_yen_habit_is_not_huge_and_a_big_first_payment_is_flagged(
    brain_model_dir: Path,
) -> None:
    # Given the model, a JPY user who pays 50,000-120,000 JPY (~280-680 EUR) every day for 20 days
    model = brain_model.load(brain_model_dir)
    habit = [Earlier(e.at_ms, e.amount, "JP", e.merchant) for e in _habit(80_000.0)]

    # When they pay 100,000 JPY (~570 EUR), and users never seen pay ~9,000 EUR first, in EUR and JPY
    usual = _explain(model, habit, Earlier(NOW, 100_000.0, "JP", "m1"), "JPY")
    first_eur = _explain(model, [], Earlier(NOW, 9000.0, "FR", "m-new"), "EUR")
    first_yen = _explain(model, [], Earlier(NOW, 1_580_000.0, "JP", "m-new"), "JPY")  # ~8,990 EUR

    # Then the habitual yen payment, read as the ~570 EUR it is (not as 100,000), is approved far
    # below the review threshold; both first payments go to an analyst, for that reason first
    amount_log = feature_vector(
        amount=100_000.0, currency="JPY", country="JP", merchant="m1", created_at_ms=NOW, history=History()
    )[FEATURE_NAMES.index("amount_log")]
    assert amount_log == pytest.approx(math.log(100_000 / PER_EUR["JPY"]))
    assert decide(usual.score, 0.5, 0.9) == "approve" and usual.score < 0.05, usual
    for first in (first_eur, first_yen):
        assert decide(first.score, 0.5, 0.9) in ("review", "decline"), first
        assert first.reasons[0].code == "first_payment", first.reasons
    assert first_yen.reasons[0].message.startswith("first JPY payment of this user: 1,580,000 JPY (about 8,9")


def test_a_currency_without_a_rate_leaves_the_absolute_amounts_missing(brain_model_dir: Path) -> None:
    # Given AED, which the ECB does not quote (the training set's NO_RATE users stand for it)
    assert "AED" not in PER_EUR and NO_RATE not in PER_EUR
    row = _first_features(33_000.0, "AED", "AE", "m")
    missing = ("amount_log", "first_payment", "small_amounts_1h", "amount_1h")

    # Then its absolute amounts are missing, the model still scores, and no reason quotes them
    assert all(math.isnan(row[name]) for name in missing)
    explained = _explain(brain_model.load(brain_model_dir), [], Earlier(NOW, 33_000.0, "AE", "m"), "AED")
    assert 0.0 <= explained.score <= 1.0
    assert not set(missing) & {r.code for r in explained.reasons}
    assert any(row.currency == NO_RATE and math.isnan(feature) for row, feature in _no_rate_amounts())


def _no_rate_amounts() -> list[tuple[object, float]]:
    rows = [row for row in generate(users=60) if row.currency == NO_RATE]
    x, _ = brain_model.matrix(rows)  # type: ignore[arg-type]
    return list(zip(rows, x[:, FEATURE_NAMES.index("amount_log")], strict=True))


def test_card_testing_in_yen_is_told_by_the_eur_bound(brain_model_dir: Path) -> None:
    # Given a JPY user's habit, then twelve charges of 300 JPY (~1.71 EUR) at a new shop in 45 min
    # (with a flat 2.00 bound in every currency, none was small: scored 0.03, approved)
    habit = [Earlier(e.at_ms, e.amount, "JP", e.merchant) for e in _habit(4_000.0)]
    testing = [Earlier(NOW - k * 4 * MINUTE_MS, 300.0, "JP", "m-shop") for k in range(1, 12)]

    # When the twelfth is scored
    explained = _explain(brain_model.load(brain_model_dir), habit + testing, Earlier(NOW, 300.0, "JP", "m-shop"), "JPY")

    # Then it is card testing, declined, said with the bound in yen and in EUR
    assert decide(explained.score, 0.5, 0.9) == "decline", explained
    assert explained.reasons[0].code == "small_amounts_1h"
    assert explained.reasons[0].message.startswith("12 charges of at most 351 JPY (2.00 EUR) in the last hour")


def test_a_routine_payment_is_scored_without_reasons_and_a_suspicious_one_alike(brain_model_dir: Path) -> None:
    model = brain_model.load(brain_model_dir)
    history = history_of(_habit(), Earlier(NOW, 25.0, "FR", "m1"))
    routine = model.explain(
        amount=25.0, currency="EUR", country="FR", merchant="m1", created_at_ms=NOW, history=history
    )
    assert routine.score < brain_model.EXPLAIN_FLOOR and routine.reasons == ()
    # The plain prediction it is scored with is the SHAP pass's own score (their sum's sigmoid)
    for amount in (25.0, 900.0):
        row = feature_vector(amount=amount, currency="EUR", country="BR", merchant="m1", created_at_ms=NOW,
                             history=history)  # fmt: skip
        contributions = model.booster.predict(np.array([row]), pred_contrib=True)[0]
        explained = model.explain(amount=amount, currency="EUR", country="BR", merchant="m1", created_at_ms=NOW,
                                  history=history)  # fmt: skip
        assert explained.score == pytest.approx(1 / (1 + math.exp(-contributions.sum())), abs=1e-9)


def _facts(earlier: list[Earlier], tx: Earlier, currency: str = "EUR") -> Facts:
    return Facts(tx.amount, currency, tx.country, tx.merchant, tx.at_ms, history_of(earlier, tx, currency))


def _alone(model: brain_model.BrainModel, facts: Facts) -> brain_model.Explained:
    return model.explain(
        amount=facts.amount,
        currency=facts.currency,
        country=facts.country,
        merchant=facts.merchant,
        created_at_ms=facts.created_at_ms,
        history=facts.history,
    )


def test_a_batch_is_explained_row_by_row_as_each_transaction_alone(brain_model_dir: Path) -> None:
    # Given the planted patterns (a first payment among them, in EUR and in JPY) interleaved with
    # routine payments of the synthetic set, most of them under the SHAP floor
    model = brain_model.load(brain_model_dir)
    planted = [_facts(*_planted(pattern)) for pattern in PATTERNS]
    planted.append(_facts([], Earlier(NOW, 1_580_000.0, "JP", "m-new"), "JPY"))
    routine = [
        Facts(r.tx.amount, r.currency, r.tx.country, r.tx.merchant, r.tx.at_ms, r.history)
        for r in generate(users=40)[:120]
        if not r.fraud
    ][:60]
    batch = [item for group in zip(routine[::2], routine[1::2], planted * 8, strict=False) for item in group]
    batch += routine[len(batch) :]

    # When it is explained in one call
    explained = model.explain_many(batch)

    # Then each row is exactly what explain gives it alone: score, reasons, their order and sentences
    assert explained == [_alone(model, facts) for facts in batch]
    floor = brain_model.EXPLAIN_FLOOR
    assert any(e.score < floor for e in explained) and sum(e.score >= floor for e in explained) >= len(planted)
    assert all(e.reasons == () for e in explained if e.score < floor)
    first = explained[batch.index(planted[PATTERNS.index("first_payment")])]
    assert first.reasons[0].code == "first_payment", first.reasons


def test_a_batch_all_above_or_all_under_the_floor_and_an_empty_one(brain_model_dir: Path) -> None:
    model = brain_model.load(brain_model_dir)
    suspicious = [_facts(*_planted(pattern)) for pattern in PATTERNS]
    routine = [_facts(_habit(), Earlier(NOW, amount, "FR", "m1")) for amount in (18.0, 25.0, 31.0)]
    for batch in (suspicious, routine, suspicious[:1], routine[:1]):
        assert model.explain_many(batch) == [_alone(model, facts) for facts in batch]
    assert all(e.reasons for e in model.explain_many(suspicious))
    assert not any(e.reasons for e in model.explain_many(routine))
    assert model.explain_many([]) == []
