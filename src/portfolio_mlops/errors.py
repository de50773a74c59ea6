"""One exception type per failure family, so callers (CLI, pipeline steps) can react precisely.

Every family carries the exit status the CLI returns for it (the contract, the same for every engine
and command): 2 for the user's input (data, configuration, options) - nothing a retry can change;
3 for infrastructure (the tracking server or store) - what a retry, or the operator, may fix.
Anything else is a bug and may show a traceback.
"""

import sys
from contextlib import contextmanager
from typing import Iterator

USER_ERROR_EXIT = 2
INFRASTRUCTURE_EXIT = 3


class PortfolioMLOpsError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = USER_ERROR_EXIT
    #: Whether running the same step again can succeed (pipeline retries are only for these).
    transient = False


class DataLayoutError(PortfolioMLOpsError):
    """The input is not in any supported layout (names what was expected)."""


class DataValidationError(PortfolioMLOpsError):
    """The input is in a known layout but its content would make numbers wrong.

    Messages name the file, the row (1-based line number in the file, header = line 1) and the field.
    """


class ConfigError(PortfolioMLOpsError):
    """A configuration file or option is invalid."""


class InsufficientDataError(PortfolioMLOpsError):
    """Too little history for the requested walk-forward schedule."""


class DegenerateInputError(PortfolioMLOpsError):
    """Valid data and configuration whose combination cannot give an honest result (too few tickers for
    the portfolio, rows far after the rest of the data, dates in the future); names the rule and the fix."""


class TrackingError(PortfolioMLOpsError):
    """MLflow tracking or the model registry failed; the message says at which stage and where."""

    exit_code = INFRASTRUCTURE_EXIT
    transient = True


class StepFailedError(PortfolioMLOpsError):
    """A pipeline step failed; the message is the step's own error line and the log's path, the exit
    status the step's (2 user input, 3 infrastructure, 1 anything else)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class PromotionError(PortfolioMLOpsError):
    """Promotion could not reach a decision (e.g. no candidates, an unknown run id)."""


class ModelInputError(PortfolioMLOpsError):
    """Rows sent to the registered portfolio model cannot give a correct answer (names the column, row or date)."""


class ModelResolutionError(PortfolioMLOpsError):
    """A models:/ URI resolves to no loadable model version; the message lists the versions that exist."""


@contextmanager
def step_errors(step: str) -> Iterator[None]:
    """For a pipeline step's body: an error of ours ends the process with its exit status and one line
    (`<step>: error (exit status N): ...`) in the step's log instead of a traceback. Bugs still trace."""
    try:
        yield
    except PortfolioMLOpsError as exc:
        print(f"{step}: error (exit status {exc.exit_code}): {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
