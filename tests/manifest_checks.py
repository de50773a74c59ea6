"""Cross-reference checks over a rendered set of Kubernetes manifests (a list of dicts, e.g. the
output of `kubectl kustomize k8s/overlays/<name>` parsed with yaml.safe_load_all).

Every check is a pure function of the documents (and plain parameters) that returns a list of
human-readable problems; an empty list means the check passed. tests/test_k8s_checks.py runs them
on every rendered overlay and on small hand-made sets that violate each one.

Test code, so it lives with the tests: the renderer (charts/) needs none of it, and the rendered
tree is committed and pinned by the drift test, so users get a checked tree without running these.
(pod_templates and cpu_millicores, which the kind overlay also uses, live in charts/objects.py.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from portfolio_mlops_kfp.charts.objects import cpu_millicores, pod_templates
from portfolio_mlops_kfp.charts.values import MinioValues, PostgresValues, ProductionValues

Doc = dict[str, Any]

# Secrets that the production overlay documents as provided outside the rendered set.
EXTERNAL_SECRETS = frozenset({PostgresValues().secret, MinioValues().secret, ProductionValues().auth_secret})


def _ns(doc: Mapping[str, Any]) -> str:
    return (doc.get("metadata") or {}).get("namespace") or "default"


def _name(doc: Mapping[str, Any]) -> str:
    return (doc.get("metadata") or {}).get("name", "?")


def _label(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('kind', '?')} {_ns(doc)}/{_name(doc)}"


def containers(pod_spec: Mapping[str, Any]) -> Iterator[Doc]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod_spec.get(field) or []


def _index(docs: Iterable[Doc]) -> set[tuple[str, str, str]]:
    return {(doc.get("kind", ""), _ns(doc), _name(doc)) for doc in docs}


def _find(docs: Iterable[Doc], kind: str, namespace: str, name: str) -> Doc | None:
    for doc in docs:
        if doc.get("kind") == kind and _ns(doc) == namespace and _name(doc) == name:
            return doc
    return None


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def services_matching(service: Doc, docs: Iterable[Doc]) -> list[tuple[Doc, Doc]]:
    """The (owner, pod template) pairs in the Service's namespace its selector selects."""
    selector = (service.get("spec") or {}).get("selector") or {}
    return [(owner, tpl) for owner, tpl in pod_templates(docs)
            if _ns(owner) == _ns(service) and _selects(selector, (tpl.get("metadata") or {}).get("labels") or {})]


def check_service_selectors(docs: list[Doc]) -> list[str]:
    """Every Service with a selector selects at least one pod template of the set (ExternalName and
    selector-less Services, whose endpoints are managed elsewhere, are skipped)."""
    problems = []
    for svc in docs:
        if svc.get("kind") != "Service":
            continue
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName" or not spec.get("selector"):
            continue
        if not services_matching(svc, docs):
            problems.append(f"{_label(svc)}: selector {spec['selector']} matches no pod template")
    return problems


def _key_problem(target: Doc, key: str | None, fields: tuple[str, ...]) -> str | None:
    if key is None:
        return None
    keys: set[str] = set()
    for field in fields:
        keys |= set((target.get(field) or {}).keys())
    if keys and key not in keys:
        return f"key {key!r} not in {_label(target)} (has {sorted(keys)})"
    return None


