"""How a depth model is loaded: the settings that matter to the core, as plain data that pickles
into a Serve replica or a Ray Data actor. Importing this module does not import torch."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.config.settings import Settings

if TYPE_CHECKING:
    from cluster.model.core import DepthEstimator


@dataclass(frozen=True)
class ModelOptions:
    """How each replica loads the core; plain data so it pickles into the replica."""

    model: str
    revision: str | None
    cache_dir: str
    device: str
    dtype: str
    compile: bool
    max_batch_size: int | None

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelOptions:
        return cls(
            model=settings.model, revision=settings.model_revision,
            cache_dir=str(settings.model_cache_dir), device=settings.device,
            dtype=settings.dtype, compile=settings.torch_compile,
            max_batch_size=settings.model_batch_size,
        )

    def for_model(self, model: str) -> ModelOptions:
        """The same options for another served model; the pinned revision is this model's."""
        if model == self.model:
            return self
        return replace(self, model=model, revision=None)

    def load(self) -> DepthEstimator:
        from cluster.model.core import DepthEstimator  # torch: only where the model runs

        return DepthEstimator(
            self.model, revision=self.revision, cache_dir=Path(self.cache_dir), device=self.device,
            dtype=self.dtype, compile=self.compile, max_batch_size=self.max_batch_size,
        )
