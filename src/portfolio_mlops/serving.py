"""Serve a registered model over HTTP and follow its alias: `models:/<name>@<alias>` without restarts.

The process starts serving HTTP at once, whether or not the alias points anywhere yet, so a pod never
crash-loops while the registry has no champion (on real data, possibly for a long time). A background
poller resolves the alias every `poll_seconds`; when a version appears or the alias moves, it
downloads and loads that version and swaps it in atomically (requests in flight finish on the model
they started with). A version that fails to load leaves the previous one serving, and the reason in
the log. The log gets one line per change of state (no champion yet, MLflow unreachable, loaded,
load failed), never one per poll.

Endpoints:
    GET  /health       liveness: 200 while the process runs
    GET  /ping         readiness: 200 once a model is loaded, else 503 with {"state": ..., "reason": ...}
    GET  /version      the served version: registered model, alias, version, run_id, loaded_at (503 before one)
    POST /invocations  MLflow's own scoring server (dataframe_split, dataframe_records, instances, inputs,
                       CSV) for the loaded pyfunc; the response carries X-Model-Version

Any pyfunc works: nothing here knows what the model computes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from portfolio_mlops.config import TrackingConfig
from portfolio_mlops.errors import ConfigError
from portfolio_mlops.registry import ALIAS_URI as _ALIAS_URI, alias_uri

logger = logging.getLogger("portfolio_mlops.serving")

DEFAULT_MODEL_URI = alias_uri(TrackingConfig.model_fields['registered_model'].default)  # ...@champion
# Each setting: (environment variable, command-line flag), for messages that name what the user set.
SOURCES = {"model_uri": ("MODEL_URI", "--model-uri"), "tracking_uri": ("MLFLOW_TRACKING_URI", "--tracking-uri"),
           "host": ("HOST", "--host"), "port": ("PORT", "--port"), "poll_seconds": ("POLL_SECONDS", "--poll-seconds")}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class ServeSettings(BaseModel):
    """Where the model comes from and where it is served. Flags override environment variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_uri: str = Field(DEFAULT_MODEL_URI, description="models:/<registered model>@<alias>")
    tracking_uri: str | None = Field(None, description="MLflow tracking server; None = MLflow's own default")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    poll_seconds: float = Field(10.0, gt=0, description="Seconds between two resolutions of the alias.")
    download_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "portfolio-mlops-serving",
                               description="Writable folder for downloaded versions (a tmpfs in the pod).")

    @field_validator("model_uri")
    @classmethod
    def _follows_an_alias(cls, value: str) -> str:
        if not _ALIAS_URI.fullmatch(value):
            raise ValueError(f"expected models:/<registered model>@<alias>, e.g. {DEFAULT_MODEL_URI}, got {value!r}")
        return value

    @property
    def registered_model(self) -> str:
        return _ALIAS_URI.fullmatch(self.model_uri)["name"]

    @property
    def alias(self) -> str:
        return _ALIAS_URI.fullmatch(self.model_uri)["alias"]


def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> ServeSettings:
    """Settings from flags (None = not given), then environment variables, then defaults.

    Raises ConfigError naming the variable or flag and what was expected."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for field_name, (variable, flag) in SOURCES.items():
        if flags.get(field_name) is not None:
            values[field_name], origin[field_name] = flags[field_name], flag
        elif environ.get(variable):
            values[field_name], origin[field_name] = environ[variable], f"${variable}"
    if flags.get("download_dir") is not None:
        values["download_dir"] = flags["download_dir"]
    try:
        return ServeSettings(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field_name = str(error["loc"][0]) if error["loc"] else "?"
            given = f" (got {values[field_name]!r})" if field_name in values and error["type"] != "value_error" else ""
            problems.append(f"{origin.get(field_name, field_name)}: {error['msg'].removeprefix('Value error, ')}{given}")
        raise ConfigError("; ".join(problems)) from None


@dataclass(frozen=True)
class ServedModel:
    """One loaded model version and the scoring app that answers for it."""

    registered_model: str
    alias: str
    version: str
    run_id: str | None
    loaded_at: str  # ISO 8601, UTC
    load_seconds: float
    path: Path
    app: Callable[[Scope, Receive, Send], Awaitable[None]]

    def describe(self) -> dict[str, Any]:
        return {"registered_model": self.registered_model, "alias": self.alias, "version": self.version,
                "run_id": self.run_id, "loaded_at": self.loaded_at, "load_seconds": round(self.load_seconds, 3)}


def _short(exc: BaseException) -> str:
    """The first line of an error, bounded: MLflow's connection errors run to many lines."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 300 else text[:297] + "..."


