"""Builders of the Kubernetes objects the charts share: labels, hardened containers, services, volumes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from portfolio_mlops_kfp.charts.values import Resources

PART_OF = "portfolio-mlops"
Manifest = dict[str, Any]


def labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": PART_OF}


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def metadata(name: str, namespace: str, component: str) -> Manifest:
    return {"name": name, "namespace": namespace, "labels": labels(name, component)}


def container_security() -> Manifest:
    """The restricted Pod Security profile, per container (the root filesystem is read-only:
    whatever a program writes goes to an emptyDir or a PVC mounted by the caller)."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"}}


def pod_security(uid: int) -> Manifest:
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container(name: str, image: str, uid: int, resources: Resources, **fields: Any) -> Manifest:
    """A container with a pinned image, requests+limits and the hardened security context."""
    if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
        raise ValueError(f"container {name!r}: image {image!r} must carry a pinned tag (not latest)")
    body: Manifest = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent"}
    body.update({key: value for key, value in fields.items() if value is not None})
    body["resources"] = resources.manifest()
    body["securityContext"] = {**container_security(), "runAsUser": uid, "runAsGroup": uid}
    return body


def secret_env(secret: str, *keys: str, renamed: dict[str, str] | None = None) -> list[Manifest]:
    """Environment variables read from a Secret; `renamed` maps env name -> key for the others."""
    pairs = [(key, key) for key in keys] + list((renamed or {}).items())
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for env, key in pairs]


def plain_env(**variables: str) -> list[Manifest]:
    return [{"name": name, "value": value} for name, value in variables.items()]


def empty_dirs(*names: str) -> list[Manifest]:
    return [{"name": name, "emptyDir": {}} for name in names]


def mounts(**paths: str) -> list[Manifest]:
    """Volume mounts, keyword = volume name (underscores become dashes), value = mount path."""
    return [{"name": name.replace("_", "-"), "mountPath": path} for name, path in paths.items()]


def service(name: str, namespace: str, component: str, ports: dict[str, int]) -> Manifest:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(name, namespace, component),
            "spec": {"type": "ClusterIP", "selector": selector(name),
                     "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}
                               for port_name, port in ports.items()]}}


def volume_claim(name: str, storage: str) -> Manifest:
    return {"metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}}


def stateful_set(name: str, namespace: str, component: str, pod_spec: Manifest, claim: Manifest) -> Manifest:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(name, namespace, component),
            "spec": {"serviceName": name, "replicas": 1, "selector": {"matchLabels": selector(name)},
                     "template": {"metadata": {"labels": labels(name, component)}, "spec": pod_spec},
                     "volumeClaimTemplates": [claim]}}


def deployment(name: str, namespace: str, component: str, replicas: int, pod_spec: Manifest) -> Manifest:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(name, namespace, component),
            "spec": {"replicas": replicas, "selector": {"matchLabels": selector(name)},
                     "template": {"metadata": {"labels": labels(name, component)}, "spec": pod_spec}}}


def http_probe(path: str, port: str, initial_delay: int, period: int = 10, failures: int = 3) -> Manifest:
    return {"httpGet": {"path": path, "port": port}, "initialDelaySeconds": initial_delay,
            "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": failures}


def exec_probe(command: list[str], initial_delay: int, period: int = 10, failures: int = 3) -> Manifest:
    return {"exec": {"command": command}, "initialDelaySeconds": initial_delay,
            "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": failures}


# --- reading objects back (the kind overlay's patches; the tests' cross-checks in tests/manifest_checks.py)

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


def pod_templates(docs: Iterable[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(owner, pod template) for every workload: {"metadata": ..., "spec": PodSpec}."""
    for doc in docs:
        kind = doc.get("kind")
        spec = doc.get("spec") or {}
        if kind in WORKLOAD_KINDS:
            yield doc, spec.get("template") or {}
        elif kind == "CronJob":
            yield doc, ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        elif kind == "Pod":
            yield doc, {"metadata": doc.get("metadata") or {}, "spec": spec}


def cpu_millicores(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("250m", "0.5", 2) in millicores."""
    text = str(quantity).strip()
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000
