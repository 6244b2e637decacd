"""Expected failures. The CLI prints ``str(error)`` on one line and exits 1."""

from __future__ import annotations


class PeftbenchError(Exception):
    """A user-facing failure: what went wrong, where, and how to fix it."""

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix
        super().__init__(what if not fix else f"{what} -- {fix}")


class ConfigError(PeftbenchError):
    """A bad option, `--set` value or suite file."""


class UnknownComponentError(ConfigError):
    """A method, task or backbone name nobody registered."""


class RegistryError(PeftbenchError):
    """Two plugins registered the same name, or a plugin is malformed."""


class DataError(PeftbenchError):
    """Data missing, empty or not in the expected layout."""


class BackboneError(PeftbenchError):
    """Model weights or tokenizer cannot be had."""


class TrainingError(PeftbenchError):
    """Training diverged (NaN loss) or could not proceed."""


class ResultsError(PeftbenchError):
    """The results folder cannot be written or holds unreadable records."""


class Terminated(KeyboardInterrupt):
    """SIGTERM reached a run: a scheduler's time limit or preemption, or `kill`. Handled like
    Ctrl-C (the record says cancelled, so the next `suite run` runs it again)."""

    received = False  # set by the handler: libraries may re-raise it as a plain KeyboardInterrupt


class Interrupted:
    """Whether Ctrl-C reached this run. Python drops a KeyboardInterrupt raised while a finaliser
    runs ("Exception ignored in ... __del__"), so the run's handler also sets this flag and the
    trainer raises the interrupt again between steps: a run that was told to stop always stops."""

    requested = False


def raise_if_interrupted() -> None:
    if Terminated.received:
        raise Terminated()
    if Interrupted.requested:
        raise KeyboardInterrupt()
