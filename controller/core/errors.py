"""The one error tree of cutover.

CutoverError
 ├── ConfigError             configuration is missing or malformed (raised at start)
 ├── InputError              a request, command argument or file from a user is malformed
 ├── NotFoundError           a conversion or resource that was asked for does not exist
 ├── ConflictError           the operation does not fit the record's current state
 │    └── GateRefusedError    an advance is held back by a rollout group failing or unjudged
 ├── LedgerError             the ledger store did not answer or refused a write
 ├── BackendError            an execution path did not do what was asked
 │    ├── SubmitRejectedError    the backend refused a submission: nothing was started
 │    └── BackendUnavailableError the outcome is unknown (timeout, 5xx): something may have started
 └── FlagError               the feature flag could not be used
      ├── FlagUnavailableError   the flag source did not answer (transient)
      │    └── FlagNotDeployedError the source answered, but no flag version is deployed there yet
      ├── FlagInvalidError       the flag source answered with a document that is rejected whole
      │    └── FlagRecordError     the persisted last-known-good record cannot be read back
      └── FlagDeploymentError    a flag deployment ended without completing (rolled back, reverted)

``transient`` tells the one place that retries whether trying again can help.
"""

from __future__ import annotations


class CutoverError(Exception):
    """Base of every error cutover raises on purpose."""

    transient: bool = False


class ConfigError(CutoverError):
    """Raised at start when a setting is missing or malformed; the message names the variable."""


class InputError(CutoverError):
    """Raised when user input (HTTP body, CLI argument, plan file) is malformed; nothing is applied."""


class NotFoundError(CutoverError):
    """Raised when a conversion, tenant or version that was asked for does not exist."""


class ConflictError(CutoverError):
    """Raised when an operation does not fit the current state (e.g. requeue of a running conversion)."""


class GateRefusedError(ConflictError):
    """Raised when an advance is refused because a group already moved is failing or inconclusive."""


class LedgerError(CutoverError):
    """Raised when the ledger store cannot be reached or refuses a write."""

    transient = True


class BackendError(CutoverError):
    """Raised when an execution path fails to do what was asked."""

    transient = True


class SubmitRejectedError(BackendError):
    """Raised when a backend refuses a submission outright: nothing was started, resubmitting is safe."""


class BackendUnavailableError(BackendError):
    """Raised when a backend call's outcome is unknown: work may have started, reconcile first."""


class FlagError(CutoverError):
    """Base of the flag source's errors."""


class FlagUnavailableError(FlagError):
    """Raised when the flag source cannot be reached or has nothing deployed yet."""

    transient = True


class FlagNotDeployedError(FlagUnavailableError):
    """Raised when the flag source answers but has no flag version deployed yet (agent 404)."""


class FlagInvalidError(FlagError):
    """Raised when the flag document is malformed; the message names the first bad value."""


class FlagRecordError(FlagInvalidError):
    """Raised when the persisted last-known-good record cannot be read back; ``record`` holds it."""

    def __init__(self, message: str, record: str) -> None:
        super().__init__(message)
        self.record = record


class FlagDeploymentError(FlagError):
    """Raised when a flag deployment ends without completing: AppConfig rolled it back or reverted it."""


# The names DESIGN.md gives the flag port's errors.
FlagUnavailable = FlagUnavailableError
FlagInvalid = FlagInvalidError