def check_references(docs: list[Doc], external_secrets: Iterable[str] = ()) -> list[str]:
    """Every secretKeyRef / configMapKeyRef / envFrom / volume (secret, configMap, projected, PVC) /
    serviceAccountName a pod template uses resolves to an object of the set in the same namespace,
    with the referenced key when the object lists its keys. Skipped: optional refs, Secrets named in
    `external_secrets`, PVCs from a StatefulSet's volumeClaimTemplates, the default ServiceAccount."""
    external = set(external_secrets)
    problems: list[str] = []

    def need(owner: Doc, kind: str, name: str, key: str | None = None, optional: bool = False) -> None:
        if optional or (kind == "Secret" and name in external):
            return
        target = _find(docs, kind, _ns(owner), name)
        if target is None:
            problems.append(f"{_label(owner)}: {kind} {_ns(owner)}/{name} not in the rendered set")
            return
        fields = ("data", "stringData") if kind == "Secret" else ("data", "binaryData")
        if kind in ("Secret", "ConfigMap") and (problem := _key_problem(target, key, fields)):
            problems.append(f"{_label(owner)}: {problem}")

    for owner, tpl in pod_templates(docs):
        spec = tpl.get("spec") or {}
        claim_templates = {_name(c) for c in ((owner.get("spec") or {}).get("volumeClaimTemplates") or [])}
        account = spec.get("serviceAccountName") or spec.get("serviceAccount")
        if account and account != "default":
            need(owner, "ServiceAccount", account)
        for c in containers(spec):
            for env in c.get("env") or []:
                source = env.get("valueFrom") or {}
                if ref := source.get("secretKeyRef"):
                    need(owner, "Secret", ref.get("name", ""), ref.get("key"), bool(ref.get("optional")))
                if ref := source.get("configMapKeyRef"):
                    need(owner, "ConfigMap", ref.get("name", ""), ref.get("key"), bool(ref.get("optional")))
            for env_from in c.get("envFrom") or []:
                if ref := env_from.get("secretRef"):
                    need(owner, "Secret", ref.get("name", ""), optional=bool(ref.get("optional")))
                if ref := env_from.get("configMapRef"):
                    need(owner, "ConfigMap", ref.get("name", ""), optional=bool(ref.get("optional")))
        for volume in spec.get("volumes") or []:
            if ref := volume.get("secret"):
                need(owner, "Secret", ref.get("secretName", ""), optional=bool(ref.get("optional")))
            if ref := volume.get("configMap"):
                need(owner, "ConfigMap", ref.get("name", ""), optional=bool(ref.get("optional")))
            if (ref := volume.get("persistentVolumeClaim")) and ref.get("claimName") not in claim_templates:
                need(owner, "PersistentVolumeClaim", ref.get("claimName", ""))
            for source in (volume.get("projected") or {}).get("sources") or []:
                if ref := source.get("secret"):
                    need(owner, "Secret", ref.get("name", ""), optional=bool(ref.get("optional")))
                if ref := source.get("configMap"):
                    need(owner, "ConfigMap", ref.get("name", ""), optional=bool(ref.get("optional")))
    return list(dict.fromkeys(problems))  # one line per missing object and owner


def _port_names_numbers(container: Mapping[str, Any]) -> tuple[set[str], set[int]]:
    ports = container.get("ports") or []
    return ({p["name"] for p in ports if p.get("name")}, {p["containerPort"] for p in ports if "containerPort" in p})


def _port_ok(port: Any, names: set[str], numbers: set[int]) -> bool:
    return port in names if isinstance(port, str) and not port.isdigit() else int(port) in numbers


def check_ports(docs: list[Doc]) -> list[str]:
    """Every Service port's targetPort (number or name; defaults to port) is a containerPort of every
    pod template it selects; every probe port (httpGet / tcpSocket / grpc) is a containerPort of
    its container (by name, or by number)."""
    problems = []
    for svc in docs:
        if svc.get("kind") != "Service" or not (svc.get("spec") or {}).get("selector"):
            continue
        for owner, tpl in services_matching(svc, docs):
            names: set[str] = set()
            numbers: set[int] = set()
            for c in ((tpl.get("spec") or {}).get("containers") or []):
                n, m = _port_names_numbers(c)
                names, numbers = names | n, numbers | m
            for port in (svc.get("spec") or {}).get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if not _port_ok(target, names, numbers):
                    problems.append(f"{_label(svc)}: targetPort {target!r} (port {port.get('port')}) is no "
                                    f"containerPort of {_label(owner)} (names {sorted(names)}, numbers {sorted(numbers)})")
    for owner, tpl in pod_templates(docs):
        for c in containers(tpl.get("spec") or {}):
            names, numbers = _port_names_numbers(c)
            for probe_kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(probe_kind) or {}
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    if handler in probe and "port" in probe[handler]:
                        port = probe[handler]["port"]
                        if not _port_ok(port, names, numbers):
                            problems.append(f"{_label(owner)}: container {c.get('name')} {probe_kind} port {port!r} "
                                            f"is no containerPort (names {sorted(names)}, numbers {sorted(numbers)})")
    return problems


def _mentions_host(text: str, service: str) -> bool:
    """True when `text` names `service` as a host: scheme://service, @service, or a bare
    service[.ns[.svc...]][:port] value."""
    host = rf"{re.escape(service)}(\.[a-z0-9-]+)*(:\d+)?"
    return bool(re.search(rf"(//|@){host}([/:?]|$|\s)", text) or re.fullmatch(host, text.strip()))


