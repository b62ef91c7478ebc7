"""What can go wrong when a job takes up its assignment or writes back; every message names the
variable, URI or conversion at fault."""

from __future__ import annotations


class JobContractError(Exception):
    """Base of the job helper's errors."""


class AssignmentError(JobContractError):
    """The environment does not describe a valid assignment (a variable missing or malformed)."""


class ManifestError(AssignmentError):
    """The manifest is missing, unreadable, not a valid manifest, or of an unknown contract."""


class ArrayIndexError(AssignmentError):
    """``AWS_BATCH_JOB_ARRAY_INDEX`` (plus the offset) points past the manifest's conversions."""


class NotAssignedError(JobContractError):
    """A result for a conversion this job does not own; nothing was written."""


class ResultWriteError(JobContractError):
    """A result could not be written."""


class QuarantineError(ResultWriteError):
    """A shadow run named an output outside its quarantine; nothing was written."""
