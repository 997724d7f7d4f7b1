"""The one error of search parsing (invariant 7: bad input gets a clear error)."""

from __future__ import annotations

__all__ = ["SearchError"]


class SearchError(ValueError):
    """A search request the server cannot honour; the API answers 400 + OperationOutcome.

    ``param`` is the parameter as the client wrote it (``birthdate``, ``code:text``,
    ``subject:Patient.name``); the message starts with it and says what is wrong.
    """

    def __init__(self, param: str, problem: str) -> None:
        self.param = param
        self.problem = problem
        super().__init__(f"{param}: {problem}")
