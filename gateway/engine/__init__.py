"""The proxy's hot path: plain async Python that imports nothing from Django."""
