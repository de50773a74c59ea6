"""`portfolio-mlops cluster status | wait`: is the deployment up, and if not, why not.

What a person or CI asks after `kubectl apply -k k8s/overlays/<env>`, answered with the `kubernetes`
Python client (read-only: it lists Deployments, StatefulSets, Jobs and Pods in one namespace):

- `status`: one table of workloads (ready/desired, Jobs complete/failed) and their pods (readiness,
  restarts, the waiting reason such as CrashLoopBackOff or ImagePullBackOff, the last termination),
  then MLflow's /health and the served model version through their URLs (the kind NodePorts by
  default). Exit status 0 when everything is ready - serving may be not ready while the registry has
  no champion: that is its normal state before the first promotion, not an error - else 1.
- `wait`: block until the named workloads are ready (Jobs: complete), printing a line whenever the
  picture changes. Exit status 0 when all are, 1 on timeout or a failed Job (naming what is not ready
  and why), 2 when the API server cannot be reached or the kubeconfig is unusable.

Workloads are found by name or by their `app.kubernetes.io/name` label; `minio` (or `object-store`)
also matches whatever workload carries the object-store component label, so the same command works
for the SeaweedFS overlay.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from portfolio_mlops.errors import PortfolioMLOpsError
from portfolio_mlops.names import NAMESPACE

NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
OBJECT_STORE_COMPONENT = "object-store"
OBJECT_STORE_ALIASES = ("minio", "object-store")
# What `kind.sh up` needs before anything else can work; serving is not among them: it stays not ready
# until the registry has a champion.
DEFAULT_WAIT_FOR = ("postgres", "minio", "mlflow", "create-bucket")
# Waiting reasons that mean "this will not fix itself soon" (as opposed to ContainerCreating, PodInitializing).
FAILING_REASONS = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull",
                             "InvalidImageName", "CreateContainerConfigError", "CreateContainerError",
                             "RunContainerError"})
REQUEST_TIMEOUT_SECONDS = 10


class ClusterError(PortfolioMLOpsError):
    """The Kubernetes API cannot be used: no kubeconfig, unknown context, API server unreachable or refusing."""


# ---- what the API says, reduced to what a person needs ------------------------------------------------

@dataclass(frozen=True)
class PodState:
    name: str
    labels: dict[str, str]
    phase: str
    ready_containers: int
    containers: int
    restarts: int
    waiting_reason: str | None
    waiting_message: str | None
    last_termination: str | None  # e.g. "Error, exit code 1, 21:04:05"

    @property
    def ready(self) -> bool:
        return self.containers > 0 and self.ready_containers == self.containers

    @property
    def failing(self) -> bool:
        return self.waiting_reason in FAILING_REASONS or self.phase == "Failed"

    def status_text(self) -> str:
        text = self.waiting_reason or self.phase
        if text == "Running" and not self.ready:
            text = "Running, not ready"
        if self.last_termination and self.restarts:
            text += f" (last exit: {self.last_termination})"
        if self.waiting_reason in FAILING_REASONS and self.waiting_message:
            text += f": {self.waiting_message.splitlines()[0][:160]}"
        return text


@dataclass(frozen=True)
class WorkloadState:
    kind: str  # Deployment, StatefulSet or Job
    name: str
    app: str
    component: str | None
    ready: int  # Jobs: succeeded pods
    desired: int  # Jobs: completions
    done: bool  # rolled out and ready; Jobs: complete
    failed: bool  # Jobs only: the Failed condition
    pods: tuple[PodState, ...] = ()
    detail: str = ""  # why a rollout is not done when the counts alone do not say

    @property
    def label(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    def counts(self) -> str:
        return f"{self.ready}/{self.desired}"

    def why_not(self) -> str:
        """One line: the most telling reason this workload is not done."""
        if self.failed:
            return f"{self.label} failed ({self.detail})"
        for pod in sorted(self.pods, key=lambda p: (not p.failing, p.ready, p.name)):
            if pod.failing or (not pod.ready and self.kind != "Job"):
                restarts = f", {pod.restarts} restarts" if pod.restarts else ""
                return f"{self.label} {self.counts()}: pod {pod.name} {pod.status_text()}{restarts}"
        if self.kind == "Job":
            running = [p.name for p in self.pods if p.phase in ("Pending", "Running")]
            return (f"{self.label} {self.counts()}: running" + (f" (pod {', '.join(running)})" if running else "")
                    + (f", {self.detail}" if self.detail else ""))
        if self.detail:
            return f"{self.label} {self.counts()}: {self.detail}"
        return f"{self.label} {self.counts()}: " + ("no pods yet" if not self.pods else "pods not ready")


@dataclass(frozen=True)
class Snapshot:
    namespace: str
    workloads: tuple[WorkloadState, ...]
    pods: tuple[PodState, ...]


# ---- the API ------------------------------------------------------------------------------------------

@dataclass
class Cluster:
    """Read-only access to one namespace through the kubernetes client."""

    namespace: str
    context: str
    _core: Any = field(repr=False)
    _apps: Any = field(repr=False)
    _batch: Any = field(repr=False)

    @classmethod
    def connect(cls, namespace: str, context: str | None = None, kubeconfig: str | None = None) -> "Cluster":
        """From a kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config), else the in-cluster service account."""
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        configuration = client.Configuration()
        path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        try:
            found = any(Path(p).is_file() for p in path.split(os.pathsep) if p)
            if (kubeconfig or context) and not found:
                raise ClusterError(f"no kubeconfig at {path}: create the cluster (scripts/kind.sh up) or pass "
                                   "--kubeconfig / set KUBECONFIG")
            if found:
                config.load_kube_config(config_file=path, context=context, client_configuration=configuration,
                                        persist_config=False)
                contexts, active = config.list_kube_config_contexts(config_file=path)
                context_name = context or (active or {}).get("name", "?")
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=configuration)
                context_name = "in-cluster"
            else:
                raise ClusterError(f"no kubeconfig at {path} and not running in a pod; create the cluster "
                                   "(scripts/kind.sh up) or pass --kubeconfig / set KUBECONFIG")
        except (ConfigException, OSError, ValueError, TypeError) as exc:
            raise ClusterError(f"kubeconfig {path}: {exc}") from None
        # One quick retry: `wait` polls anyway, and `status` should say "unreachable" in seconds, not minutes.
        configuration.retries = 1
        api = client.ApiClient(configuration)
        return cls(namespace, context_name, client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api))

    def snapshot(self) -> Snapshot:
        deployments = self._list(self._apps.list_namespaced_deployment)
        statefulsets = self._list(self._apps.list_namespaced_stateful_set)
        jobs = self._list(self._batch.list_namespaced_job)
        pods = tuple(_pod_state(p) for p in self._list(self._core.list_namespaced_pod))
        workloads = ([_deployment_state(d, pods) for d in deployments]
                     + [_statefulset_state(s, pods) for s in statefulsets] + [_job_state(j, pods) for j in jobs])
        return Snapshot(self.namespace, tuple(workloads), pods)

    def _list(self, method: Callable[..., Any]) -> list[Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            return list(method(self.namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS).items)
        except ApiException as exc:
            reason = _api_error_message(exc)
            raise ClusterError(f"the Kubernetes API ({self.context}) answered {exc.status} to "
                               f"{method.__name__}({self.namespace!r}): {reason}") from None
        except Exception as exc:  # urllib3 connection errors, timeouts, TLS failures
            raise ClusterError(f"the Kubernetes API ({self.context}) is unreachable: {_first_line(exc)}") from None


def _api_error_message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 240 else text[:237] + "..."


def _labels(obj: Any) -> dict[str, str]:
    return dict(obj.metadata.labels or {})


def _selected(pods: tuple[PodState, ...], selector: Any) -> tuple[PodState, ...]:
    match = dict((selector.match_labels if selector is not None else None) or {})
    if not match:
        return ()
    return tuple(p for p in pods if all(p.labels.get(k) == v for k, v in match.items()))


def _pod_state(pod: Any) -> PodState:
    statuses = list(pod.status.container_statuses or []) if pod.status else []
    init_statuses = list(pod.status.init_container_statuses or []) if pod.status else []
    containers = len(pod.spec.containers) if pod.spec and pod.spec.containers else len(statuses)
    waiting = next((s.state.waiting for s in (*init_statuses, *statuses) if s.state and s.state.waiting), None)
    last = None
    for status in (*init_statuses, *statuses):
        terminated = status.last_state.terminated if status.last_state else None
        if terminated is not None:
            finished = terminated.finished_at.strftime("%H:%M:%S") if terminated.finished_at else "?"
            last = f"{terminated.reason or 'terminated'}, exit code {terminated.exit_code}, {finished}"
    return PodState(
        name=pod.metadata.name, labels=_labels(pod), phase=(pod.status.phase if pod.status else None) or "Unknown",
        ready_containers=sum(1 for s in statuses if s.ready), containers=containers,
        restarts=sum(s.restart_count or 0 for s in (*init_statuses, *statuses)),
        waiting_reason=waiting.reason if waiting else None, waiting_message=waiting.message if waiting else None,
        last_termination=last)


def _deployment_state(deployment: Any, pods: tuple[PodState, ...]) -> WorkloadState:
    spec, status = deployment.spec, deployment.status
    desired = spec.replicas if spec.replicas is not None else 1
    ready = (status.ready_replicas or 0) if status else 0
    updated = (status.updated_replicas or 0) if status else 0
    total = (status.replicas or 0) if status else 0
    observed = (status.observed_generation or 0) if status else 0
    # `kubectl rollout status`'s conditions: the controller saw the latest spec, every replica runs it,
    # no old replica is left, all are ready.
    detail = ""
    if observed < (deployment.metadata.generation or 0):
        detail = "rollout not yet observed"
    elif updated < desired:
        detail = f"{updated}/{desired} replicas updated"
    elif total > updated:
        detail = f"{total - updated} old replicas terminating"
    done = not detail and ready >= desired
    labels = _labels(deployment)
    return WorkloadState("Deployment", deployment.metadata.name, labels.get(NAME_LABEL, deployment.metadata.name),
                         labels.get(COMPONENT_LABEL), ready, desired, done, False, _selected(pods, spec.selector), detail)


def _statefulset_state(statefulset: Any, pods: tuple[PodState, ...]) -> WorkloadState:
    spec, status = statefulset.spec, statefulset.status
    desired = spec.replicas if spec.replicas is not None else 1
    ready = (status.ready_replicas or 0) if status else 0
    observed = (status.observed_generation or 0) if status else 0
    revision_done = status is not None and (status.update_revision is None
                                            or status.update_revision == status.current_revision)
    detail = ""
    if observed < (statefulset.metadata.generation or 0):
        detail = "rollout not yet observed"
    elif not revision_done:
        detail = "rolling update in progress"
    labels = _labels(statefulset)
    return WorkloadState("StatefulSet", statefulset.metadata.name, labels.get(NAME_LABEL, statefulset.metadata.name),
                         labels.get(COMPONENT_LABEL), ready, desired, not detail and ready >= desired, False,
                         _selected(pods, spec.selector), detail)


def _job_state(job: Any, pods: tuple[PodState, ...]) -> WorkloadState:
    conditions = {c.type: c for c in ((job.status.conditions or []) if job.status else []) if c.status == "True"}
    completions = job.spec.completions if job.spec.completions is not None else 1
    succeeded = (job.status.succeeded or 0) if job.status else 0
    failed_pods = (job.status.failed or 0) if job.status else 0
    failed = "Failed" in conditions
    detail = (f"{conditions['Failed'].reason}: {conditions['Failed'].message}" if failed
              else f"{failed_pods} failed attempts" if failed_pods else "")
    labels = _labels(job)
    return WorkloadState("Job", job.metadata.name, labels.get(NAME_LABEL, job.metadata.name),
                         labels.get(COMPONENT_LABEL), succeeded, completions, "Complete" in conditions, failed,
                         _selected(pods, job.spec.selector), detail)


def matches(target: str, workload: WorkloadState) -> bool:
    """A --for name names a workload by name or app label; the object store answers to its aliases."""
    if target in (workload.name, workload.app):
        return True
    return (target in OBJECT_STORE_ALIASES and workload.kind != "Job"
            and workload.component == OBJECT_STORE_COMPONENT)


# ---- HTTP endpoints through the NodePorts ---------------------------------------------------------------

def _http_json(url: str, timeout: float = 5.0) -> tuple[int | None, Any, str]:
    """(status or None when nothing answered, parsed JSON or None, raw text or the error)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (the user's own cluster)
            raw = response.read().decode("utf-8", "replace")
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read().decode("utf-8", "replace"), exc.code
    except (urllib.error.URLError, OSError) as exc:
        return None, None, str(getattr(exc, "reason", exc))
    try:
        return status, json.loads(raw), raw
    except ValueError:
        return status, None, raw


@dataclass(frozen=True)
class EndpointCheck:
    name: str
    url: str
    ok: bool
    text: str
    normal_not_ready: bool = False  # serving without a champion


def check_mlflow(base_url: str) -> EndpointCheck:
    url = base_url.rstrip("/") + "/health"
    status, _, raw = _http_json(url)
    if status == 200:
        return EndpointCheck("mlflow", url, True, "healthy")
    return EndpointCheck("mlflow", url, False, f"HTTP {status}: {raw.strip()[:120]}" if status else f"no answer ({raw})")


def check_serving(base_url: str) -> EndpointCheck:
    url = base_url.rstrip("/") + "/version"
    status, body, raw = _http_json(url)
    if status == 200 and isinstance(body, dict) and body.get("version"):
        return EndpointCheck("serving", url, True, f"{body.get('registered_model')} v{body['version']} "
                                                   f"(alias {body.get('alias')}, run {body.get('run_id')}, "
                                                   f"loaded {body.get('loaded_at')})")
    if status == 503 and isinstance(body, dict) and body.get("state") == "no-alias":
        return EndpointCheck("serving", url, False, f"not ready: no champion yet ({body.get('reason')})",
                             normal_not_ready=True)
    if status == 503 and isinstance(body, dict):
        return EndpointCheck("serving", url, False, f"not ready: {body.get('reason')}")
    return EndpointCheck("serving", url, False, f"HTTP {status}: {raw.strip()[:120]}" if status else f"no answer ({raw})")


# ---- status ---------------------------------------------------------------------------------------------

def status_report(snapshot: Snapshot, context: str, endpoints: list[EndpointCheck]) -> tuple[str, list[str]]:
    """The printed report and the list of problems (empty: exit status 0)."""
    serving = next((e for e in endpoints if e.name == "serving"), None)
    lines = [f"namespace {snapshot.namespace} (context {context})", "",
             f"{'WORKLOAD':<34} {'READY':>7}  STATUS"]
    problems: list[str] = []
    order = {"StatefulSet": 0, "Deployment": 1, "Job": 2}
    for workload in sorted(snapshot.workloads, key=lambda w: (order[w.kind], w.name)):
        if workload.kind == "Job":
            state = "complete" if workload.done else "failed" if workload.failed else "running"
        else:
            state = "ready" if workload.done else "not ready"
        note = ""
        if not workload.done:
            # Serving without a champion: alive, not ready, and rightly so.
            excused = (workload.app == "serving" and serving is not None and serving.normal_not_ready
                       and not any(p.failing for p in workload.pods))
            note = "no champion yet (normal before the first promotion)" if excused else workload.why_not()
            if not excused:
                problems.append(workload.why_not())
        lines.append(f"{workload.label:<34} {workload.counts():>7}  {state}" + (f"  - {note}" if note else ""))
    if not snapshot.workloads:
        lines.append(f"(none: nothing applied to namespace {snapshot.namespace}? kubectl apply -k k8s/overlays/kind)")
        problems.append(f"no workloads in namespace {snapshot.namespace}")
    lines += ["", f"{'POD':<44} {'READY':>5} {'RESTARTS':>8}  STATUS"]
    for pod in sorted(snapshot.pods, key=lambda p: p.name):
        lines.append(f"{pod.name:<44} {pod.ready_containers}/{pod.containers:<3} {pod.restarts:>8}  {pod.status_text()}")
    if endpoints:
        lines += ["", f"{'ENDPOINT':<9} {'URL':<40} STATE"]
        for endpoint in endpoints:
            lines.append(f"{endpoint.name:<9} {endpoint.url:<40} {endpoint.text}")
            if not endpoint.ok and not endpoint.normal_not_ready:
                problems.append(f"{endpoint.name} {endpoint.url}: {endpoint.text}")
    return "\n".join(lines), problems


def run_status(cluster: Cluster, mlflow_url: str, serving_url: str) -> int:
    snapshot = cluster.snapshot()
    endpoints = ([check_mlflow(mlflow_url)] if mlflow_url else []) + ([check_serving(serving_url)] if serving_url else [])
    report, problems = status_report(snapshot, cluster.context, endpoints)
    print(report)
    if problems:
        print("\nnot ready:\n" + "\n".join(f"  {p}" for p in problems))
        return 1
    waiting = any(e.normal_not_ready for e in endpoints)
    print("\nall ready" + (" (serving waits for the first champion)" if waiting else ""))
    return 0


# ---- wait -----------------------------------------------------------------------------------------------

def _target_states(snapshot: Snapshot, targets: list[str]) -> dict[str, tuple[str, str]]:
    """target -> ("done" | "waiting" | "failed", one line of why)."""
    states = {}
    for target in targets:
        found = [w for w in snapshot.workloads if matches(target, w)]
        if not found:
            states[target] = ("waiting", f"{target}: no such workload in namespace {snapshot.namespace} (yet)")
        elif any(w.failed for w in found):
            states[target] = ("failed", "; ".join(w.why_not() for w in found if w.failed))
        elif all(w.done for w in found):
            states[target] = ("done", ", ".join(f"{w.label} {w.counts()}" for w in found))
        else:
            states[target] = ("waiting", "; ".join(w.why_not() for w in found if not w.done))
    return states


def run_wait(cluster: Cluster, targets: list[str], timeout: float, interval: float,
             clock: Callable[[], float] = time.monotonic) -> int:
    started = clock()
    cluster.snapshot()  # the first contact: an unusable API is a usage problem (exit 2), not a timeout
    previous: str | None = None
    states: dict[str, tuple[str, str]] = {}
    api_problem: str | None = None
    while True:
        elapsed = clock() - started
        try:
            states = _target_states(cluster.snapshot(), targets)
            api_problem = None
        except ClusterError as exc:  # a blip after the first contact: keep waiting, say so once
            if str(exc) != api_problem:
                api_problem = str(exc)
                print(f"[{elapsed:5.0f}s] {exc}; retrying", flush=True)
        if api_problem is None:
            failed = [why for state, why in states.values() if state == "failed"]
            if failed:
                print(f"[{elapsed:5.0f}s] failed: " + "; ".join(failed), flush=True)
                return 1
            if all(state == "done" for state, _ in states.values()):
                print(f"[{elapsed:5.0f}s] ready: " + ", ".join(why for _, why in states.values()), flush=True)
                return 0
            picture = "; ".join(why for state, why in states.values() if state != "done")
            if picture != previous:
                ready = [t for t, (state, _) in states.items() if state == "done"]
                print(f"[{elapsed:5.0f}s] waiting for {picture}" + (f"  (ready: {', '.join(ready)})" if ready else ""),
                      flush=True)
                previous = picture
        if elapsed >= timeout:
            not_ready = [why for state, why in states.values() if state != "done"] or [api_problem or "?"]
            print(f"timed out after {timeout:g}s; not ready:\n" + "\n".join(f"  {why}" for why in not_ready), flush=True)
            return 1
        time.sleep(max(0.0, min(interval, timeout - elapsed)))


# ---- CLI ------------------------------------------------------------------------------------------------

def add_arguments(cluster: argparse.ArgumentParser) -> None:
    actions = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", "-n", default=NAMESPACE, help=f"namespace of our workloads (default: {NAMESPACE})")
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    common.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config; "
                                                             "in a pod: its service account)")
    status = actions.add_parser(
        "status", parents=[common], help="workloads, pods, MLflow health and the served model version",
        description="Print Deployments/StatefulSets (ready/desired), Jobs (complete/failed), pods (ready, restarts, "
                    "waiting reason, last termination), MLflow /health and the served model version (/version). "
                    "Exit status 0 when all are ready (serving may wait for a champion), 1 otherwise, 2 when the "
                    "API cannot be reached.")
    status.add_argument("--mlflow-url", default="http://localhost:30500", metavar="URL",
                        help="MLflow as seen from here (default: the kind NodePort http://localhost:30500; '' skips)")
    status.add_argument("--serving-url", default="http://localhost:30080", metavar="URL",
                        help="serving as seen from here (default: the kind NodePort http://localhost:30080; '' skips)")
    wait = actions.add_parser(
        "wait", parents=[common], help="wait until the named workloads are ready (Jobs: complete)",
        description="Poll until every named workload is ready (Deployment/StatefulSet rolled out and ready, Job "
                    "complete), printing what is still missing whenever that changes. Exit status 0 when all are, "
                    "1 on timeout or a failed Job (naming what is not ready and why), 2 when the API cannot be "
                    "reached.")
    wait.add_argument("--for", dest="targets", default=",".join(DEFAULT_WAIT_FOR), metavar="LIST",
                      help=f"comma-separated workload names or app labels (default: {','.join(DEFAULT_WAIT_FOR)}; "
                           "'minio' also matches the SeaweedFS object store)")
    wait.add_argument("--timeout", type=float, default=600, metavar="SECONDS", help="give up after (default 600)")
    wait.add_argument("--interval", type=float, default=3, metavar="SECONDS", help="between two polls (default 3)")


def run_command(args: argparse.Namespace) -> int:
    if args.cluster_command == "wait":
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        if not targets or args.timeout <= 0 or args.interval <= 0:
            raise ClusterError("--for needs at least one name, --timeout and --interval must be > 0")
    # urllib3 logs each connection retry as a WARNING; this command reports an unreachable API itself,
    # in one line, so those records would only add noise (or tracebacks, when some handler's stream
    # has gone away) to what a person or CI reads.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    cluster = Cluster.connect(args.namespace, args.context, args.kubeconfig)
    if args.cluster_command == "status":
        return run_status(cluster, args.mlflow_url, args.serving_url)
    if args.cluster_command == "wait":
        print(f"waiting up to {args.timeout:g}s for {', '.join(targets)} in {args.namespace} (context {cluster.context})",
              flush=True)
        return run_wait(cluster, targets, args.timeout, args.interval)
    raise AssertionError(args.cluster_command)
