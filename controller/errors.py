"""The controller's error hierarchy. HTTP status codes are assigned only at the edge
(``controller.http.errors``); everything below raises these.

    ControllerError
    ├── NotFound            the named flag, rollout or token does not exist
    ├── Invalid             the input is malformed; ``problems`` names each field
    ├── Conflict            the request does not fit the current state
    │   ├── VersionConflict a compare-and-swap lost: reload and retry
    │   ├── AlreadyExists   the name is taken; ``problems`` names the field
    │   └── Refused         the action is not allowed from this state (reason given)
    ├── Unauthorized        no token, or an unknown or revoked one
    ├── Forbidden           the token's role may not do this
    └── Busy                too many such requests at once: try again shortly
"""

from __future__ import annotations


class ControllerError(Exception):
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ControllerError):
    code = "not_found"


class Invalid(ControllerError):
    code = "invalid"

    def __init__(self, message: str, problems: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class Conflict(ControllerError):
    code = "conflict"


class VersionConflict(Conflict):
    code = "version_conflict"

    def __init__(self, message: str, current_version: int | None = None) -> None:
        super().__init__(message)
        self.current_version = current_version


class AlreadyExists(Conflict):
    code = "already_exists"

    def __init__(self, message: str, *, field: str, problem: str) -> None:
        super().__init__(message)
        self.problems: list[dict[str, object]] = [{"field": field, "message": problem}]


class Refused(Conflict):
    code = "action_refused"


class Unauthorized(ControllerError):
    code = "unauthorized"


class Forbidden(ControllerError):
    code = "forbidden"


class Busy(ControllerError):
    code = "busy"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
