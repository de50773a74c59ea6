"""A stand-in for the Kubernetes API server's list endpoints, for tests only.

No Kubernetes API server can run on these machines: kind needs the kindest/node image and no
container registry is reachable, and there is no other control plane to start. Tests of
`portfolio-mlops cluster` therefore start this small HTTP server on 127.0.0.1 (a free port), write
a kubeconfig pointing at it, and let the real `kubernetes` client (kubeconfig loading, bearer-token
auth, request building, JSON deserialisation into V1Deployment/V1Pod/...) talk to it, as
tests/kfp_standin.py does for KFP.

It answers only what `portfolio_mlops_kfp.pipelines.cluster` calls, with objects shaped like the real API's JSON:

    GET /api/v1/namespaces/{ns}/pods
    GET /apis/apps/v1/namespaces/{ns}/deployments
    GET /apis/apps/v1/namespaces/{ns}/statefulsets
    GET /apis/batch/v1/namespaces/{ns}/jobs

A missing or wrong bearer token gets 401 and any other path 404, both as a `Status` object, as the
real server does. The objects come from the builders below (`deployment`, `statefulset`, `job`,
`pod`), whose fields follow what the controllers and the kubelet write: readyReplicas,
observedGeneration, Job conditions, containerStatuses with waiting/lastState, the Job's
controller-uid selector. Nothing is scheduled or reconciled: a test changes the objects with `put`.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from loopback_server import LoopbackServer

TOKEN = "standin-token"
_LISTS = {
    re.compile(r"/api/v1/namespaces/(?P<ns>[^/]+)/pods"): ("v1", "PodList", "Pod"),
    re.compile(r"/apis/apps/v1/namespaces/(?P<ns>[^/]+)/deployments"): ("apps/v1", "DeploymentList", "Deployment"),
    re.compile(r"/apis/apps/v1/namespaces/(?P<ns>[^/]+)/statefulsets"): ("apps/v1", "StatefulSetList", "StatefulSet"),
    re.compile(r"/apis/batch/v1/namespaces/(?P<ns>[^/]+)/jobs"): ("batch/v1", "JobList", "Job"),
}
_TIME = "2026-11-25T21:00:00Z"


@dataclass
class KubernetesStandIn(LoopbackServer):
    """`with KubernetesStandIn() as api:`; `api.kubeconfig(path)` writes a kubeconfig for it."""

    objects: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (kind, namespace, name) -> object
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = None


    def kubeconfig(self, path: Path, context: str = "standin", namespace: str = "portfolio-mlops") -> Path:
        """A kubeconfig whose current context points at this server with its bearer token."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": TOKEN}}],
            "contexts": [{"name": context, "context": {"cluster": "standin", "user": "standin", "namespace": namespace}}],
        }))
        return path

    def put(self, *objects: dict) -> None:
        """Create or replace objects (by kind, namespace and name)."""
        with self._lock:
            for obj in objects:
                meta = obj["metadata"]
                self.objects[(obj["kind"], meta["namespace"], meta["name"])] = obj

    def _handle(self, handler: BaseHTTPRequestHandler, method: str = "GET") -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self.requests.append(path)
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.send_json(handler, 401, _status(401, "Unauthorized", "Unauthorized"))
        for pattern, (api_version, list_kind, kind) in _LISTS.items():
            match = pattern.fullmatch(path)
            if match:
                with self._lock:
                    items = [o for (k, ns, _), o in sorted(self.objects.items()) if k == kind and ns == match["ns"]]
                return self.send_json(handler, 200, {"kind": list_kind, "apiVersion": api_version,
                                                 "metadata": {"resourceVersion": "1"}, "items": items})
        return self.send_json(handler, 404, _status(404, "NotFound", "the server could not find the requested resource"))



def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


# ---- builders: objects as the controllers and the kubelet leave them ---------------------------------------

def _labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "stock-portfolio-mlops"}


def _meta(name: str, namespace: str, labels: dict, generation: int = 1) -> dict:
    return {"name": name, "namespace": namespace, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}/{name}")),
            "generation": generation, "resourceVersion": "1", "creationTimestamp": _TIME, "labels": labels}


