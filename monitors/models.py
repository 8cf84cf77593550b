"""Models of the monitors app: added by its issue."""
