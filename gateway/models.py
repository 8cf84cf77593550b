"""Models of the gateway app: added by its issue."""
