"""The depth-model core, once: load, preprocess, infer, postprocess.

The Serve deployment (``serve_app.depth_deployment``) and the Ray Data stage
(``pipelines.reprocess``) are thin wrappers around :class:`DepthEstimator`. It knows nothing of Ray.

Preprocessing follows the transformers DPT processor that Depth Anything ships with (keep the
aspect ratio, scale as little as possible so one side reaches 518, both sides multiples of 14,
bicubic, ImageNet normalisation) but runs batched in torch on the model's device, grouping images
of equal target shape into one forward pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cluster.config.models import tiny_seed
from cluster.model.contract import INPUT_SIZE, PATCH, DepthResult, target_size

log = logging.getLogger(__name__)

TINY = "tiny"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Depth Anything V2 shapes (the real checkpoints' configs), for benchmarks without weights.
ARCHITECTURES: dict[str, dict] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, out_indices=[1, 2, 3, 4],
                 neck_hidden_sizes=[8, 16, 32, 64], fusion_hidden_size=16, head_hidden_size=8),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                  out_indices=[3, 6, 9, 12], neck_hidden_sizes=[48, 96, 192, 384],
                  fusion_hidden_size=64, head_hidden_size=32),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 out_indices=[3, 6, 9, 12], neck_hidden_sizes=[96, 192, 384, 768],
                 fusion_hidden_size=128, head_hidden_size=32),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  out_indices=[5, 12, 18, 24], neck_hidden_sizes=[256, 512, 1024, 1024],
                  fusion_hidden_size=256, head_hidden_size=32),
}


class ModelLoadError(RuntimeError):
    """The model could not be loaded (unknown id, no network, broken directory)."""


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    revision: str | None
    source: str  # "hub", "directory" or "random weights"
    device: str
    dtype: str
    parameters: int
    compiled: bool
    real_estimate: bool  # False for random weights: the output is not a depth estimate

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------- loading


def build_random_model(architecture: str, seed: int = 0):
    """A Depth Anything V2 model with random weights in the shape of ``architecture``. Seeded, so
    every process (Serve replicas, Ray Data actors, tests) builds identical weights."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    shape = dict(ARCHITECTURES[architecture])
    neck = shape.pop("neck_hidden_sizes")
    fusion = shape.pop("fusion_hidden_size")
    head = shape.pop("head_hidden_size")
    out_indices = shape.pop("out_indices")
    backbone = Dinov2Config(
        image_size=INPUT_SIZE, patch_size=PATCH, reshape_hidden_states=False,
        out_features=[f"stage{i}" for i in out_indices], **shape,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, patch_size=PATCH, reassemble_hidden_size=shape["hidden_size"],
        neck_hidden_sizes=neck, fusion_hidden_size=fusion, head_hidden_size=head,
    )
    torch.manual_seed(seed)
    return DepthAnythingForDepthEstimation(config).eval()


def _image_processor():
    # The PIL backend: the same processing without requiring torchvision.
    from transformers import DPTImageProcessorPil

    return DPTImageProcessorPil(
        do_resize=True, size={"height": INPUT_SIZE, "width": INPUT_SIZE}, keep_aspect_ratio=True,
        ensure_multiple_of=PATCH, resample=3, do_rescale=True, do_normalize=True,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), do_pad=False,
    )