def _template(name: str, labels: dict) -> dict:
    return {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name, "image": f"example/{name}:1"}]}}


def deployment(name: str, component: str, ready: int, replicas: int = 1, namespace: str = "portfolio-mlops") -> dict:
    labels = _labels(name, component)
    status = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": ready,
              "availableReplicas": ready, "unavailableReplicas": replicas - ready}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, namespace, labels),
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                     "template": _template(name, labels)},
            "status": {k: v for k, v in status.items() if v}}  # the API omits zero counts


def statefulset(name: str, component: str, ready: int, replicas: int = 1, namespace: str = "portfolio-mlops") -> dict:
    labels = _labels(name, component)
    status = {"observedGeneration": 1, "replicas": replicas, "readyReplicas": ready, "currentReplicas": replicas,
              "updatedReplicas": replicas, "availableReplicas": ready, "currentRevision": f"{name}-7d9f",
              "updateRevision": f"{name}-7d9f"}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(name, namespace, labels),
            "spec": {"replicas": replicas, "serviceName": name,
                     "selector": {"matchLabels": {"app.kubernetes.io/name": name}}, "template": _template(name, labels)},
            "status": {k: v for k, v in status.items() if v}}


def job(name: str, component: str, state: str, namespace: str = "portfolio-mlops") -> dict:
    """state: "running", "complete" or "failed" (backoffLimit reached)."""
    meta = _meta(name, namespace, _labels(name, component))
    uid = meta["uid"]
    selector_labels = {"batch.kubernetes.io/controller-uid": uid}
    template_labels = {**_labels(name, component), **selector_labels, "batch.kubernetes.io/job-name": name,
                       "controller-uid": uid, "job-name": name}
    status: dict[str, Any] = {"startTime": _TIME}
    if state == "running":
        status.update(active=1)
    elif state == "complete":
        status.update(succeeded=1, completionTime=_TIME, conditions=[
            {"type": "Complete", "status": "True", "lastProbeTime": _TIME, "lastTransitionTime": _TIME}])
    elif state == "failed":
        status.update(failed=7, conditions=[
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit", "lastProbeTime": _TIME,
             "lastTransitionTime": _TIME}])
    else:
        raise ValueError(f"job state {state!r}: expected running, complete or failed")
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"completions": 1, "parallelism": 1, "backoffLimit": 6,
                     "selector": {"matchLabels": selector_labels}, "template": _template(name, template_labels)},
            "status": status}


def pod(name: str, owner: dict, ready: bool, restarts: int = 0, waiting: str | None = None,
        waiting_message: str | None = None, last_exit_code: int | None = None, phase: str | None = None) -> dict:
    """A pod of `owner` (a built workload): labelled with its template labels, one container."""
    owner_spec = owner["spec"]
    labels = dict(owner_spec["template"]["metadata"]["labels"])
    namespace = owner["metadata"]["namespace"]
    container = owner_spec["template"]["spec"]["containers"][0]
    if waiting:
        state = {"waiting": {"reason": waiting, **({"message": waiting_message} if waiting_message else {})}}
    elif phase == "Succeeded":
        state = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": _TIME, "finishedAt": _TIME}}
    else:
        state = {"running": {"startedAt": _TIME}}
    status_entry = {"name": container["name"], "image": container["image"], "imageID": "", "ready": ready,
                    "restartCount": restarts, "started": "running" in state, "state": state, "lastState": {}}
    if last_exit_code is not None:
        status_entry["lastState"] = {"terminated": {"exitCode": last_exit_code, "reason": "Error",
                                                    "startedAt": _TIME, "finishedAt": "2026-11-25T21:04:05Z"}}
    phase = phase or ("Running" if "running" in state or waiting == "CrashLoopBackOff" else "Pending")
    meta = _meta(name, namespace, labels)
    del meta["generation"]  # pods have none
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [container]},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": _TIME}],
                "containerStatuses": [status_entry], "startTime": _TIME}}
