"""Domain errors that servicers raise and the runtime maps to gRPC status codes.

Domain code imports these and nothing of gRPC: the error interceptor in
:mod:`services.runtime.interceptors` turns them into statuses, so each servicer stays a thin
protobuf-in, domain-call, protobuf-out layer.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class of errors with a well-defined status code."""

    #: Name of the grpc.StatusCode member this error maps to.
    status_name = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(DomainError):
    """Bad input. ``field`` is the path of the offending field, e.g. ``filter.categories[2]``."""

    status_name = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFoundError(DomainError):
    status_name = "NOT_FOUND"


class AlreadyExistsError(DomainError):
    status_name = "ALREADY_EXISTS"


class FailedPreconditionError(DomainError):
    status_name = "FAILED_PRECONDITION"


class OverloadedError(DomainError):
    status_name = "RESOURCE_EXHAUSTED"


class UnavailableError(DomainError):
    """Transient: the caller may retry with backoff (e.g. no model loaded yet)."""

    status_name = "UNAVAILABLE"
