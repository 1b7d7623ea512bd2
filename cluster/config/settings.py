"""depthmill's one settings object, read from ``DEPTHMILL_*`` environment variables.

Build it once at an entry point (CLI, Serve app builder, job main) with ``Settings()`` and pass it
down; nothing below the entry points reads ``os.environ``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cluster.config.models import ModelNotServed, check_models

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
# Where a Ray job finds the settings of the command that submitted it.
JOB_SETTINGS_ENV = "DEPTHMILL_JOB_SETTINGS"


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("depthmill", appauthor=False))


CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Every knob of depthmill. The README's configuration table documents each field."""

    model_config = SettingsConfigDict(env_prefix="DEPTHMILL_", extra="ignore", frozen=True)

    home: Path = Field(
        default_factory=_default_home,
        description="Data directory for the embedded Postgres and local storage.",
    )
    database_url: str | None = Field(
        default=None,
        description="Postgres URL. Unset: an embedded Postgres (pgserver) under HOME/postgres.",
    )
    db_pool_size: int = Field(default=10, ge=1, description="Most connections per process pool.")

    storage: Literal["local", "s3"] = Field(
        default="local", description="Object storage backend: a directory under HOME, or S3."
    )
    s3_endpoint: str | None = Field(
        default=None, description="S3-compatible endpoint URL (MinIO); unset means AWS."
    )
    s3_bucket: str = Field(default="depthmill", description="Bucket, created if missing.")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_sse: Literal["off", "AES256", "aws:kms"] = Field(
        default="off", description="Server-side encryption of every object depthmill writes to "
        "S3: `AES256` (S3-managed keys), `aws:kms` (KMS), or `off` (the bucket's default).",
    )
    s3_sse_kms_key_id: str | None = Field(
        default=None, description="KMS key id or ARN for `S3_SSE=aws:kms`; unset: the account's "
        "default `aws/s3` key.",
    )

    host: str = Field(default="127.0.0.1", description="Address the HTTP API binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the HTTP API.")
    public_url: str | None = Field(
        default=None,
        description="URL clients reach the API at, for signed URLs; default http://HOST:PORT.",
    )
    tls_certfile: Path | None = Field(
        default=None, description="TLS certificate (PEM) for https; `depthmill up --tls` makes one.",
    )
    tls_keyfile: Path | None = Field(default=None, description="The TLS certificate's private key (PEM).")

    model: str = Field(
        default=DEFAULT_MODEL,
        description="Hugging Face model id, a local directory, or `tiny` (random weights, tests).",
    )
    models: CommaList = Field(
        default_factory=list,
        description="Comma-separated models the depth deployment serves, MODEL among them (it "
        "stays the model of items that name none); unset: MODEL alone. `tiny:N` is a second "
        "random model, seed N (`tiny` is seed 0). MODEL_REVISION pins MODEL's revision only.",
    )
    serve_max_models_per_replica: int | None = Field(
        default=None, ge=1, description="Most models one depth replica keeps loaded (the least "
        "recently used goes first); default: every served model.",
    )
    model_revision: str | None = Field(default=None, description="Pin a model revision.")
    allow_noncommercial_models: bool = Field(
        default=False, description="Serve models licensed for non-commercial use only "
        "(Depth Anything V2 Base and Large are CC-BY-NC-4.0).",
    )
    device: str = Field(default="auto", description="Torch device for the model: auto, cpu, cuda, cuda:1.")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto", description="Model dtype; auto is float16 on CUDA, float32 on CPU."
    )
    torch_compile: bool = Field(default=False, description="Compile the model with torch.compile.")
    photo_decode: Literal["auto", "worker", "replica"] = Field(
        default="auto", description="Where photos are decoded: in the processing tasks "
        "(worker), or in the depth replica from their bytes (replica: nvJPEG on a GPU with the "
        "`gpu` extra, Pillow otherwise); auto is the replica when the depth replicas have a GPU.",
    )
    model_batch_size: int | None = Field(
        default=None, ge=1, description="Most images in one forward pass (larger batches are "
        "split); default 32 on a GPU and 1 on a CPU, where a batch costs more per image than it "
        "saves."
    )
    serve_max_batch_size: int | None = Field(
        default=None, ge=1, description="Most requests the depth deployment gathers into one "
        "batch; default the model's batch size."
    )
    serve_batch_wait_s: float = Field(
        default=0.01, ge=0, description="How long the depth deployment waits to fill a batch."
    )
    serve_min_replicas: int = Field(default=1, ge=0, description="Fewest depth model replicas.")
    serve_max_replicas: int = Field(default=1, ge=1, description="Most depth model replicas.")
    serve_target_ongoing_requests: float = Field(
        default=32, gt=0, description="Ongoing requests per replica the autoscaler aims for."
    )
    serve_upscale_delay_s: float = Field(default=10, ge=0, description="Autoscaler upscale delay.")
    serve_downscale_delay_s: float = Field(
        default=300, ge=0, description="Autoscaler downscale delay."
    )
    serve_num_gpus: float | None = Field(
        default=None, ge=0,
        description="GPUs per depth replica (fractions share a GPU); default 1 if the cluster has "
        "a GPU, else 0.",
    )
    serve_num_cpus: float = Field(
        default=0.5, gt=0, description="CPUs reserved per depth replica (fractions allowed)."
    )

    serve_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each depth replica needs, as "
        "JSON (`{\"depth_node\": 1}`): replicas run only on nodes started with them (`ray start "
        "--resources`). Default: none, any node with the CPUs and GPUs.",
    )
    task_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each processing task needs, as "
        "JSON (`{\"work_node\": 0.01}`): items are decoded and encoded only on nodes that offer "
        "them. Default: none.",
    )
    scheduler_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources the scheduler actor needs, as "
        "JSON: it runs, and is restarted after its node is lost, only on nodes that offer them "
        "(give them to more than one). Default: none.",
    )

    api_keys: CommaList = Field(
        default_factory=list,
        description="Comma-separated admin API keys; when set (or once a key was made with "
        "`depthmill keys create`) every route but health and signed files needs a key.",
    )
    signing_secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret for local signed URLs, event tokens and API key hashes; "
        "generated and kept under HOME if unset (set it on every host of a cluster).",
    )
    api_key_cache_s: float = Field(
        default=10.0, ge=0, description="Seconds a gateway replica trusts what it read about a "
        "key (and whether any key exists): a revoked key is refused within this long.",
    )
    audit_retention_days: float = Field(
        default=90, gt=0, description="Audit log entries older than this are pruned.",
    )
    cors_origins: CommaList = Field(
        default_factory=list, description="Comma-separated allowed CORS origins (none by default)."
    )
    max_file_size: ByteSize = Field(
        default=ByteSize(500 * 1024 * 1024),
        description="Largest upload accepted, in bytes or with a unit (`100MB`).",
    )
    max_files_per_request: int = Field(default=10, ge=1, description="Files per upload request.")
    signed_url_expiry: int = Field(default=3600, ge=1, description="Signed URL lifetime, seconds.")

    clamd_socket: Path | None = Field(
        default=None, description="Unix socket of a ClamAV daemon that scans every upload "
        "before it is stored (INSTREAM); unset, and no CLAMD_HOST: uploads are not scanned.",
    )
    clamd_host: str | None = Field(
        default=None, description="Host of a ClamAV daemon reached over TCP, instead of a socket.",
    )
    clamd_port: int = Field(default=3310, ge=1, le=65535, description="Its TCP port.")
    clamd_timeout_s: float = Field(
        default=60.0, gt=0, description="Time clamd has to connect and to answer each step of a "
        "scan.",
    )
    clamd_unavailable: Literal["refuse", "accept"] = Field(
        default="refuse", description="When clamd cannot be reached or cannot scan a file: "
        "`refuse` the upload (503), or `accept` it unscanned and log a warning.",
    )

    max_image_pixels: int = Field(
        default=150_000_000, ge=1, description="Largest photo accepted, in pixels (bomb guard)."
    )
    max_video_seconds: float = Field(default=1800.0, gt=0, description="Longest video accepted.")
    video_max_fps: float = Field(
        default=60.0, gt=0, description="Most frames per second of a video given depth; a faster "
        "video's frames are dropped evenly down to it.",
    )
    video_sample_fps: float | None = Field(
        default=None, gt=0, description="Unset: depth for every frame (up to VIDEO_MAX_FPS). Set "
        "(e.g. 2): frames sampled at this rate instead, for quick previews.",
    )
    video_max_frames: int = Field(
        default=108_000, ge=1, description="Most frames given depth per video (30 minutes at "
        "60 fps).",
    )
    depth_resolution: Literal["model", "original"] = Field(
        default="model",
        description="Depth PNG size: the model's output size, or the photo's original size.",
    )
    stereo_cache_bytes: ByteSize = Field(
        default=ByteSize(2 * 1024**3),
        description="Most bytes of stereo and GDepth renders kept in storage; least recently "
                    "used go first.",
    )

    scheduler_max_in_flight: int = Field(
        default=32, ge=1, description="Most items the scheduler keeps in flight at once."
    )
    scheduler_poll_s: float = Field(
        default=5.0, gt=0, description="Polling interval when no NOTIFY arrives."
    )
    gateway_replicas: int = Field(
        default=2, ge=1, description="HTTP gateway replicas: each is a process of its own, so "
        "uploads are checked and stored on more than one core.",
    )
    gateway_direct_ingress: bool = Field(
        default=True, description="Gateway replicas serve the HTTP port themselves "
        "(SO_REUSEPORT), and `depthmill up` starts Serve without its proxy; false: through the "
        "Serve proxy, one more process hop per request.",
    )
    gateway_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each gateway replica needs, as "
        "JSON: replicas run only on the nodes that offer them (those behind the load balancer); "
        "a node offering 1 where a replica needs 1 holds at most one. Default: none.",
    )
    upload_rate_per_minute: int = Field(
        default=600, ge=1, description="Upload requests per client per minute, counted by each "
        "gateway replica (a client's connection stays with one; 429 beyond)."
    )

    events_heartbeat_s: float = Field(
        default=15.0, gt=0, description="Seconds between heartbeats (SSE comments) on an idle "
        "/api/events stream, so proxies keep it open.",
    )
    events_poll_s: float = Field(
        default=0.5, gt=0, description="How often a gateway replica with /api/events streams open "
        "looks at the outbox for new events: one query per replica, however many streams.",
    )
    events_token_seconds: int = Field(
        default=300, ge=1, description="Lifetime of a token from POST /api/events/token, with "
        "which a browser's EventSource (no headers) opens the stream.",
    )

    max_attempts: int = Field(default=3, ge=1, description="Claims before an item fails for good.")
    lease_seconds: float = Field(
        default=60.0, gt=0, description="Lease a claimer holds on an item between heartbeats."
    )
    retry_backoff_base: float = Field(
        default=2.0, gt=0, description="First retry delay in seconds; doubles per attempt."
    )
    retry_backoff_max: float = Field(
        default=300.0, gt=0, description="Cap on the retry delay in seconds."
    )

    webhook_allow_private: bool = Field(
        default=False, description="Let webhooks reach loopback, private, link-local and other "
        "non-public addresses (a LAN receiver, tests); cloud metadata addresses stay refused.",
    )
    webhook_retry_schedule_s: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0, 5, 300, 1800, 7200, 18000, 36000, 36000],
        description="Comma-separated delays before each delivery attempt, seconds (the Standard "
        "Webhooks schedule); after the last one a delivery fails for good.",
    )
    webhook_disable_after_s: float = Field(
        default=5 * 24 * 3600, gt=0, description="An endpoint whose every delivery failed for "
        "this long is disabled.",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="Time a webhook receiver has to answer one delivery."
    )
    webhook_lease_s: float = Field(
        default=30.0, gt=0, description="Lease on a delivery in flight; a dead deliverer's "
        "deliveries are sent again once it expires.",
    )
    webhook_poll_s: float = Field(
        default=5.0, gt=0, description="Webhook deliverer's polling interval when no NOTIFY arrives."
    )
    webhook_max_in_flight: int = Field(
        default=16, ge=1, description="Most webhook deliveries sent at once (one per endpoint)."
    )
    events_retention_s: float = Field(
        default=7 * 24 * 3600, gt=0, description="Events older than this are pruned once every "
        "delivery of theirs is done.",
    )

    @model_validator(mode="after")
    def _one_clamd(self) -> Settings:
        if self.clamd_socket is not None and self.clamd_host is not None:
            raise ValueError("set DEPTHMILL_CLAMD_SOCKET or DEPTHMILL_CLAMD_HOST, not both")
        return self

    @model_validator(mode="after")
    def _kms_key_needs_kms(self) -> Settings:
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ValueError("DEPTHMILL_S3_SSE_KMS_KEY_ID is set but DEPTHMILL_S3_SSE is not "
                             "aws:kms: set both or neither")
        return self

    @field_validator("serve_resources", "task_resources", "scheduler_resources",
                     "gateway_resources")
    @classmethod
    def _custom_resources_only(cls, value: dict[str, float]) -> dict[str, float]:
        # Ray refuses these in `resources=` with an error naming its own keyword arguments.
        builtin = sorted(set(value) & {"CPU", "GPU", "memory", "object_store_memory"})
        if builtin:
            raise ValueError(f"{', '.join(builtin)} cannot be set here: these settings take "
                             "custom resources only (CPUs and GPUs have settings of their own)")
        if any(amount < 0 for amount in value.values()):
            raise ValueError("each resource amount must be 0 or more")
        return value

    @field_validator("webhook_retry_schedule_s", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if not value or any(v < 0 for v in value):
            raise ValueError("give one or more delays in seconds, each 0 or more")
        return value

    @field_validator("api_keys", "cors_origins", "models", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _licence_allows_the_models(self) -> Settings:
        check_models(self)
        return self

    def to_json(self) -> str:
        """Every setting, the secret included, for a process this one starts elsewhere in the
        cluster (a Ray job): it gets exactly these settings, not what its own environment says."""
        data = self.model_dump(mode="json")
        if self.signing_secret is not None:
            data["signing_secret"] = self.signing_secret.get_secret_value()
        return json.dumps(data)

    @classmethod
    def for_job(cls) -> Settings:
        """The settings a job was handed (``to_json`` in ``JOB_SETTINGS_ENV``), else this
        process's environment, for a job run by hand."""
        handed = os.environ.get(JOB_SETTINGS_ENV)
        # model_validate, not the constructor: only the handed values, no environment on top.
        return cls.model_validate(json.loads(handed)) if handed else cls()

    @property
    def api_url(self) -> str:
        scheme = "https" if self.tls_certfile else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")

    @property
    def max_upload_bytes(self) -> int:
        """The most one upload request may carry: every file at its limit, plus form overhead."""
        return int(self.max_file_size) * self.max_files_per_request + 1024 * 1024

    def with_model(self, model: str, *, served: bool = True) -> Settings:
        """These settings with ``model`` the default (``--model``). Serving several models, it
        must be one of them (ModelNotServed; ``served=False``: any, for a job that reads what
        an earlier model stored), and MODEL_REVISION stays with the model it pins; serving one,
        ``model`` replaces it. Unvalidated, as model_copy is: the runtime checks again
        (``runtime.check_licence_allows``)."""
        if not self.models or model == self.model:
            return self.model_copy(update={"model": model})
        if served and model not in self.models:
            raise ModelNotServed(model, self.models)
        return self.model_copy(update={"model": model, "model_revision": None})

    @property
    def models_per_replica(self) -> int:
        return self.serve_max_models_per_replica or max(len(self.models), 1)

    @property
    def model_cache_dir(self) -> Path:
        return self.home / "models"

    @property
    def postgres_dir(self) -> Path:
        return self.home / "postgres"

    @property
    def storage_dir(self) -> Path:
        return self.home / "storage"
