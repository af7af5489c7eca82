"""The one place the version is written: pyproject.toml reads it (``dynamic = ["version"]``)
and ``greenhook.__version__`` re-exports it."""

__version__ = "0.1.0"
