"""Errors that carry a stable machine-readable code and a message a user can act on.

The service maps each class to an HTTP status and an RFC 9457 problem document; the CLI
prints the message and exits non-zero.  Nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable


class SnnconvError(Exception):
    """Base class: ``code`` is a short slug, ``str(err)`` the human explanation."""

    code = "snnconv-error"
    title = "snnconv error"

    def __init_subclass__(cls, code: str | None = None, title: str | None = None, **kwargs):
        """``class X(SnnconvError, code=..., title=...)``: each error states its slug once."""
        super().__init_subclass__(**kwargs)
        cls.code = code or cls.code
        cls.title = title or cls.title

    def __init__(self, message: str, *, code: str | None = None, details: dict | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details = details or {}

    @property
    def message(self) -> str:
        return str(self)


class ModelRejected(SnnconvError, code="model-rejected", title="Model file rejected"):
    """The uploaded file is not a model we will load (hostile, malformed or unsupported format)."""


class TooLarge(ModelRejected, code="too-large"):
    """The upload, or the data a model file declares, is over a size limit (HTTP 413)."""


class UnsupportedModel(SnnconvError, code="unsupported-model", title="Model cannot be converted"):
    """The model loaded but cannot be converted (e.g. unsupported ops, no activations)."""


class DatasetUnavailable(SnnconvError, code="dataset-unavailable", title="Dataset not available"):
    """A dataset is unknown or its files are missing from the data directory."""


class InvalidSpec(SnnconvError, code="invalid-spec", title="Invalid job specification"):
    """A job specification is inconsistent with the model or dataset."""


class JobCancelled(SnnconvError, code="job-cancelled", title="Job cancelled"):
    """Raised by a progress callback to stop a running job cooperatively."""


def one_line(message: object, limit: int = 500) -> str:
    """``message`` on one line, at most ``limit`` characters: for a CLI error line or a
    problem's ``detail``, where a multi-line message would read like a traceback."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def rectifier_advice(kinds: Iterable[str]) -> str:
    """The sentence that tells the user what to change for the activations ``kinds``."""
    names = "/".join(sorted(set(kinds))) or "the activations"
    return (f"replace {names} with ReLU (or ReLU6 / clamp(0, m)) and fine-tune: spiking "
            "integrate-and-fire neurons only represent non-negative, monotone, piecewise-linear "
            "rectifiers")
