"""Error classes for user-facing failures; each message says what was expected and what to do."""

__all__ = [
    "HSBIError",
    "ConfigError",
    "StoreError",
    "CorruptArtifactError",
    "DataError",
    "FitError",
    "EmptySampleWarning",
]


class HSBIError(Exception):
    """Base class of every error hsbi raises for bad input or a broken artifact."""


class ConfigError(HSBIError):
    """A configuration file, key or value is missing or invalid."""


class StoreError(HSBIError):
    """The content-addressed store cannot read or write an artifact."""


class CorruptArtifactError(StoreError):
    """An artifact's content does not match its manifest."""


class DataError(HSBIError):
    """Input data are missing, empty, non-finite or of the wrong shape."""


class FitError(HSBIError):
    """A likelihood fit cannot start or did not converge."""


class EmptySampleWarning(UserWarning):
    """A sample keeps no events (its selection removed them all): valid, but worth a look."""
