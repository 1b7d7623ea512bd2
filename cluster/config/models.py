"""Which depth models depthmill serves, under which licence, and the rule that keeps the
non-commercial ones off unless asked for: plain strings, no torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.config.settings import Settings

# Depth Anything V2 Small is Apache-2.0; Base and Large are CC-BY-NC-4.0 (their model cards).
NONCOMMERCIAL = "CC-BY-NC-4.0"
KNOWN_LICENCES = {
    "depth-anything/depth-anything-v2-small-hf": "Apache-2.0",
    "depth-anything/depth-anything-v2-base-hf": NONCOMMERCIAL,
    "depth-anything/depth-anything-v2-large-hf": NONCOMMERCIAL,
}
TINY_LICENCE = "none: random weights, not a real depth estimate"
TINY = "tiny"
# Seeds torch.manual_seed takes from every platform's default generator.
MAX_TINY_SEED = 2**32 - 1


class BadModelName(ValueError):
    """A model name depthmill cannot read (a ``tiny`` variant with no whole-number seed)."""


def tiny_seed(model: str) -> int | None:
    """The seed of a ``tiny`` model: ``tiny`` is seed 0, ``tiny:N`` seed N (a second random
    model, for tests of several models without downloads); None for any other model."""
    if model == TINY:
        return 0
    if not model.startswith(TINY + ":"):
        return None
    seed = model.removeprefix(TINY + ":")
    if not seed.isdigit() or int(seed) > MAX_TINY_SEED:
        raise BadModelName(f"{model!r}: a tiny variant is tiny:SEED, SEED a whole number from 0 "
                           f"to {MAX_TINY_SEED} (e.g. tiny:2)")
    return int(seed)


def licence_of(model: str) -> str | None:
    """The model's licence, where depthmill knows it; None for other ids and local directories
    (their model card says)."""
    if tiny_seed(model) is not None:
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

    def __init__(self, model: str, served: Sequence[str], *, default: bool = False) -> None:
        self.model, self.served = model, list(served)
        names = ", ".join(repr(m) for m in self.served)
        if default:  # the settings contradict themselves
            super().__init__(f"DEPTHMILL_MODEL {model!r}, the model of items that name none, is "
                             f"not among DEPTHMILL_MODELS ({names}): add it there, or set "
                             "DEPTHMILL_MODEL to one of them")
        else:
            super().__init__(f"model {model!r} is not served here; served: {names}")


def served_models(settings: Settings) -> list[str]:
    """Every model the depth deployment serves: DEPTHMILL_MODELS, or DEPTHMILL_MODEL alone."""
    return list(settings.models) or [settings.model]


def check_models(settings: Settings) -> None:
    """What the settings validator and ``depthmill up`` (whose ``--model`` skips validation)
    both check: every served model's name reads and its licence allows it, and the default
    model (DEPTHMILL_MODEL, for items that name none) is among them."""
    served = served_models(settings)
    for model in served:
        tiny_seed(model)
        check_licence(model, settings.allow_noncommercial_models)
    if len(set(served)) != len(served):
        raise BadModelName(f"DEPTHMILL_MODELS names a model twice: {', '.join(served)}")
    if settings.model not in served:
        raise ModelNotServed(settings.model, served, default=True)


def check_served(wanted: str | None, served: Sequence[str], default: str | None = None) -> str:
    """The model a request names, or the default (else the first served one) when it names
    none."""
    if wanted is None:
        return default if default is not None else served[0]
    if wanted not in served:
        raise ModelNotServed(wanted, tuple(served))
    return wanted