def check_mlflow_wiring(docs: list[Doc], required: Mapping[str, Iterable[str]],
                        container_name: str = "mlflow") -> list[str]:
    """The MLflow server container (by name) refers, in its command/args/env values, to one Service of
    each role in `required` by name, e.g. {"backend store": ["postgres"], "artifact store": ["minio"]},
    and that Service is in the rendered set."""
    services = {_name(d) for d in docs if d.get("kind") == "Service"}
    found = [(owner, c) for owner, tpl in pod_templates(docs)
             for c in (tpl.get("spec") or {}).get("containers") or [] if c.get("name") == container_name]
    if not found:
        return [f"no container named {container_name!r} in any pod template"]
    problems = []
    for owner, c in found:
        texts = [str(t) for t in (c.get("command") or []) + (c.get("args") or [])]
        texts += [str(e["value"]) for e in c.get("env") or [] if "value" in e]
        for role, names in required.items():
            names = list(names)
            hits = [n for n in names if any(_mentions_host(t, n) for t in texts)]
            if not hits:
                problems.append(f"{_label(owner)}: container {container_name} names no {role} Service "
                                f"({' / '.join(names)}) in its command, args or env")
            elif not any(n in services for n in hits):
                problems.append(f"{_label(owner)}: {role} Service {hits[0]!r} is not in the rendered set")
    return problems


def pod_cpu_request(pod_spec: Mapping[str, Any]) -> float:
    """The CPU (millicores) the scheduler reserves for one pod: the larger of its largest init
    container and the sum of its containers (init containers run one at a time, before them)."""
    def request(c: Mapping[str, Any]) -> float:
        return cpu_millicores(((c.get("resources") or {}).get("requests") or {}).get("cpu", 0))

    init = max((request(c) for c in pod_spec.get("initContainers") or []), default=0.0)
    return max(init, sum(request(c) for c in pod_spec.get("containers") or []))


def cpu_requests(docs: Iterable[Doc]) -> dict[str, float]:
    """"Kind namespace/name" -> millicores requested by all its replicas, for every workload."""
    found = {}
    for owner, tpl in pod_templates(docs):
        replicas = (owner.get("spec") or {}).get("replicas", 1) if owner.get("kind") != "Job" else 1
        found[_label(owner)] = pod_cpu_request(tpl.get("spec") or {}) * replicas
    return found


_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_pinned(ref: str) -> bool:
    """A tag that is not `latest`, or a digest."""
    if _DIGEST.search(ref):
        return True
    last = ref.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in ("", "latest")


def image_digest_pinned(ref: str) -> bool:
    """`name:tag@sha256:<64 hex>`: the digest fixes the content, the tag says what it is."""
    if not _DIGEST.search(ref):
        return False
    return image_pinned(ref.split("@", 1)[0])


def check_images(docs: list[Doc], ours: Iterable[str]) -> list[str]:
    """Every container image is one of ours (exactly as portfolio_mlops_kfp.components.images names it)
    or an upstream image pinned by tag AND digest (`tag@sha256:...`: a tag can be re-pushed). An image
    under our registry prefix that is not one of ours (stale tag, misspelt name) is a problem too."""
    ours = set(ours)
    prefixes = {o.rsplit("/", 1)[0] + "/" for o in ours}
    problems = []
    for owner, tpl in pod_templates(docs):
        for c in containers(tpl.get("spec") or {}):
            ref = c.get("image", "")
            if ref in ours:
                continue
            if any(ref.startswith(p) for p in prefixes):
                problems.append(f"{_label(owner)}: container {c.get('name')} image {ref!r} is under our "
                                f"registry but not one of portfolio_mlops_kfp.components.images ({sorted(ours)})")
            elif not image_digest_pinned(ref):
                problems.append(f"{_label(owner)}: container {c.get('name')} image {ref!r} is not pinned "
                                "(upstream images need tag@sha256:<digest>)")
    return problems


def check_network_policies(docs: list[Doc]) -> list[str]:
    """Every pod template is selected by at least one NetworkPolicy of its namespace that governs
    Ingress (an empty podSelector selects every pod of the namespace)."""
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"
                and "Ingress" in ((d.get("spec") or {}).get("policyTypes") or ["Ingress"])]
    problems = []
    for owner, tpl in pod_templates(docs):
        labels = (tpl.get("metadata") or {}).get("labels") or {}
        selected = False
        for policy in policies:
            if _ns(policy) != _ns(owner):
                continue
            selector = (policy.get("spec") or {}).get("podSelector") or {}
            if selector.get("matchExpressions"):
                raise ValueError(f"{_label(policy)}: matchExpressions are not supported by this check")
            match = selector.get("matchLabels") or {}
            if all(labels.get(key) == value for key, value in match.items()):
                selected = True
        if not selected:
            problems.append(f"{_label(owner)}: no NetworkPolicy of namespace {_ns(owner)} selects its pods")
    return problems


def _host_allowed(allowed: Iterable[str], host: str) -> bool:
    """MLflow 3.17's rule (mlflow.server.security_utils.is_allowed_host_header): an entry with `*`
    is an fnmatch pattern, any other must equal the Host header exactly (port included)."""
    import fnmatch

    allowed = list(allowed)
    return "*" in allowed or any(fnmatch.fnmatch(host, a) if "*" in a else host == a for a in allowed)


