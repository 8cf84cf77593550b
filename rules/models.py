"""Models of the rules app: added by its issue."""
