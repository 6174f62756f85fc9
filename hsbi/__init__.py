"""hsbi: neural simulation-based inference workflows for HEP (ingest, train, ensemble, infer)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