def mlflow_client_hosts(docs: Iterable[Doc], variable: str = "MLFLOW_TRACKING_URI") -> dict[str, str]:
    """Host header -> where it is configured, for every `variable` value in container env and
    ConfigMap data of the set (the Host an HTTP client sends: host, plus `:port` unless default)."""
    from urllib.parse import urlsplit

    found: dict[str, str] = {}

    def add(uri: str, where: str) -> None:
        parts = urlsplit(uri)
        default = {"http": 80, "https": 443}.get(parts.scheme)
        host = parts.hostname or ""
        found[host if parts.port in (None, default) else f"{host}:{parts.port}"] = where

    for doc in docs:
        if doc.get("kind") == "ConfigMap" and variable in (doc.get("data") or {}):
            add(doc["data"][variable], f"{_label(doc)} data.{variable}")
    for owner, tpl in pod_templates(docs):
        for c in containers(tpl.get("spec") or {}):
            for env in c.get("env") or []:
                if env.get("name") == variable and "value" in env:
                    add(env["value"], f"{_label(owner)} container {c.get('name')} env {variable}")
    return found


def check_mlflow_allowed_hosts(docs: list[Doc], hosts: Mapping[str, str], container_name: str = "mlflow") -> list[str]:
    """Every Host in `hosts` (Host -> where it comes from) passes the `--allowed-hosts` of the
    MLflow server container (by name) under MLflow's matching rule."""
    problems = []
    for owner, tpl in pod_templates(docs):
        for c in (tpl.get("spec") or {}).get("containers") or []:
            if c.get("name") != container_name:
                continue
            args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
            values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--allowed-hosts"]
            values += [a.split("=", 1)[1] for a in args if a.startswith("--allowed-hosts=")]
            if not values:
                problems.append(f"{_label(owner)}: container {container_name} has no --allowed-hosts "
                                "(MLflow would then allow only localhost and private IPs)")
                continue
            allowed = [h.strip() for h in values[-1].split(",")]
            problems += [f"{_label(owner)}: --allowed-hosts rejects Host {host!r} ({where})"
                         for host, where in sorted(hosts.items()) if not _host_allowed(allowed, host)]
    return problems


def node_ports(docs: Iterable[Doc]) -> dict[int, str]:
    """nodePort -> "namespace/service" for every NodePort / LoadBalancer Service port that sets one."""
    found = {}
    for svc in docs:
        if svc.get("kind") == "Service" and (svc.get("spec") or {}).get("type") in ("NodePort", "LoadBalancer"):
            for port in svc["spec"].get("ports") or []:
                if "nodePort" in port:
                    found[int(port["nodePort"])] = f"{_ns(svc)}/{_name(svc)}"
    return found


def check_kind_port_mappings(cluster: Mapping[str, Any], docs: list[Doc],
                             outside: Iterable[int] = ()) -> list[str]:
    """The kind Cluster's extraPortMappings (containerPort) and the NodePorts of the overlay's
    Services are the same set, except `outside` ports (NodePorts of Services applied elsewhere, e.g.
    the KFP UI patched by scripts/kind.sh kfp-install)."""
    mapped: dict[int, int] = {}
    for node in cluster.get("nodes") or []:
        for m in node.get("extraPortMappings") or []:
            mapped[int(m["containerPort"])] = int(m.get("hostPort", m["containerPort"]))
    ports = node_ports(docs)
    outside = set(outside)
    problems = [f"NodePort {p} of Service {svc} has no extraPortMappings entry in the kind cluster config"
                for p, svc in sorted(ports.items()) if p not in mapped]
    problems += [f"kind extraPortMappings containerPort {p} matches no NodePort Service of the overlay"
                 for p in sorted(mapped) if p not in ports and p not in outside]
    problems += [f"kind maps containerPort {p} to hostPort {h}: use the same number so the README URLs hold"
                 for p, h in sorted(mapped.items()) if p != h]
    return problems


def validate_schemas(docs: list[Doc], kubernetes_version: str = "1.33.0") -> tuple[list[str], list[str]]:
    """Strict OpenAPI validation of every object with kubernetes-validate (unknown fields are errors).
    Returns (errors, warnings); kinds without a schema (CRDs' custom resources) are warnings."""
    import kubernetes_validate

    errors, warnings = [], []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, kubernetes_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            warnings.append(f"{_label(doc)} ({doc.get('apiVersion')}): no schema for this kind in {kubernetes_version}")
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(root)"
            errors.append(f"{_label(doc)}: {path}: {exc.message}")
    return errors, warnings
