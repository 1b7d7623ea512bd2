"""Bringing the system up and down: Postgres (embedded or configured), Ray (joined or started),
the Serve application, the scheduler and the webhook deliverer. Used by ``depthmill up``, ``down`` and ``process``."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import serve

from cluster.config.worker_env import FOREGROUND_ENV
from cluster.events.delivery import get_deliverer, get_or_start_deliverer
from cluster.config.placement import placed
from cluster.work.scheduler import get_or_start_scheduler, get_scheduler
from cluster.config.models import check_models, served_models, tiny_seed
from cluster.config.settings import Settings
from cluster.config.names import APP_NAME, NAMESPACE
from db.embedded import EmbeddedPostgres, resolve_database_url
from db.migrate import migrate

log = logging.getLogger(__name__)


@dataclass
class Running:
    settings: Settings  # with database_url resolved
    api_url: str
    dashboard_url: str | None
    started_ray: bool
    embedded: EmbeddedPostgres | None


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Which Postgres: the configured one, or the embedded one under HOME. Yields a connection
    URL; an embedded server started for it is released on exit."""
    url, embedded = resolve_database_url(settings.database_url, settings.home)
    try:
        yield url
    finally:
        if embedded is not None:
            embedded.stop()


def _ray_marker(settings: Settings) -> Path:
    return settings.home / "ray_started_by_depthmill"


def use_node_env() -> None:
    """The environment of a Ray node this process starts (``ray start`` or ``ray.init``)."""
    # Explicit: with ~/.ray/auth_token present `ray start --head` turns token authentication on,
    # and a plain `ray job submit` then fails with "Missing authentication token".
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    for name, value in FOREGROUND_ENV.items():
        os.environ.setdefault(name, value)


