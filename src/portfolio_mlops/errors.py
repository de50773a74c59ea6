"""One exception type per failure family, so callers (CLI, pipeline steps) can react precisely."""


class PortfolioMLOpsError(Exception):
    """Base class of every error this package raises on purpose."""


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


class TrackingError(PortfolioMLOpsError):
    """MLflow tracking or the model registry failed; the message says at which stage and where."""


class PromotionError(PortfolioMLOpsError):
    """Promotion could not reach a decision (e.g. no candidates)."""


class ModelInputError(PortfolioMLOpsError):
    """Rows sent to the registered portfolio model cannot give a correct answer (names the column, row or date)."""


class ModelResolutionError(PortfolioMLOpsError):
    """A models:/ URI resolves to no loadable model version; the message lists the versions that exist."""
