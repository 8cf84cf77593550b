"""`python manage.py train_brain [--model-dir D] [--record]` (`make train` records): trains the
fraud brain's model on the synthetic set, saves it (a running brain picks it up on restart),
prints its held-out metrics and, with --record, writes them to docs/benchmarks.md."""

from __future__ import annotations

import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from core.conf import sentinel_settings
from fraud.brain import model as brain_model
from fraud.brain.synthetic import generate

SECTION = "fraud-model"
# Calls timed for the cost of one Score (model.explain: features, pred_contrib, reasons).
TIMED_CALLS = 2000


class Command(BaseCommand):
    help = "Train the fraud brain's model, print its held-out metrics; --record writes docs/benchmarks.md."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model-dir", default=sentinel_settings.fraud.MODEL_DIR)
        parser.add_argument("--record", action="store_true", help="Write the figures to docs/benchmarks.md.")

    def handle(self, *args: Any, **options: Any) -> None:
        fraud = sentinel_settings.fraud
        model_dir = Path(options["model_dir"])
        text, meta = brain_model.train(
            review_threshold=fraud.REVIEW_THRESHOLD, decline_threshold=fraud.DECLINE_THRESHOLD
        )
        meta = brain_model.save(model_dir, text, meta, replace=True)
        loaded = brain_model.load(model_dir)
        meta["metrics"]["score_call_us"] = round(_score_call_us(loaded), 1)
        lines = _summary(meta, model_dir)
        self.stdout.write("\n".join(lines))
        if options["record"]:
            path = Path(settings.BASE_DIR) / "docs" / "benchmarks.md"
            _write_section(path, _section(meta))
            self.stdout.write(f"written to {path}")


def _score_call_us(model: brain_model.BrainModel) -> float:
    """Mean µs of one `explain` call (what a Score call costs the model) over TIMED_CALLS
    transactions of the synthetic set."""
    rows = generate(users=60)[:TIMED_CALLS]
    started = time.perf_counter()
    for r in rows:
        model.explain(
            amount=r.tx.amount,
            currency="EUR",
            country=r.tx.country,
            merchant=r.tx.merchant,
            created_at_ms=r.tx.at_ms,
            history=r.history,
        )
    return (time.perf_counter() - started) / len(rows) * 1e6


def _summary(meta: dict[str, Any], model_dir: Path) -> list[str]:
    m = meta["metrics"]
    return [
        f"model {meta['version']} saved to {model_dir}",
        f"rows {meta['rows']} (train {m['train_rows']}, held out {m['test_rows']}), fraud rate {m['fraud_rate']:.2%}",
        f"ROC AUC {m['roc_auc']:.4f} (held-out users)",
        f"at review  >= {m['review_threshold']}: precision {m['review']['precision']:.4f}, "
        f"recall {m['review']['recall']:.4f}",
        f"at decline >= {m['decline_threshold']}: precision {m['decline']['precision']:.4f}, "
        f"recall {m['decline']['recall']:.4f}",
        f"trained in {m['seconds']:.1f} s; one Score (features + pred_contrib + reasons) {m['score_call_us']:.0f} µs",
    ]


def _section(meta: dict[str, Any]) -> str:
    m = meta["metrics"]
    git = ["git", "-C", str(settings.BASE_DIR), "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True, check=False)  # noqa: S603 - fixed arguments
    rows = [
        ("model version", meta["version"]),
        ("rows (train / held out)", f"{meta['rows']:,} ({m['train_rows']:,} / {m['test_rows']:,})"),
        ("fraud rate", f"{m['fraud_rate']:.2%}"),
        ("ROC AUC (held-out users)", f"{m['roc_auc']:.4f}"),
        (f"precision / recall at review (>= {m['review_threshold']})", _pr(m["review"])),
        (f"precision / recall at decline (>= {m['decline_threshold']})", _pr(m["decline"])),
        ("training time (s, one core)", f"{m['seconds']:.1f}"),
        ("one Score call in-process (µs)", f"{m['score_call_us']:.0f}"),
    ]
    table = "\n".join(["| figure | value |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows)])
    return (
        f"<!-- bench:{SECTION}:start -->\n"
        "## Fraud brain: the model (`make train`)\n\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {commit.stdout.strip() or 'unknown'}, "
        f"Python {platform.python_version()}; `python manage.py train_brain --record`. LightGBM "
        f"({meta['params']['num_leaves']} leaves, seed {meta['seed']}) on the synthetic set of "
        "`fraud/brain/synthetic.py`, evaluated on the 20 % of users held out of training.\n\n"
        f"{table}\n"
        f"<!-- bench:{SECTION}:end -->"
    )


def _pr(figures: dict[str, float]) -> str:
    return f"{figures['precision']:.4f} / {figures['recall']:.4f}"


def _write_section(path: Path, section: str) -> None:
    """bench.common.cli.write_section's rule (production code may not import bench/): replaces
    the section between its markers, or appends it; the rest of the file stays as it was."""
    start_mark, end_mark = f"<!-- bench:{SECTION}:start -->", f"<!-- bench:{SECTION}:end -->"
    text = path.read_text()
    start, end = text.find(start_mark), text.find(end_mark)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(end_mark) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
