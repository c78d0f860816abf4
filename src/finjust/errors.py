"""Every error finjust raises on purpose, in one tree.

    FinjustError                 base: the CLI prints its message on one line, exits 2
    ├── RecipeError              a recipe with one or more problems (all listed at once)
    ├── UnknownNameError         a registry was asked for a name it does not hold
    ├── DataError                a data file that cannot be used (names file, line, field)
    ├── ModelLoadError           a model that cannot be found or loaded
    ├── MethodError              a fine-tuning method that cannot be applied, saved or merged
    ├── CheckpointError          a run folder or checkpoint that cannot be resumed or read
    ├── EvaluationError          a scorecard that cannot be computed
    ├── ExportError              an export that cannot be written or fails its parity check
    ├── FolderBusyError          an output folder another finjust process is working in
    ├── CompileError             train.compile cannot build its kernels on this machine
    ├── SettingError             an environment variable set to a value finjust cannot use
    └── ServeError               a request finjust serve refuses (carries its HTTP status)

Library code raises these and never prints or exits; the message says what was given,
what was expected and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable


class FinjustError(Exception):
    """Base class of every error finjust raises deliberately."""


class RecipeError(FinjustError):
    """A recipe with problems; ``problems`` holds each one, the message lists them all."""

    def __init__(self, problems: Iterable[str], source: str = "recipe") -> None:
        self.problems = list(problems)
        self.source = source
        listed = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source}: {count} {noun}:\n{listed}")


class UnknownNameError(FinjustError):
    """A registry lookup for a name that is not registered."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}")


class DataError(FinjustError):
    """A data file or record that cannot be used."""

    def __init__(
        self, message: str, path: str | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        self.path, self.line, self.field, self.detail = path, line, field, message
        where = path or ""
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f" field {field!r}"
        super().__init__(f"{where}: {message}" if where else message)


class ModelLoadError(FinjustError):
    """A model that cannot be found or loaded."""


class MethodError(FinjustError):
    """A fine-tuning method that cannot be applied, saved, loaded or merged."""


class CheckpointError(FinjustError):
    """A run folder or checkpoint that cannot be resumed or read."""


class EvaluationError(FinjustError):
    """A scorecard or metric that cannot be computed."""


class ExportError(FinjustError):
    """An export that cannot be written, or whose artifact fails its parity check against the trained model.

    ``result``: for a failed parity check, what export.json would have held (the parity report
    included), though nothing was written; None otherwise.
    """

    result: dict | None = None


class FolderBusyError(FinjustError):
    """An output folder (a run, an export) another finjust process is working in."""


class CompileError(FinjustError):
    """``train.compile`` asked for compiled steps and torch.compile cannot build them on this machine."""


class SettingError(FinjustError):
    """An environment variable finjust reads, set to a value it cannot use."""


class ServeError(FinjustError):
    """A request the server refuses, answered as OpenAI's error JSON with ``status``.

    ``kind`` is OpenAI's error ``type`` (``invalid_request_error``, ``authentication_error``,
    ``server_error``), ``param`` the request field at fault and ``code`` a short machine name.
    """

    def __init__(
        self, message: str, status: int = 400, param: str | None = None, code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:  # fmt: skip
        self.status, self.param, self.code, self.kind = status, param, code, kind
        super().__init__(message)
