"""REST endpoints of the observability app (request logs, incidents, the dashboard snapshot)."""
