"""The insight engine's Django-free parts: the detectors (``detectors``), their configuration
(``config``) and the words of ``/ai/insight`` (``phrasing``). The database side (window
aggregates, incidents, the analysis task) lives in ``observability.selectors`` and
``observability.services``; the whole design is in docs/insight.md."""