class AliasFollower:
    """Resolves `models:/<name>@<alias>` on every poll and keeps the version it points to loaded.

    `current` is the model being served (None until one loads); `reason` says why nothing is served.
    The swap is one attribute assignment, so readers see either the old or the new model, never a mix.
    If the alias is removed, the last loaded version keeps serving (an outage would help no one) and
    the log says so.
    """

    def __init__(self, settings: ServeSettings):
        from mlflow import MlflowClient

        self.settings = settings
        self._client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
        self.current: ServedModel | None = None
        self.reason = f"nothing resolved yet for {settings.model_uri}"
        self._state: tuple = ("starting",)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the poll loop ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="alias-follower", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the poller must outlive any surprise; the next poll tries again
                if self.current is None:
                    self.reason = f"polling {self.settings.model_uri} failed: {_short(exc)}"
                self._enter(("poll-error", _short(exc)), logging.ERROR,
                            f"polling {self.settings.model_uri} failed: {_short(exc)}; {self._serving_text()}")
            self._stop.wait(self.settings.poll_seconds)

    def poll_once(self) -> None:
        """Resolve the alias once; load and swap in its version when it differs from the served one."""
        from mlflow.exceptions import MlflowException

        name, alias = self.settings.registered_model, self.settings.alias
        try:
            target = self._client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            # The server answered: no such registered model (RESOURCE_DOES_NOT_EXIST) or no such alias
            # (INVALID_PARAMETER_VALUE, MLflow 3.17). Listing the versions tells the two apart for the log.
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                self._no_alias()
            else:
                self._unreachable(exc)
            return
        except Exception as exc:  # connection refused, timeouts, proxies answering HTML...
            self._unreachable(exc)
            return
        if self.current is not None and self.current.version == str(target.version):
            self._enter(("serving", self.current.version), logging.INFO, None)
            return
        try:
            served = self._load(str(target.version), target.run_id)
        except Exception as exc:
            if self.current is None:
                self.reason = f"could not load {name} v{target.version}: {_short(exc)}"
            self._enter(("load-failed", str(target.version), _short(exc)), logging.ERROR,
                        f"could not load {name} v{target.version} (alias {alias}): {_short(exc)}; "
                        f"{self._serving_text()}, retrying every {self._every()}")
            return
        previous, self.current = self.current, served
        self.reason = ""
        self._enter(("serving", served.version), logging.INFO,
                    f"serving {name} v{served.version} (alias {alias}, run {served.run_id}), loaded in "
                    f"{served.load_seconds:.1f}s" + (f"; replaced v{previous.version}" if previous else ""))
        self._discard_downloads(keep={served.path, previous.path if previous else served.path})

    # ---- states --------------------------------------------------------------------------------

    def _no_alias(self) -> None:
        name, alias = self.settings.registered_model, self.settings.alias
        try:
            versions = sorted((str(v.version) for v in self._client.search_model_versions(f"name='{name}'")), key=int)
        except Exception as exc:
            self._unreachable(exc)
            return
        # The newest few are what a reader needs; a registry may hold hundreds.
        listed = ("..., " if len(versions) > 8 else "") + ", ".join(versions[-8:]) or "none"
        if self.current is None:
            self.reason = f"no version of {name} has alias {alias} yet (versions: {listed})"
            text = f"{self.reason}; not ready, polling every {self._every()}"
        else:
            text = (f"alias {alias} of {name} points to no version now (versions: {listed}); "
                    f"still serving v{self.current.version}, polling every {self._every()}")
        self._enter(("no-alias", listed), logging.WARNING, text)

    def _unreachable(self, exc: BaseException) -> None:
        where = self.settings.tracking_uri or "the default tracking URI"
        problem = f"cannot resolve {self.settings.model_uri} at MLflow {where}: {_short(exc)}"
        if self.current is None:
            self.reason = problem
        # Object addresses in urllib3's messages differ on every attempt: not a change of state.
        self._enter(("unreachable", re.sub(r"0x[0-9a-fA-F]+", "0x", _short(exc))), logging.WARNING,
                    f"{problem}; {self._serving_text()}, polling every {self._every()}")

    @property
    def state(self) -> str:
        """starting, serving, no-alias, unreachable, load-failed or poll-error (for /ping and /version)."""
        return self._state[0]

    def _enter(self, state: tuple, level: int, text: str | None) -> None:
        """Log `text` only when the state changes: a quiet log that still says every transition."""
        if state != self._state:
            self._state = state
            if text:
                logger.log(level, text)

    def _serving_text(self) -> str:
        return f"still serving v{self.current.version}" if self.current else "not ready"

    def _every(self) -> str:
        return f"{self.settings.poll_seconds:g}s"

    # ---- loading -------------------------------------------------------------------------------

    def _load(self, version: str, run_id: str | None) -> ServedModel:
        import mlflow.artifacts
        import mlflow.pyfunc
        from mlflow.pyfunc import scoring_server

        started = time.perf_counter()
        self.settings.download_dir.mkdir(parents=True, exist_ok=True)
        target = Path(tempfile.mkdtemp(prefix=f"v{version}-", dir=self.settings.download_dir))
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{self.settings.registered_model}/{version}", dst_path=str(target),
                tracking_uri=self.settings.tracking_uri, registry_uri=self.settings.tracking_uri)
            model = mlflow.pyfunc.load_model(local)
            app = scoring_server.init(model)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return ServedModel(self.settings.registered_model, self.settings.alias, version, run_id,
                           datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           time.perf_counter() - started, target, app)

    def _discard_downloads(self, keep: set[Path]) -> None:
        """Delete older downloads (the pod's tmpfs counts against its memory); the previous version's
        files stay until the next swap, for requests that may still be reading them."""
        for path in self.settings.download_dir.glob("v*-*"):
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)


