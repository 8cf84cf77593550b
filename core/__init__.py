"""Sentinel's ground floor: helpers that import no Sentinel app (see docs/architecture.md, issue 9)."""
