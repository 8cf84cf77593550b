"""Models of the fraud app: added by its issue."""
