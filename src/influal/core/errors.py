"""The package's exception hierarchy.

Every error a user can cause is an :class:`InflualError` whose message says what to change. The CLI
prints it as one line on stderr and exits with status 2; it never shows a traceback for these.
"""


class InflualError(Exception):
    """Base class of every error influal raises on purpose."""


class ConfigError(InflualError, ValueError):
    """A setting is missing, out of range or inconsistent with another one."""


class DataError(InflualError):
    """A dataset could not be found, read or understood."""


class StateError(InflualError):
    """A results folder or saved state does not fit the requested experiment."""


class SolverError(InflualError, ArithmeticError):
    """An inverse-Hessian-vector solver diverged or produced non-finite values."""


class TrainingDiverged(InflualError):
    """The training loss became NaN or infinite."""


class DataWarning(UserWarning):
    """The data set was usable but not as given: something was left out or looks like a mistake."""


class SolverWarning(UserWarning):
    """A solver returned a result it could not vouch for: it stopped before converging, met divergence it was
    told to tolerate (``on_divergence="warn"``), or solved a more damped system than the one asked for."""
