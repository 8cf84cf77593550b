"""The suite's shared fixtures live in ``tests/support/`` (outside every production package):
the cast of users and API clients (``cast``), and the plugin's settings, processes and Redis
isolation (``plugin``)."""

pytest_plugins = ["tests.support.plugin", "tests.support.cast", "tests.support.brain"]