def connect_ray(settings: Settings, *, start: bool = True) -> bool:
    """Join RAY_ADDRESS or a running local cluster; otherwise start a head node (``ray start``,
    so the cluster outlives this process for ``up --detach``). Returns True if we started it."""
    use_node_env()
    if ray.is_initialized():
        return False
    address = cluster_address()
    if address is not None:
        _init(address)
        return False
    if os.environ.get("RAY_ADDRESS"):
        raise ConnectionError(f"no Ray cluster answers at RAY_ADDRESS={os.environ['RAY_ADDRESS']}")
    if not start:
        raise ConnectionError("no Ray cluster is running")
    # A free GCS port: Ray's default (6379) is Redis's, and often taken.
    result = subprocess.run(
        [_ray_bin(), "start", "--head", "--port", str(free_port()), "--dashboard-host", "127.0.0.1",
         "--disable-usage-stats"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"`ray start --head` failed:\n{result.stderr[-2000:]}")
    settings.home.mkdir(parents=True, exist_ok=True)
    _ray_marker(settings).write_text(str(time.time()))
    _init("auto")
    return True


def cluster_address(temp_dir: str | None = None) -> str | None:
    """The cluster ``ray.init("auto")`` would join (RAY_ADDRESS, else the last ``ray start`` on
    this machine, else a running local one), or None when there is none or nothing answers
    there. Ray itself waits minutes on a GCS that is gone, as after a crash or a reboot that left
    /tmp/ray/ray_current_cluster behind; a TCP connect tells in a second or two."""
    from ray._private.services import get_ray_address_from_environment

    try:
        address = get_ray_address_from_environment("auto", temp_dir)
    except ConnectionError:
        return None
    if "://" in address:  # ray:// (Ray Client) and the like: Ray's to resolve
        return address
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except (OSError, ValueError):
        log.warning("no Ray cluster answers at %s (a stale address?)", address)
        return None
    return address


_dashboard: dict[str, str | None] = {"url": None}


def _ray_bin() -> str:
    return shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(address: str) -> None:
    context = ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    url = getattr(context, "dashboard_url", None)
    _dashboard["url"] = f"http://{url}" if url and not url.startswith("http") else url


def start_serve(settings: Settings) -> None:
    # The gateway replicas serve the port themselves (serve_app/gateway.py); a proxy would only
    # take a share of the connections and pass them on at twice the CPU.
    serve.start(http_options={"host": settings.host, "port": settings.port},
                proxy_location="Disabled" if settings.gateway_direct_ingress else None)


class ModelConflict(RuntimeError):
    """A scheduler for another model is already running: starting would keep it."""


def running_models() -> list[str] | None:
    """The models the running scheduler processes for, or None when no scheduler answers."""
    scheduler = get_scheduler()
    if scheduler is None:
        return None
    try:
        status = ray.get(scheduler.status.remote(), timeout=30)
    except Exception as e:  # noqa: BLE001 - a scheduler that does not answer is replaced anyway
        log.warning("the running scheduler did not report its model: %s", e)
        return None
    # A scheduler from before DEPTHMILL_MODELS reports its one model only.
    return status.get("models") or [status["model"]]


def check_no_other_model(model: str) -> None:
    """Refuse to start for ``model`` beside a live scheduler that does not serve it: it would be
    kept (get_if_exists), and would never claim the new model's items."""
    running = running_models()
    if running is not None and model not in running:
        names = ", ".join(map(repr, running))
        raise ModelConflict(
            f"depthmill is already running for model {names}; run `depthmill down` before "
            f"starting it for {model!r}, or start it with --model {running[0]}."
        )


def check_licence_allows(settings: Settings) -> None:
    """The settings' model checks again (licences, names, the default among the served): a
    model set with ``--model`` (``model_copy``) skipped the settings' validation."""
    try:
        check_models(settings)
    except ValueError as e:  # ModelNotAllowed, BadModelName, ModelNotServed
        raise ModelUnavailable(str(e)) from None


def up(settings: Settings, *, port: int | None = None, keep_postgres: bool = True) -> Running:
    check_licence_allows(settings)
    # First, before anything is started or redeployed: a refusal leaves what runs untouched.
    if cluster_address() is not None:
        connect_ray(settings, start=False)
        check_no_other_model(settings.model)
    embedded = None
    url = settings.database_url
    if not url:
        embedded = EmbeddedPostgres(settings.postgres_dir, stop_on_exit=not keep_postgres)
        url = embedded.url
    settings = settings.model_copy(update={"database_url": url, "port": port or settings.port})
    started = deployed = False
    try:
        migrate(url)
        started = connect_ray(settings)
        settings = placed(settings)
        start_serve(settings)
        from serve_app.app import build_depthmill_app

        deployed = True
        serve.run(build_depthmill_app(settings), name=APP_NAME, route_prefix="/", blocking=False)
        try:
            _wait_for_app(APP_NAME)
        except RuntimeError as e:
            raise _model_failure(settings.model, str(e)) or e from None
        get_or_start_scheduler(settings)
        get_or_start_deliverer(settings)
    except BaseException:
        # Stop what this call started, on every failure path (a Ray head left behind outlives
        # the command; the embedded Postgres is stopped only when up started it).
        if started:
            _quietly(lambda: down(settings.model_copy(update={
                "database_url": None if embedded is not None else settings.database_url})))
        else:
            if deployed:  # on a cluster we joined: take back the application we deployed
                _quietly(lambda: serve.delete(APP_NAME))
            if embedded is not None and not keep_postgres:
                _quietly(embedded.stop)
        raise
    return Running(settings, settings.api_url, _dashboard["url"], started, embedded)


class ModelUnavailable(RuntimeError):
    """The depth replicas could not load the model."""


def check_model_loads(settings: Settings) -> None:
    """Before starting anything on this machine: can the model be loaded here (``tiny``, a
    local directory with a config, or a Hugging Face id that is cached or downloadable)?
    Raises ModelUnavailable with one sentence saying why not."""
    check_licence_allows(settings)
    for model in served_models(settings):
        _check_model_loads(model, settings.model_revision if model == settings.model else None)


def _check_model_loads(model: str, revision: str | None) -> None:
    if tiny_seed(model) is not None:
        return
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise _unavailable(model, f"{path} has no config.json")
        return
    if model.startswith(("/", ".", "~")):
        raise _unavailable(model, f"no such directory {path}")
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(model, "config.json", revision=revision)
    except Exception as e:  # noqa: BLE001 - offline, unknown id, no network, no access
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = ("it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if offline
               else f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else e}")
        raise _unavailable(model, why) from None


def _unavailable(model: str, reason: str) -> ModelUnavailable:
    if len(reason) > 200:
        reason = reason[:200] + "…"
    return ModelUnavailable(
        f"could not load depth model {model!r} ({reason}); use --model tiny, a local model "
        f"directory, or a Hugging Face id that can be downloaded (network, HF_HUB_OFFLINE unset)."
    )


def _model_failure(model: str, message: str) -> ModelUnavailable | None:
    """One sentence for a Serve deploy that failed because the model would not load."""
    marker = f"could not load depth model {model!r}"
    if marker not in message and "ModelLoadError" not in message:
        return None
    reason = message[message.find(marker) + len(marker):] if marker in message else message
    reason = reason.lstrip(": ").strip().splitlines()[0] if reason.strip() else "unknown error"
    return _unavailable(model, reason)


def _quietly(stop) -> None:
    try:
        stop()
    except Exception as e:  # noqa: BLE001 - cleaning up after a failure; report the failure
        log.warning("cleaning up after a failed start: %s", e)


def _wait_for_app(name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = serve.status().applications.get(name)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"Serve application {name} failed: {status.message}")
        time.sleep(0.5)
    raise TimeoutError(f"Serve application {name} did not start in {timeout:.0f} s")


@contextmanager
def _ray_chatter_silenced():
    """Ray's and Serve's shutdown messages (their loggers, and what the core worker writes to
    stderr itself) go to this module's debug log instead of the user's terminal."""
    loggers = [logging.getLogger(name) for name in ("ray", "ray.serve", "ray.data")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
            caught.seek(0)
            text = caught.read().decode(errors="replace").strip()
            if text:
                log.debug("Ray while shutting down: %s", text)


def down(settings: Settings) -> list[str]:
    """Stop what ``up`` started: scheduler, webhook deliverer, Serve app, and the Ray head and embedded Postgres if
    depthmill started them."""
    done = []
    try:
        connect_ray(settings, start=False)
    except Exception:
        ray_up = False
    else:
        ray_up = True
    if ray_up:
        scheduler = get_scheduler()
        if scheduler is not None:
            try:
                ray.get(scheduler.shutdown.remote(), timeout=10)
            except Exception:
                pass
            ray.kill(scheduler)
            done.append("scheduler stopped")
        deliverer = get_deliverer()
        if deliverer is not None:
            try:
                ray.get(deliverer.shutdown.remote(), timeout=10)
            except Exception:
                pass  # what it had in flight is sent again once its leases expire
            ray.kill(deliverer)
            done.append("webhook deliverer stopped")
        with _ray_chatter_silenced():
            serve.shutdown()
            done.append("Serve application removed")
            ray.shutdown()
    marker = _ray_marker(settings)
    if marker.exists():
        subprocess.run([_ray_bin(), "stop"], capture_output=True)
        marker.unlink()
        done.append("local Ray cluster stopped")
    if not settings.database_url and (settings.postgres_dir / "postmaster.pid").exists():
        import pgserver

        pgserver.get_server(settings.postgres_dir, cleanup_mode="stop").cleanup()
        done.append("embedded Postgres stopped")
    return done
