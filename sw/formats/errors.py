"""The project's own exceptions.

Every error a user can cause (bad config, bad file, bad tensor shape) is raised as a
subclass of :class:`BCQError`; the CLI prints its message on one line and exits non-zero.
"""


class BCQError(Exception):
    """Base class of every user-facing error of this project."""


class ConfigError(BCQError, ValueError):
    """A format or hardware parameter is out of its allowed range."""

    def __init__(self, field, value, allowed):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"invalid config: {field}={value!r}; allowed: {allowed}")


class ShapeError(BCQError, ValueError):
    """A tensor's shape does not fit the format."""


class FileFormatError(BCQError, ValueError):
    """A file (tensor, codebook, image) is missing, damaged or of the wrong kind."""

    def __init__(self, path, problem):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")
