"""Project-wide test support (``tests.support``), outside every production package."""