class ServingApp:
    """The ASGI application: probes and /version here, everything else delegated to the loaded
    version's MLflow scoring app. Starts and stops the follower with the server (ASGI lifespan)."""

    def __init__(self, follower: AliasFollower):
        self.follower = follower

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        served = self.follower.current  # read once: this request uses one version throughout
        path = scope["path"]
        if path == "/health":
            await _json(send, 200, {"status": "alive"})
        elif path == "/ping":
            if served is None:
                await _json(send, 503, {"status": "not ready", "state": self.follower.state,
                                        "reason": self.follower.reason})
            else:
                await _json(send, 200, {"status": "ready", "version": served.version})
        elif path == "/version":
            if served is None:
                settings = self.follower.settings
                await _json(send, 503, {"registered_model": settings.registered_model, "alias": settings.alias,
                                        "version": None, "state": self.follower.state, "reason": self.follower.reason})
            else:
                await _json(send, 200, served.describe())
        elif served is None:
            await _json(send, 503, {"error": "no model loaded", "reason": self.follower.reason})
        else:
            version_header = (b"x-model-version", served.version.encode())
            held: dict = {}  # an error response's start and body, until the body is complete

            async def send_with_version(message: dict) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), version_header]}
                    if message["status"] >= 400:
                        held.update(start=message, body=b"")
                        return
                elif held:
                    held["body"] += message.get("body", b"")
                    if message.get("more_body"):
                        return
                    start, body = held["start"], readable_error(held["body"])
                    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                    await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                    message = {"type": "http.response.body", "body": body}
                await send(message)

            await served.app(scope, receive, send_with_version)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.follower.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.follower.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def readable_error(body: bytes) -> bytes:
    """MLflow's scoring server wraps a model's error as "Failed to predict data '<the whole input
    frame>'. Error: <the reason>" (schema errors nest a second such wrapper): keep the reason, so a
    400 names the problem in one line instead of echoing thousands of rows. Other bodies pass as they are."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, str) or "Error: " not in message:
        return body
    return json.dumps({**payload, "message": message.rsplit("Error: ", 1)[1].strip()}).encode()


async def _json(send: Send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _QuietProbes(logging.Filter):
    """Drop uvicorn's access-log lines for the probes: the kubelet calls them every few seconds."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (len(args) >= 3 and args[2] in ("/health", "/ping"))


def serve(settings: ServeSettings) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    # The poll loop is the retry: one slow, retried request must not hold up the next poll for minutes
    # (MLflow's defaults are 7 retries with exponential backoff and a 120 s timeout).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(5, int(settings.poll_seconds * 3))))
    logging.getLogger("uvicorn.access").addFilter(_QuietProbes())
    logger.info("serving %s from %s on http://%s:%d; alias polled every %gs", settings.model_uri,
                settings.tracking_uri or "the default tracking URI", settings.host, settings.port, settings.poll_seconds)
    # log_config=None: uvicorn's lines go through the root logger, formatted like ours.
    uvicorn.run(ServingApp(AliasFollower(settings)), host=settings.host, port=settings.port, lifespan="on",
                log_config=None, log_level="info", timeout_graceful_shutdown=10)


def run_command(args: argparse.Namespace) -> int:
    """`portfolio-mlops serve` from parsed arguments."""
    settings = load_settings({name: getattr(args, name, None) for name in (*SOURCES, "download_dir")})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(settings)
    return 0