def tiny_model_dir(cache_dir: Path, seed: int = 0) -> Path:
    """Build the ``tiny`` model of ``seed`` once, save it with ``save_pretrained`` (and its
    processor), and return the directory; loading then goes through the same code path as a
    real checkpoint."""
    import transformers

    identity: list = [ARCHITECTURES["tiny"], transformers.__version__, torch.__version__]
    if seed:  # seed 0 keeps the directory it had before there were other seeds
        identity.append(seed)
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:12]
    target = cache_dir / f"tiny-{key}"
    if (target / "config.json").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".tiny-"))
    try:
        build_random_model("tiny", seed).save_pretrained(staging)
        _image_processor().save_pretrained(staging)
        (staging / "DEPTHMILL_RANDOM_WEIGHTS").write_text("not a real depth model\n")
        try:
            os.rename(staging, target)  # atomic; a concurrent builder may have won
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model(spec: str, cache_dir: Path) -> tuple[str, str]:
    """(what to pass to from_pretrained, source) for a model id, a directory, ``tiny`` or
    ``tiny:SEED``."""
    if (seed := tiny_seed(spec)) is not None:
        return str(tiny_model_dir(cache_dir, seed)), "random weights"
    if Path(spec).expanduser().is_dir():
        return str(Path(spec).expanduser()), "directory"
    return spec, "hub"


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


# ---------------------------------------------------------------------------------- preprocess


