"""The live dashboard: the proxy's per-second sink, the fleet store, the elected producer, the
snapshots and the built-in tiles (docs/dashboard.md)."""
