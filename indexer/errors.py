"""Errors that carry a message meant for the person running the command.

The CLI prints ``str(error)`` on one line and exits non-zero; nothing else should reach the user.
"""


class LorifError(Exception):
    """Base class: a problem with the user's input or files, explained in one line."""


class ConfigError(LorifError):
    """Inconsistent or invalid build/query settings."""


class DataError(LorifError):
    """The training data or a query cannot be used."""


class ModelLoadError(LorifError):
    """The model or tokenizer cannot be loaded."""


class QueryTooLongError(DataError):
    """A query has more tokens than accepted (queries are never truncated)."""


class IndexFormatError(LorifError):
    """An index file is missing, truncated, corrupted or of an unsupported format version."""


class ResumeMismatchError(ConfigError):
    """A partial build exists for this output but was started with different settings."""