def image_size(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(height, width) of an H×W×3 array or a 3×H×W tensor."""
    return tuple(image.shape[-2:]) if isinstance(image, torch.Tensor) else image.shape[:2]


def check_image(image: object) -> np.ndarray | torch.Tensor:
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(
                f"expected a 3×H×W uint8 tensor, got {image.dtype} {tuple(image.shape)}")
        if min(image.shape[1:]) < 2:
            raise ValueError(f"image too small: {image.shape[2]}×{image.shape[1]}")
        return image
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an H×W×3 uint8 array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 array, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if min(image.shape[:2]) < 2:
        raise ValueError(f"image too small: {image.shape[1]}×{image.shape[0]}")
    return image


# ------------------------------------------------------------------------------------ the model


class DepthEstimator:
    """Load once, then ``predict`` lists of decoded RGB images (H×W×3 uint8 arrays, or 3×H×W
    uint8 tensors on the model's device)."""

    def __init__(
        self,
        model: str = TINY,
        *,
        revision: str | None = None,
        cache_dir: Path | None = None,
        device: str = "auto",
        dtype: str = "auto",
        compile: bool = False,
        max_batch_size: int | None = None,
    ) -> None:
        from transformers import AutoModelForDepthEstimation

        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        # A GPU needs batches to be kept busy; a CPU gains nothing from them: one image already
        # keeps a core busy, and a batch's activations outgrow the caches, so each image of a
        # batch costs more than one alone.
        self.max_batch_size = max_batch_size or (1 if self.device.type == "cpu" else 32)
        cache_dir = cache_dir or Path(tempfile.gettempdir()) / "depthmill-models"
        location, source = resolve_model(model, cache_dir)
        try:
            net = AutoModelForDepthEstimation.from_pretrained(
                location, revision=revision if source == "hub" else None, dtype=self.dtype
            )
        except Exception as e:  # transformers raises OSError, ValueError, HTTP errors, …
            raise ModelLoadError(f"could not load depth model {model!r}: {e}") from e
        self.net = net.to(self.device).eval()
        self.forward = torch.compile(self.net) if compile else self.net
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        if source == "directory" and (Path(location) / "DEPTHMILL_RANDOM_WEIGHTS").exists():
            source = "random weights"
        self.info = ModelInfo(
            model_id=model,
            revision=revision,
            source=source,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            parameters=sum(p.numel() for p in self.net.parameters()),
            compiled=compile,
            real_estimate=source != "random weights",
        )
        if not self.info.real_estimate:
            log.warning("depth model %r has random weights: its output is not a depth estimate", model)

    # The batch is grouped by target shape; each group runs in chunks of max_batch_size.
    @torch.inference_mode()
    def predict(
        self,
        images: Sequence[np.ndarray | torch.Tensor],
        output_sizes: Sequence[tuple[int, int] | None] | None = None,
    ) -> list[DepthResult]:
        """Depth for each image at its ``output_sizes`` entry (height, width; default: the input
        size). An image is an H×W×3 uint8 array, or a 3×H×W uint8 tensor already on the model's
        device (decoded there: :mod:`cluster.model.photos`). A bad image fails alone; the rest
        of the batch still gets its results."""
        results: list[DepthResult | None] = [None] * len(images)
        output_sizes = output_sizes or [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            try:
                check_image(image)
            except ValueError as e:
                results[i] = DepthResult(None, error=str(e))
                continue
            groups[target_size(*image_size(image))].append(i)
        for shape, indices in groups.items():
            for start in range(0, len(indices), self.max_batch_size):
                chunk = indices[start : start + self.max_batch_size]
                for i, result in zip(chunk, self._run_isolated(images, chunk, shape, output_sizes)):
                    results[i] = result
        return results  # type: ignore[return-value]

    def _run_isolated(self, images, chunk, shape, output_sizes) -> list[DepthResult]:
        try:
            return self._run(images, chunk, shape, output_sizes)
        except Exception as e:
            if len(chunk) == 1:
                return [DepthResult(None, error=f"depth inference failed: {e}")]
            if not _is_out_of_memory(e):
                log.warning("batch of %d failed (%s); retrying its items one by one", len(chunk), e)
                return [r for i in chunk for r in self._run_isolated(images, [i], shape, output_sizes)]
            # Out of memory: halve the batch and try again (the halves may well fit).
            log.warning("out of memory at batch %d; splitting", len(chunk))
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(chunk) // 2
            return self._run_isolated(images, chunk[:half], shape, output_sizes) + \
                self._run_isolated(images, chunk[half:], shape, output_sizes)

    def _run(self, images, chunk, shape, output_sizes) -> list[DepthResult]:
        batch = self.preprocess([images[i] for i in chunk], shape)
        predicted = self.forward(pixel_values=batch).predicted_depth  # (B, h, w)
        out = []
        for row, i in enumerate(chunk):
            size = output_sizes[i] or image_size(images[i])
            depth = self.postprocess(predicted[row], size)
            out.append(DepthResult(depth, float(depth.min()), float(depth.max()),
                                   revision=self.info.revision))
        return out

    def preprocess(self, images: Sequence[np.ndarray | torch.Tensor],
                   shape: tuple[int, int]) -> torch.Tensor:
        """uint8 images (H×W×3 arrays or 3×H×W tensors) → a normalised (B, 3, h, w) batch on the
        model's device."""
        arrays = all(isinstance(im, np.ndarray) for im in images)
        if arrays and len({im.shape for im in images}) == 1:
            # One host-to-device copy for the whole batch.
            pixels = torch.from_numpy(np.stack(images)).to(self.device, non_blocking=True)
            resized = _resize(pixels.permute(0, 3, 1, 2).float(), shape)
        else:
            resized = torch.cat([_resize(self._pixels(im)[None].float(), shape) for im in images])
        resized = resized.clamp_(0, 255).div_(255.0)
        return ((resized - self._mean) / self._std).to(self.dtype)

    def _pixels(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A 3×H×W uint8 tensor on the model's device."""
        if isinstance(image, torch.Tensor):
            return image.to(self.device)
        pixels = torch.from_numpy(np.require(image, requirements="W"))
        return pixels.to(self.device).permute(2, 0, 1)

    @staticmethod
    def postprocess(predicted: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        depth = predicted[None, None].float()
        if tuple(depth.shape[-2:]) != tuple(size):
            depth = F.interpolate(depth, size=tuple(size), mode="bicubic", align_corners=False)
        return depth[0, 0].cpu().numpy()


def _resize(pixels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(pixels.shape[-2:]) == tuple(shape):
        return pixels
    # antialias matches PIL's bicubic when shrinking (what the transformers processor uses).
    return F.interpolate(pixels, size=shape, mode="bicubic", align_corners=False, antialias=True)


def release_cached_memory(device: torch.device) -> None:
    """Hand the blocks torch's allocator keeps cached on ``device`` back to the driver, so other
    processes on the GPU (replicas sharing it through fractional GPUs) can have them."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
