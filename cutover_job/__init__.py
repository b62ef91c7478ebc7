"""The job side of the cutover contract (version ``CONTRACT_VERSION``): read the assignment a job
was started with, work its conversions, and write one result per conversion.

Standard library only; boto3 is imported when an ``s3://`` location is first used. Usage::

    import cutover_job

    assignment = cutover_job.from_env()
    assignment.work(lambda conversion: cutover_job.Outcome.succeeded(convert(conversion)))
"""

from cutover_job.assignment import Assignment, Conversion, Outcome, from_env
from cutover_job.contract import (
    CONTRACT_VERSION,
    CONVERSION_ID_PATTERN,
    Env,
    ManifestEntry,
    Result,
    Shape,
    Status,
    manifest_document,
    manifest_entry,
    parse_result,
    valid_conversion_id,
)
from cutover_job.errors import (
    ArrayIndexError,
    AssignmentError,
    JobContractError,
    ManifestError,
    NotAssignedError,
    QuarantineError,
    ResultWriteError,
)

__all__ = [
    "CONTRACT_VERSION",
    "CONVERSION_ID_PATTERN",
    "ArrayIndexError",
    "Assignment",
    "AssignmentError",
    "Conversion",
    "Env",
    "JobContractError",
    "ManifestEntry",
    "ManifestError",
    "NotAssignedError",
    "Outcome",
    "QuarantineError",
    "Result",
    "ResultWriteError",
    "Shape",
    "Status",
    "from_env",
    "manifest_document",
    "manifest_entry",
    "parse_result",
    "valid_conversion_id",
]
