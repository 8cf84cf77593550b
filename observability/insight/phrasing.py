"""The words of `GET /ai/insight`: plain sentences built from the incidents' own summaries, and
an optional rephrasing by an OpenAI-compatible chat-completions endpoint (INSIGHT_LLM_URL).

Nothing depends on the LLM: it is asked with a short timeout, and any failure (refused, slow,
an answer that is not the API's shape) leaves the plain sentences. Only the findings are sent
(kind, subject, severity, the summary and its figures), never a request's data or a secret.
Its phrasing is cached per set of findings (a page refresh does not ask again), and so is a
failure, for a shorter time, so a dead endpoint costs one timeout a minute rather than one a view.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import httpx

from observability.insight.config import InsightConfig
from observability.insight.detectors import CRITICAL, WARNING

logger = logging.getLogger("sentinel.insight")

OK, DEGRADED = "ok", "degraded"
MAX_SENTENCES = 5
MAX_FINDINGS = 50  # the incidents `GET /ai/insight` lists (and phrases) at most
FAILURE_CACHE_SECONDS = 60
SYSTEM_PROMPT = (
    "You are the status line of an API gateway's operations dashboard. Rephrase the findings "
    "below for an on-call operator in at most four short plain sentences, most severe first. "
    "Keep every figure exactly as given; add no fact, advice or figure that is not in the findings."
)


def overall_status(severities: Sequence[str]) -> str:
    """`critical` if any finding is critical, `degraded` if any is a warning, else `ok`."""
    if CRITICAL in severities:
        return CRITICAL
    return DEGRADED if WARNING in severities else OK


def plain_sentences(status: str, findings: Sequence[Mapping[str, Any]]) -> list[str]:
    """A status sentence, then the findings' own summaries (most severe first, as given), at
    most MAX_SENTENCES in all, the rest counted."""
    if not findings:
        return ["All clear: no open incidents."]
    critical = sum(1 for finding in findings if finding["severity"] == CRITICAL)
    count = len(findings)
    head = f"{status.capitalize()}: {count} open incident{'s' if count != 1 else ''} ({critical} critical)."
    shown = [str(finding["summary"]) for finding in findings[: MAX_SENTENCES - 1]]
    rest = count - len(shown)
    return [head, *shown, *([f"And {rest} more."] if rest > 0 else [])]


class _Finding(Protocol):
    @property
    def severity(self) -> str: ...
    @property
    def summary(self) -> str: ...


F = TypeVar("F", bound=_Finding)


@dataclass(frozen=True)
class Overview(Generic[F]):
    """What one viewer is told about the unresolved incidents it may see, the same at
    `GET /ai/insight` and on the dashboard's insight tile: the overall `status`
    (`ok | degraded | critical`), Sentinel's plain `sentences`, the incidents they are built
    from (`findings`, the first MAX_FINDINGS) and how many are open in all."""

    status: str
    sentences: list[str]
    findings: list[F]
    open_incidents: int


def overview(incidents: Sequence[F]) -> Overview[F]:
    """The overview of `incidents` (unresolved, walled for the viewer, most severe first, as
    `observability.selectors.incidents_unresolved_for` / `incidents_unresolved_in` give them):
    the status of them all, sentences from the first MAX_FINDINGS. No LLM here: `phrase` is
    the view's, the tile runs every second."""
    status = overall_status([incident.severity for incident in incidents])
    findings = list(incidents[:MAX_FINDINGS])
    sentences = plain_sentences(status, [{"severity": f.severity, "summary": f.summary} for f in findings])
    return Overview(status, sentences, findings, len(incidents))


@dataclass(frozen=True)
class Phrasing:
    """The text to show and who wrote it: `plain` (Sentinel) or `llm`; `llm_error` says why
    the LLM's text is not used when one is configured."""

    text: str
    source: str
    llm_error: str | None = None


def findings_fingerprint(findings: Sequence[Mapping[str, Any]], model: str) -> str:
    """A cache key part for a set of findings: same kinds, subjects, severities and summaries
    (figures included), same text."""
    essence = [(f["kind"], f["subject"], f["severity"], f["summary"]) for f in findings]
    return hashlib.sha256(json.dumps([model, essence]).encode()).hexdigest()[:32]


def phrase(status: str, findings: Sequence[Mapping[str, Any]], config: InsightConfig, cache: Any) -> Phrasing:
    """The plain sentences, or the LLM's rephrasing of them when INSIGHT_LLM_URL is set and it
    answered (now or for the same findings before)."""
    plain = " ".join(plain_sentences(status, findings))
    if not config.LLM_URL or not findings:
        return Phrasing(plain, "plain")
    key = f"observability:insight:llm:{findings_fingerprint(findings, config.LLM_MODEL)}"
    cached = cache.get(key)
    if cached is None:
        cached = _ask(status, findings, config)
        cache.set(key, cached, config.LLM_CACHE_SECONDS if cached.get("text") else FAILURE_CACHE_SECONDS)
    if cached.get("text"):
        return Phrasing(str(cached["text"]), "llm")
    return Phrasing(plain, "plain", llm_error=str(cached.get("error", "unknown")))


def _ask(status: str, findings: Sequence[Mapping[str, Any]], config: InsightConfig) -> dict[str, str]:
    """{"text": ...} from the endpoint, or {"error": why}."""
    content = json.dumps(
        {
            "status": status,
            "findings": [{k: f[k] for k in ("kind", "subject", "severity", "summary", "evidence")} for f in findings],
        },
        ensure_ascii=False,
    )
    body = {
        "model": config.LLM_MODEL,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}],
        "temperature": 0.2,
        "max_tokens": 300,
    }
    headers = {"Authorization": f"Bearer {config.LLM_API_KEY}"} if config.LLM_API_KEY else {}
    try:
        response = httpx.post(
            completions_url(config.LLM_URL), json=body, headers=headers, timeout=config.LLM_TIMEOUT_SECONDS
        )
        response.raise_for_status()
        text = _answer_text(response.json())
    except httpx.TimeoutException:
        return _failed("timeout")
    except (httpx.HTTPError, ValueError) as exc:
        return _failed(f"{type(exc).__name__}: {str(exc)[:200]}")
    return {"text": text}


def _failed(error: str) -> dict[str, str]:
    logger.warning("insight LLM phrasing failed; the plain summary is used", extra={"error": error})
    return {"error": error}


def completions_url(base: str) -> str:
    """The chat-completions URL of an OpenAI-compatible base (``https://api.openai.com/v1``, or
    a server root, which gets ``/v1``); a URL that already names the endpoint is kept."""
    base = base.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def _answer_text(answer: Any) -> str:
    """The first choice's message text; ValueError for anything else (an answer of the wrong
    shape, an empty or oversized text)."""
    try:
        text = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("not a chat-completions answer") from None
    if not isinstance(text, str) or not text.strip() or len(text) > 4000:
        raise ValueError("the answer's text is empty, not text, or too long")
    return text.strip()
