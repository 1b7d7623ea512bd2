"""Which depth models depthmill serves, under which licence, and the rule that keeps the
non-commercial ones off unless asked for: plain strings, no torch."""

from __future__ import annotations

from collections.abc import Sequence

# Depth Anything V2 Small is Apache-2.0; Base and Large are CC-BY-NC-4.0 (their model cards).
NONCOMMERCIAL = "CC-BY-NC-4.0"
KNOWN_LICENCES = {
    "depth-anything/depth-anything-v2-small-hf": "Apache-2.0",
    "depth-anything/depth-anything-v2-base-hf": NONCOMMERCIAL,
    "depth-anything/depth-anything-v2-large-hf": NONCOMMERCIAL,
}
TINY_LICENCE = "none: random weights, not a real depth estimate"


def licence_of(model: str) -> str | None:
    """The model's licence, where depthmill knows it; None for other ids and local directories
    (their model card says)."""
    if model == "tiny":
        return TINY_LICENCE
    return KNOWN_LICENCES.get(model.lower())


class ModelNotAllowed(ValueError):
    """A model whose licence needs the operator's explicit consent."""


def check_licence(model: str, allow_noncommercial: bool) -> None:
    if licence_of(model) == NONCOMMERCIAL and not allow_noncommercial:
        raise ModelNotAllowed(
            f"{model} is licensed {NONCOMMERCIAL} (non-commercial use only); set "
            "DEPTHMILL_ALLOW_NONCOMMERCIAL_MODELS=true to serve it, or use "
            "depth-anything/Depth-Anything-V2-Small-hf (Apache-2.0)")


class ModelNotServed(ValueError):
    """A request for a model no depth deployment here serves: work queued for it would never
    be claimed."""

    def __init__(self, model: str, served: Sequence[str]) -> None:
        self.model, self.served = model, list(served)
        names = ", ".join(repr(m) for m in self.served)
        super().__init__(f"model {model!r} is not served here; served: {names}")


def served_models(model: str) -> list[str]:
    """Every model the depth deployment serves (one today: DEPTHMILL_MODEL)."""
    return [model]


def check_served(wanted: str | None, served: Sequence[str]) -> str:
    """The model a request names, or the first served one when it names none."""
    if wanted is None:
        return served[0]
    if wanted not in served:
        raise ModelNotServed(wanted, tuple(served))
    return wanted
