"""A stand-in for a Kubeflow Pipelines API server (KFP v2beta1 REST), for tests only.

A real KFP API server cannot run on this machine: it needs a Kubernetes cluster with MySQL, object
storage and Argo Workflows behind it. Tests of `portfolio_mlops_kfp.pipelines.submit` therefore start
this small HTTP server on 127.0.0.1 (a free port) and point the real `kfp.Client` at it, so everything
up to the wire (kfp's request building, multipart uploads, JSON (de)serialisation, error handling) is
the genuine SDK.

It implements only the endpoints `kfp.Client` calls to submit a pipeline:

    GET  /apis/v2beta1/healthz                       (kfp.Client() calls it on construction)
    GET  /apis/v2beta1/experiments?filter=...        POST /apis/v2beta1/experiments
    GET  /apis/v2beta1/pipelines?filter=...          POST /apis/v2beta1/pipelines/upload (multipart)
    GET  /apis/v2beta1/pipelines/{id}/versions       POST /apis/v2beta1/pipelines/upload_version (multipart)
    POST /apis/v2beta1/runs                          GET  /apis/v2beta1/runs/{id}
    POST /apis/v2beta1/recurringruns

It mirrors the behaviour the submit code relies on: names are unique (409 on a duplicate pipeline or
version name), `filter` supports EQUALS on display_name, uploading a pipeline also creates its first
version named after the pipeline and carrying the pipeline's description (as the real upload server
does), and a run must reference an existing experiment and pipeline version. It does not execute
anything: each run walks through the scripted `run_states`, one state per GET. It checks no
authentication and does not validate pipeline specs beyond parsing the YAML.

Every request is recorded (method, path, query, parsed body) in `requests` for assertions; `fail()`
makes the next matching request answer with an HTTP error.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Sequence
from urllib.parse import parse_qsl, urlsplit

import yaml

from loopback_server import LoopbackServer

API = "/apis/v2beta1"


@dataclass
class RecordedRequest:
    """One request as the stand-in saw it. `body` is the parsed JSON, or for a multipart upload
    {"uploadfile": {"filename", "bytes", "sha256"}}; None when there was no body."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class _Failure:
    method: str
    path: str
    status: int
    message: str


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class KfpStandIn(LoopbackServer):
    """Start with `with KfpStandIn() as server:`; `server.url` is the host to give kfp.Client.

    `run_states`: the states a run reports on successive GETs (the last one repeats for ever), e.g.
    ["RUNNING", "RUNNING", "SUCCEEDED"], or ["RUNNING"] for a run that never finishes. A run reports
    PENDING when created. `run_error`: the error message a run carries once it reports FAILED.
    """

    run_states: Sequence[str] = ("SUCCEEDED",)
    run_error: str = "task 'train' failed: exit code 1"
    requests: list[RecordedRequest] = field(default_factory=list)
    experiments: dict[str, dict] = field(default_factory=dict)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring_runs: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._run_polls: dict[str, int] = {}
        self._server = None
        self._routes: list[tuple[str, re.Pattern, Callable[..., Any]]] = [
            ("GET", re.compile(rf"{API}/healthz"), self._healthz),
            ("GET", re.compile(rf"{API}/experiments"), self._list_experiments),
            ("POST", re.compile(rf"{API}/experiments"), self._create_experiment),
            ("GET", re.compile(rf"{API}/pipelines"), self._list_pipelines),
            ("POST", re.compile(rf"{API}/pipelines/upload"), self._upload_pipeline),
            ("POST", re.compile(rf"{API}/pipelines/upload_version"), self._upload_version),
            ("GET", re.compile(rf"{API}/pipelines/(?P<pipeline_id>[^/]+)/versions"), self._list_versions),
            ("POST", re.compile(rf"{API}/runs"), self._create_run),
            ("GET", re.compile(rf"{API}/runs/(?P<run_id>[^/:]+)"), self._get_run),
            ("POST", re.compile(rf"{API}/recurringruns"), self._create_recurring_run),
        ]

    # ---- lifecycle -------------------------------------------------------------------------------


    # ---- test helpers ----------------------------------------------------------------------------

    def fail(self, method: str, path: str, status: int = 500, message: str = "internal error") -> None:
        """The next `method path` request (path without the query) answers HTTP `status`."""
        with self._lock:
            self._failures.append(_Failure(method, path, status, message))

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded requests with this method and exact path (without the query)."""
        return [r for r in self.requests if r.method == method and r.path == path]

    # ---- HTTP plumbing ---------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(handler.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        content_type = handler.headers.get("Content-Type", "")
        try:
            body = _parse_body(content_type, raw)
            with self._lock:
                self.requests.append(RecordedRequest(method, split.path, query, _summarise(body)))
                failure = next((f for f in self._failures if f.method == method and f.path == split.path), None)
                if failure is not None:
                    self._failures.remove(failure)
                    raise _HttpError(failure.status, failure.message)
                route = self._route(method, split.path)
                status, payload = 200, route[0](body, query, **route[1])
        except _HttpError as exc:
            # The shape grpc-gateway gives KFP errors.
            status, payload = exc.status, {"error": exc.message, "code": exc.status, "message": exc.message}
        self.send_json(handler, status, payload)

    def _route(self, method: str, path: str) -> tuple[Callable[..., Any], dict[str, str]]:
        for route_method, pattern, function in self._routes:
            match = pattern.fullmatch(path)
            if route_method == method and match:
                return function, match.groupdict()
        raise _HttpError(404, f"the KFP stand-in does not implement {method} {path}")

    # ---- endpoints -------------------------------------------------------------------------------

    def _healthz(self, body: Any, query: dict) -> dict:
        return {"multi_user": False, "pipeline_store": "kfp-standin"}

    def _list_experiments(self, body: Any, query: dict) -> dict:
        found = _filtered(self.experiments.values(), query)
        return {"experiments": found, "total_size": len(found)}

    def _create_experiment(self, body: dict, query: dict) -> dict:
        name = body.get("display_name")
        if not name:
            raise _HttpError(400, "experiment display_name is required")
        if any(e["display_name"] == name for e in self.experiments.values()):
            raise _HttpError(409, f"experiment {name!r} already exists")
        experiment = {"experiment_id": _new_id(), "display_name": name, "description": body.get("description") or "",
                      "namespace": body.get("namespace") or "", "created_at": _now(), "storage_state": "AVAILABLE"}
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _list_pipelines(self, body: Any, query: dict) -> dict:
        found = _filtered(self.pipelines.values(), query)
        return {"pipelines": found, "total_size": len(found)}

    def _upload_pipeline(self, parts: dict, query: dict) -> dict:
        filename, content = _uploaded_file(parts)
        name = query.get("display_name") or query.get("name") or filename
        if any(p["display_name"] == name for p in self.pipelines.values()):
            raise _HttpError(409, "Failed to create a pipeline and a pipeline version")
        pipeline = {"pipeline_id": _new_id(), "name": name, "display_name": name,
                    "description": query.get("description", ""), "namespace": query.get("namespace", ""),
                    "created_at": _now()}
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        # The real upload server creates the first version too, named after the pipeline.
        self._add_version(pipeline["pipeline_id"], name, pipeline["description"], content)
        return pipeline

    def _upload_version(self, parts: dict, query: dict) -> dict:
        filename, content = _uploaded_file(parts)
        pipeline_id = query.get("pipelineid")
        if not pipeline_id:
            raise _HttpError(400, "Failed to create a pipeline version")
        if pipeline_id not in self.pipelines:
            raise _HttpError(404, f"pipeline {pipeline_id} not found")
        name = query.get("display_name") or query.get("name") or filename
        if any(v["pipeline_id"] == pipeline_id and v["display_name"] == name for v in self.versions.values()):
            raise _HttpError(409, "Failed to create a pipeline version")
        return self._add_version(pipeline_id, name, query.get("description", ""), content)

    def _add_version(self, pipeline_id: str, name: str, description: str, content: bytes) -> dict:
        try:
            spec = next(iter(yaml.safe_load_all(content)))
        except yaml.YAMLError as exc:
            raise _HttpError(400, f"Failed to read a pipeline spec file: {exc}") from exc
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": _new_id(), "name": name,
                   "display_name": name, "description": description, "created_at": _now(),
                   "pipeline_spec": spec, "package_sha256": hashlib.sha256(content).hexdigest()}
        self.versions[version["pipeline_version_id"]] = version
        return {k: v for k, v in version.items() if k != "package_sha256"}

    def _list_versions(self, body: Any, query: dict, pipeline_id: str) -> dict:
        if pipeline_id not in self.pipelines:
            raise _HttpError(404, f"pipeline {pipeline_id} not found")
        found = _filtered((v for v in self.versions.values() if v["pipeline_id"] == pipeline_id), query)
        if query.get("sort_by", "").endswith(" desc"):
            found.reverse()  # insertion order is creation order
        found = found[: int(query.get("page_size") or 10)]
        found = [{k: v for k, v in version.items() if k != "package_sha256"} for version in found]
        return {"pipeline_versions": found, "total_size": len(found)}

    def _check_references(self, body: dict) -> None:
        if body.get("experiment_id") not in self.experiments:
            raise _HttpError(404, f"experiment {body.get('experiment_id')!r} not found")
        reference = body.get("pipeline_version_reference") or {}
        version = self.versions.get(reference.get("pipeline_version_id"))
        if version is None or version["pipeline_id"] != reference.get("pipeline_id"):
            raise _HttpError(404, f"pipeline version {reference!r} not found")

    def _create_run(self, body: dict, query: dict) -> dict:
        self._check_references(body)
        run = {**body, "run_id": _new_id(), "state": "PENDING", "created_at": _now(), "storage_state": "AVAILABLE"}
        self.runs[run["run_id"]] = run
        self._run_polls[run["run_id"]] = 0
        return run

    def _get_run(self, body: Any, query: dict, run_id: str) -> dict:
        run = self.runs.get(run_id)
        if run is None:
            raise _HttpError(404, f"run {run_id} not found")
        polls = self._run_polls[run_id]
        self._run_polls[run_id] = polls + 1
        run["state"] = self.run_states[min(polls, len(self.run_states) - 1)]
        if run["state"] == "FAILED":
            run["error"] = {"code": 2, "message": self.run_error}
        if run["state"] in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
            run["finished_at"] = _now()
        return run

    def _create_recurring_run(self, body: dict, query: dict) -> dict:
        self._check_references(body)
        cron = ((body.get("trigger") or {}).get("cron_schedule") or {}).get("cron")
        if cron is not None and len(cron.split()) != 6:
            # What the real scheduler rejects (robfig/cron with a seconds field).
            raise _HttpError(400, f"invalid cron schedule {cron!r}")
        recurring = {**body, "recurring_run_id": _new_id(), "status": "ENABLED", "created_at": _now()}
        self.recurring_runs[recurring["recurring_run_id"]] = recurring
        return recurring


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_id() -> str:
    return str(uuid.uuid4())


def _filtered(items: Any, query: dict) -> list[dict]:
    """Apply a KFP `filter` query parameter; only EQUALS on string keys is understood."""
    items = list(items)
    if not query.get("filter"):
        return items
    for predicate in json.loads(query["filter"]).get("predicates", []):
        if predicate.get("operation") not in (1, "EQUALS"):
            raise _HttpError(400, f"the KFP stand-in only supports EQUALS filters, got {predicate!r}")
        key = predicate["key"]
        value = predicate.get("stringValue", predicate.get("string_value"))
        items = [item for item in items if item.get(key) == value]
    return items


def _parse_body(content_type: str, raw: bytes) -> Any:
    if not raw:
        return {}
    if content_type.startswith("multipart/form-data"):
        message = email.message_from_bytes(
            b"MIME-Version: 1.0\r\nContent-Type: " + content_type.encode() + b"\r\n\r\n" + raw,
            policy=email.policy.HTTP)
        return {part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_payload(decode=True))
                for part in message.iter_parts()}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _HttpError(400, f"request body is not JSON: {exc}") from exc


def _summarise(body: Any) -> Any:
    """Uploaded files are recorded by name, size and sha256 rather than their bytes."""
    if isinstance(body, dict) and any(isinstance(v, tuple) for v in body.values()):
        return {name: {"filename": filename, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
                for name, (filename, content) in body.items()}
    return body


def _uploaded_file(parts: dict) -> tuple[str, bytes]:
    if "uploadfile" not in parts:
        raise _HttpError(400, "Failed to read pipeline from file")
    return parts["uploadfile"]
