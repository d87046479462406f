#!/usr/bin/env python3
"""Policy check for the rendered Kubernetes manifests of downbeat.

    policy.py RENDERED.yaml...              check each file (`kubectl kustomize` output)
    policy.py --self-test RENDERED.yaml...  break each file in known ways, in memory,
                                            and assert that every break is reported

What a file must satisfy (rule ids in brackets):
  Workloads (Deployment, StatefulSet, DaemonSet):
  - [workload-selector] a non-empty selector that matches the pod template's labels;
  - [probe] every container has startup, liveness and readiness probes: HTTP GET,
    liveness and startup on /healthz, readiness on /readyz, on a named container port;
  - [resources] cpu and memory requests and limits on every container, requests <= limits;
  - [security] the restricted Pod Security Standard as the pods would run it:
    runAsNonRoot true and a numeric runAsUser other than 0 (pod or container),
    seccompProfile RuntimeDefault (pod or container), readOnlyRootFilesystem true,
    allowPrivilegeEscalation false, capabilities drop ALL and add nothing, not
    privileged, no host namespaces or host ports, only the restricted volume types;
  - [image] a tag that is not `latest`, or a digest;
  - [reference] the ConfigMaps and PersistentVolumeClaims mounted exist in the render.
  Services and the objects that point at workloads:
  - [service-selector] a Service selects an existing workload's pods, and its named
    target ports exist on their containers;
  - [metrics-port] each workload is selected by a Service with a port named `metrics`;
  - [statefulset-service] a StatefulSet's serviceName is a headless Service of its pods;
  - [servicemonitor] a ServiceMonitor selects at least one Service, and each endpoint's
    port is a port name of each Service it selects;
  - [double-scrape] no pod is scraped twice: the Services a ServiceMonitor selects do not
    select the same pods, and pods it scrapes carry no `prometheus.io/scrape` annotation;
  - [pdb] a PodDisruptionBudget selects an existing workload's pods and allows at least
    one eviction at the workload's smallest replica count;
  - [hpa] a HorizontalPodAutoscaler targets an existing workload, which then has no
    spec.replicas of its own (the HPA owns it), minReplicas <= maxReplicas, maxReplicas
    <= the `downbeat/topic-partitions` annotation when present, and scale-down has a
    stabilization window of at least 5 minutes (each scale-down is a rebalance);
  - [namespace] every namespaced object has a namespace.

Needs Python 3.11 and PyYAML.
"""
from __future__ import annotations

import argparse
import copy
import pathlib
import re
import sys
from dataclasses import dataclass
from typing import Callable, Iterable

import yaml

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
PROBES = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
# Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "APIService",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
}
MIN_SCALE_DOWN_WINDOW_S = 300
PARTITIONS_ANNOTATION = "downbeat/topic-partitions"


@dataclass(frozen=True)
class Finding:
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


def ref(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{ns + '/' if ns else ''}{meta.get('name')}"


def namespace(obj: dict) -> str | None:
    return (obj.get("metadata") or {}).get("namespace")


def load(path: pathlib.Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- selectors -----------------------------------------------------------------

def label_selector_matches(selector: dict | None, labels: dict) -> bool:
    """A metav1.LabelSelector (matchLabels, matchExpressions). An empty or missing
    selector matches nothing here: selecting every pod is never what we want."""
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def map_selector_matches(selector: dict | None, labels: dict) -> bool:
    """A Service's spec.selector (a plain map). Empty matches nothing here."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- quantities ----------------------------------------------------------------

_SUFFIX = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")


def quantity(value) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    return float(match.group(1)) * _SUFFIX[match.group(2) or ""]


# --- the check -----------------------------------------------------------------

class Render:
    """The objects of one rendered overlay, indexed."""

    def __init__(self, docs: list[dict]):
        self.docs = docs
        self.workloads = [d for d in docs if d.get("kind") in WORKLOAD_KINDS]
        self.services = [d for d in docs if d.get("kind") == "Service"]

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") == kind]

    def names(self, kind: str, ns: str | None) -> set[str]:
        return {d["metadata"]["name"] for d in self.of_kind(kind) if namespace(d) == ns}

    @staticmethod
    def pod_labels(workload: dict) -> dict:
        return ((workload.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}

    @staticmethod
    def pod_spec(workload: dict) -> dict:
        return ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}

    def workloads_selected(self, ns: str | None, matches: Callable[[dict], bool]) -> list[dict]:
        return [w for w in self.workloads if namespace(w) == ns and matches(self.pod_labels(w))]


def check(docs: list[dict]) -> list[Finding]:
    r = Render(docs)
    out: list[Finding] = []
    for w in r.workloads:
        out += check_workload(r, w)
    out += check_services(r)
    out += check_service_monitors(r)
    out += check_pdbs(r)
    out += check_hpas(r)
    for d in docs:
        if d.get("kind") not in CLUSTER_SCOPED and not namespace(d):
            out.append(Finding("namespace", ref(d), "no metadata.namespace (set `namespace:` in the overlay)"))
    return out


def check_workload(r: Render, w: dict) -> list[Finding]:
    out: list[Finding] = []
    where = ref(w)
    spec = w.get("spec") or {}
    selector = spec.get("selector")
    if not label_selector_matches(selector, r.pod_labels(w)):
        out.append(Finding("workload-selector", where, f"selector {selector} is empty or does not match the pod template labels {r.pod_labels(w)}"))

    pod = r.pod_spec(w)
    psc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            out.append(Finding("security", where, f"{flag} is true"))
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(Finding("security", where, f"volume {vol.get('name')} is of type {sorted(kinds - RESTRICTED_VOLUMES)}, not allowed by the restricted standard"))
        if "configMap" in vol:
            name = vol["configMap"].get("name")
            if name not in r.names("ConfigMap", namespace(w)) and not vol["configMap"].get("optional"):
                out.append(Finding("reference", where, f"volume {vol.get('name')} mounts ConfigMap {name}, which the render does not contain"))
        if "persistentVolumeClaim" in vol:
            name = vol["persistentVolumeClaim"].get("claimName")
            if name not in r.names("PersistentVolumeClaim", namespace(w)):
                out.append(Finding("reference", where, f"volume {vol.get('name')} mounts PersistentVolumeClaim {name}, which the render does not contain"))

    containers = pod.get("containers") or []
    if not containers:
        out.append(Finding("workload-selector", where, "no containers"))
    every = [("container", c) for c in containers] + [("initContainer", c) for c in pod.get("initContainers") or []]
    for role, c in every:
        cwhere = f"{where} {role} {c.get('name')}"
        out += check_security(cwhere, psc, c)
        out += check_resources(cwhere, c)
        out += check_image(cwhere, c)
        if role == "container":
            out += check_probes(cwhere, c)
    return out


def check_probes(where: str, c: dict) -> list[Finding]:
    out = []
    port_names = {p.get("name") for p in c.get("ports") or [] if p.get("name")}
    for probe, path in PROBES.items():
        spec = c.get(probe)
        if not spec:
            out.append(Finding("probe", where, f"no {probe}"))
            continue
        http = spec.get("httpGet")
        if not http:
            out.append(Finding("probe", where, f"{probe} is not an HTTP GET on {path}"))
            continue
        if http.get("path") != path:
            out.append(Finding("probe", where, f"{probe} is on {http.get('path')!r}, not {path}"))
        port = http.get("port")
        if not isinstance(port, str) or port not in port_names:
            out.append(Finding("probe", where, f"{probe} port {port!r} is not a named container port ({sorted(port_names)})"))
    return out


def check_resources(where: str, c: dict) -> list[Finding]:
    out = []
    res = c.get("resources") or {}
    for resource in ("cpu", "memory"):
        values = {}
        for kind in ("requests", "limits"):
            value = (res.get(kind) or {}).get(resource)
            if value is None:
                out.append(Finding("resources", where, f"no {kind}.{resource}"))
            elif quantity(value) is None:
                out.append(Finding("resources", where, f"{kind}.{resource} {value!r} is not a quantity"))
            else:
                values[kind] = quantity(value)
        if len(values) == 2 and values["requests"] > values["limits"]:
            out.append(Finding("resources", where, f"requests.{resource} exceeds limits.{resource}"))
    return out


def check_security(where: str, psc: dict, c: dict) -> list[Finding]:
    out = []
    csc = c.get("securityContext") or {}

    def effective(key):
        return csc[key] if key in csc else psc.get(key)

    if effective("runAsNonRoot") is not True:
        out.append(Finding("security", where, "runAsNonRoot is not true (pod or container)"))
    uid = effective("runAsUser")
    if not isinstance(uid, int) or isinstance(uid, bool) or uid == 0:
        out.append(Finding("security", where, f"runAsUser {uid!r} is not a numeric non-root user id"))
    seccomp = (effective("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        out.append(Finding("security", where, f"seccompProfile type {seccomp!r}, not RuntimeDefault"))
    if csc.get("readOnlyRootFilesystem") is not True:
        out.append(Finding("security", where, "readOnlyRootFilesystem is not true"))
    if csc.get("allowPrivilegeEscalation") is not False:
        out.append(Finding("security", where, "allowPrivilegeEscalation is not false"))
    if csc.get("privileged"):
        out.append(Finding("security", where, "privileged"))
    caps = csc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(Finding("security", where, "capabilities do not drop ALL"))
    if caps.get("add"):
        out.append(Finding("security", where, f"capabilities add {caps['add']}"))
    for port in c.get("ports") or []:
        if port.get("hostPort"):
            out.append(Finding("security", where, f"hostPort {port['hostPort']}"))
    return out


def check_image(where: str, c: dict) -> list[Finding]:
    image = c.get("image") or ""
    if "@sha256:" in image:
        return []
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    if not tag or tag == "latest":
        return [Finding("image", where, f"image {image!r} has no tag or is :latest (set a tag with kustomize `images:`)")]
    return []


def container_port_names(r: Render, w: dict) -> set[str]:
    return {p.get("name") for c in r.pod_spec(w).get("containers") or [] for p in c.get("ports") or [] if p.get("name")}


def check_services(r: Render) -> list[Finding]:
    out = []
    for s in r.services:
        spec = s.get("spec") or {}
        if spec.get("type") == "ExternalName":
            continue
        selected = r.workloads_selected(namespace(s), lambda labels: map_selector_matches(spec.get("selector"), labels))
        if not selected:
            out.append(Finding("service-selector", ref(s), f"selector {spec.get('selector')} selects no workload's pods"))
            continue
        for port in spec.get("ports") or []:
            target = port.get("targetPort")
            if isinstance(target, str):
                for w in selected:
                    if target not in container_port_names(r, w):
                        out.append(Finding("service-selector", ref(s), f"targetPort {target!r} is not a container port of {ref(w)}"))
    for w in r.workloads:
        has_metrics = any(
            map_selector_matches((s.get("spec") or {}).get("selector"), r.pod_labels(w))
            and any(p.get("name") == "metrics" for p in (s.get("spec") or {}).get("ports") or [])
            for s in r.services if namespace(s) == namespace(w)
        )
        if not has_metrics:
            out.append(Finding("metrics-port", ref(w), "no Service with a port named `metrics` selects its pods"))
        if w.get("kind") == "StatefulSet":
            name = (w.get("spec") or {}).get("serviceName")
            governing = [s for s in r.services if namespace(s) == namespace(w) and s["metadata"]["name"] == name]
            if not governing:
                out.append(Finding("statefulset-service", ref(w), f"serviceName {name!r} is not a Service in the render"))
            elif (governing[0].get("spec") or {}).get("clusterIP") != "None" or not map_selector_matches(
                    (governing[0].get("spec") or {}).get("selector"), r.pod_labels(w)):
                out.append(Finding("statefulset-service", ref(w), f"Service {name} is not headless or does not select its pods"))
    return out


def check_service_monitors(r: Render) -> list[Finding]:
    out = []
    scraped: dict[str, list[str]] = {}  # workload ref -> Services scraping it
    for sm in r.of_kind("ServiceMonitor"):
        spec = sm.get("spec") or {}
        nss = (spec.get("namespaceSelector") or {}).get("matchNames") or [namespace(sm)]
        services = [s for s in r.services if namespace(s) in nss
                    and label_selector_matches(spec.get("selector"), (s.get("metadata") or {}).get("labels") or {})]
        if not services:
            out.append(Finding("servicemonitor", ref(sm), f"selector {spec.get('selector')} selects no Service"))
            continue
        for endpoint in spec.get("endpoints") or []:
            for s in services:
                names = {p.get("name") for p in (s.get("spec") or {}).get("ports") or []}
                if endpoint.get("port") not in names:
                    out.append(Finding("servicemonitor", ref(sm), f"endpoint port {endpoint.get('port')!r} is not a port name of {ref(s)}"))
        for s in services:
            for w in r.workloads_selected(namespace(s), lambda labels: map_selector_matches((s.get("spec") or {}).get("selector"), labels)):
                scraped.setdefault(ref(w), []).append(f"{ref(sm)} via {ref(s)}")
                annotations = ((w["spec"].get("template") or {}).get("metadata") or {}).get("annotations") or {}
                if str(annotations.get("prometheus.io/scrape", "")).lower() == "true":
                    out.append(Finding("double-scrape", ref(w), f"pods carry prometheus.io/scrape and {ref(sm)} scrapes them too"))
    for w, via in scraped.items():
        if len(via) > 1:
            out.append(Finding("double-scrape", w, f"pods scraped {len(via)} times: {', '.join(via)}"))
    return out


def hpa_for(r: Render, w: dict) -> dict | None:
    for h in r.of_kind("HorizontalPodAutoscaler"):
        target = (h.get("spec") or {}).get("scaleTargetRef") or {}
        if namespace(h) == namespace(w) and target.get("kind") == w.get("kind") and target.get("name") == w["metadata"]["name"]:
            return h
    return None


def check_pdbs(r: Render) -> list[Finding]:
    out = []
    for pdb in r.of_kind("PodDisruptionBudget"):
        spec = pdb.get("spec") or {}
        selected = r.workloads_selected(namespace(pdb), lambda labels: label_selector_matches(spec.get("selector"), labels))
        if not selected:
            out.append(Finding("pdb", ref(pdb), f"selector {spec.get('selector')} selects no workload's pods"))
            continue
        for w in selected:
            hpa = hpa_for(r, w)
            replicas = (hpa["spec"].get("minReplicas", 1) if hpa else (w.get("spec") or {}).get("replicas", 1))
            if "maxUnavailable" in spec:
                allowed = spec["maxUnavailable"]
                if isinstance(allowed, str) and allowed.endswith("%"):
                    allowed = int(replicas * int(allowed[:-1]) / 100 + 0.999999)
            else:
                minimum = spec.get("minAvailable", 0)
                if isinstance(minimum, str) and minimum.endswith("%"):
                    minimum = int(replicas * int(minimum[:-1]) / 100 + 0.999999)
                allowed = replicas - minimum
            if allowed < 1:
                out.append(Finding("pdb", ref(pdb), f"allows no eviction at {replicas} replica(s) of {ref(w)}: nodes could never drain"))
    return out


def check_hpas(r: Render) -> list[Finding]:
    out = []
    for h in r.of_kind("HorizontalPodAutoscaler"):
        spec = h.get("spec") or {}
        target = spec.get("scaleTargetRef") or {}
        matches = [w for w in r.workloads if namespace(w) == namespace(h)
                   and w.get("kind") == target.get("kind") and w["metadata"]["name"] == target.get("name")
                   and w.get("apiVersion") == target.get("apiVersion")]
        if not matches:
            out.append(Finding("hpa", ref(h), f"scaleTargetRef {target} is no workload in the render"))
        for w in matches:
            if "replicas" in (w.get("spec") or {}):
                out.append(Finding("hpa", ref(h), f"{ref(w)} sets spec.replicas, which the HPA owns: every apply would reset the scale"))
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
        if not isinstance(high, int) or low > high:
            out.append(Finding("hpa", ref(h), f"minReplicas {low} > maxReplicas {high}"))
        partitions = ((h.get("metadata") or {}).get("annotations") or {}).get(PARTITIONS_ANNOTATION)
        if partitions is not None and isinstance(high, int) and high > int(partitions):
            out.append(Finding("hpa", ref(h), f"maxReplicas {high} exceeds the topic's {partitions} partitions: extra replicas would idle"))
        window = ((spec.get("behavior") or {}).get("scaleDown") or {}).get("stabilizationWindowSeconds")
        if window is None or window < MIN_SCALE_DOWN_WINDOW_S:
            out.append(Finding("hpa", ref(h), f"scale-down stabilization window {window} s is under {MIN_SCALE_DOWN_WINDOW_S} s"))
    return out


# --- self-test: each mutation must be reported ---------------------------------

def _containers(docs):
    for d in docs:
        if d.get("kind") in WORKLOAD_KINDS:
            yield from Render.pod_spec(d).get("containers") or []


def _first(docs, kind):
    return next((d for d in docs if d.get("kind") == kind), None)


def _mutate_containers(fn):
    def apply(docs):
        done = False
        for c in _containers(docs):
            done = fn(c) is not False or done
        return done
    return apply


def _mutate_first(kind, fn):
    def apply(docs):
        obj = _first(docs, kind)
        return obj is not None and fn(obj) is not False
    return apply


def _pod(docs):
    return next(d for d in docs if d.get("kind") in WORKLOAD_KINDS)


def _set_pod_and_containers(key, value):
    def apply(docs):
        w = _pod(docs)
        Render.pod_spec(w).setdefault("securityContext", {})[key] = value
        for c in Render.pod_spec(w)["containers"]:
            c.setdefault("securityContext", {}).pop(key, None)
        return True
    return apply


def _break_workload_selector(docs):
    w = _pod(docs)
    w["spec"]["template"]["metadata"]["labels"] = {"app.kubernetes.io/name": "other"}
    return True


def _drop_services_label(docs):
    # The ServiceMonitor selects by the app label only: it now selects the
    # headless Service too, and every pod is scraped twice.
    sm = _first(docs, "ServiceMonitor")
    if sm is None:
        return False
    sm["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/name": "downbeat"}}
    return True


def _annotate_pods(docs):
    if _first(docs, "ServiceMonitor") is None:
        return False
    w = _pod(docs)
    w["spec"]["template"]["metadata"].setdefault("annotations", {})["prometheus.io/scrape"] = "true"
    return True


def _hpa_and_replicas(docs):
    hpa = _first(docs, "HorizontalPodAutoscaler")
    if hpa is None:
        return False
    target = hpa["spec"]["scaleTargetRef"]
    scaled = next(
        d
        for d in docs
        if d.get("kind") == target["kind"] and d["metadata"]["name"] == target["name"]
    )
    scaled["spec"]["replicas"] = 3
    return True


MUTATIONS: list[tuple[str, str, Callable[[list[dict]], bool]]] = [
    ("remove the liveness probe", "probe", _mutate_containers(lambda c: c.pop("livenessProbe"))),
    ("remove the readiness probe", "probe", _mutate_containers(lambda c: c.pop("readinessProbe"))),
    ("remove the startup probe", "probe", _mutate_containers(lambda c: c.pop("startupProbe"))),
    ("liveness probe on /metrics", "probe", _mutate_containers(lambda c: c["livenessProbe"]["httpGet"].__setitem__("path", "/metrics"))),
    ("readiness probe on /healthz", "probe", _mutate_containers(lambda c: c["readinessProbe"]["httpGet"].__setitem__("path", "/healthz"))),
    ("probe on a port number", "probe", _mutate_containers(lambda c: c["livenessProbe"]["httpGet"].__setitem__("port", 9898))),
    ("drop no capability", "security", _mutate_containers(lambda c: c["securityContext"]["capabilities"].__setitem__("drop", ["NET_RAW"]))),
    ("add a capability", "security", _mutate_containers(lambda c: c["securityContext"]["capabilities"].__setitem__("add", ["NET_ADMIN"]))),
    ("writable root filesystem", "security", _mutate_containers(lambda c: c["securityContext"].__setitem__("readOnlyRootFilesystem", False))),
    ("privilege escalation allowed", "security", _mutate_containers(lambda c: c["securityContext"].__setitem__("allowPrivilegeEscalation", True))),
    ("run as root", "security", _set_pod_and_containers("runAsUser", 0)),
    ("runAsNonRoot unset", "security", _set_pod_and_containers("runAsNonRoot", False)),
    ("seccomp Unconfined", "security", _set_pod_and_containers("seccompProfile", {"type": "Unconfined"})),
    ("hostPath volume", "security", lambda docs: Render.pod_spec(_pod(docs)).setdefault("volumes", []).append({"name": "h", "hostPath": {"path": "/"}}) or True),
    ("host network", "security", lambda docs: Render.pod_spec(_pod(docs)).__setitem__("hostNetwork", True) or True),
    ("no memory limit", "resources", _mutate_containers(lambda c: c["resources"]["limits"].pop("memory"))),
    ("no cpu request", "resources", _mutate_containers(lambda c: c["resources"]["requests"].pop("cpu"))),
    ("request above limit", "resources", _mutate_containers(lambda c: c["resources"]["requests"].__setitem__("memory", "4Gi"))),
    ("image :latest", "image", _mutate_containers(lambda c: c.__setitem__("image", "downbeat:latest"))),
    ("untagged image", "image", _mutate_containers(lambda c: c.__setitem__("image", "registry.example/downbeat"))),
    ("workload selector does not match its pods", "workload-selector", _break_workload_selector),
    ("Service selects no pods", "service-selector", _mutate_first("Service", lambda s: s["spec"].__setitem__("selector", {"app.kubernetes.io/name": "typo"}))),
    ("Service targets an unknown port", "service-selector", _mutate_first("Service", lambda s: s["spec"]["ports"][0].__setitem__("targetPort", "http"))),
    ("no port named metrics", "metrics-port", lambda docs: all(p.__setitem__("name", "http") or True for s in docs if s.get("kind") == "Service" for p in s["spec"]["ports"])),
    ("StatefulSet serviceName unknown", "statefulset-service", _mutate_first("StatefulSet", lambda w: w["spec"].__setitem__("serviceName", "nope"))),
    ("ConfigMap reference unknown", "reference", lambda docs: all(v["configMap"].__setitem__("name", "downbeat-config-stale") or True for v in Render.pod_spec(_pod(docs))["volumes"] if "configMap" in v)),
    ("PVC reference unknown", "reference", lambda docs: Render.pod_spec(_pod(docs))["volumes"].append({"name": "extra", "persistentVolumeClaim": {"claimName": "nope"}}) or True),
    ("PDB selects no pods", "pdb", _mutate_first("PodDisruptionBudget", lambda p: p["spec"].__setitem__("selector", {"matchLabels": {"app.kubernetes.io/name": "typo"}}))),
    ("PDB allows no eviction", "pdb", _mutate_first("PodDisruptionBudget", lambda p: p["spec"].__setitem__("maxUnavailable", 0))),
    ("ServiceMonitor selects no Service", "servicemonitor", _mutate_first("ServiceMonitor", lambda m: m["spec"].__setitem__("selector", {"matchLabels": {"app.kubernetes.io/name": "typo"}}))),
    ("ServiceMonitor on an unknown port", "servicemonitor", _mutate_first("ServiceMonitor", lambda m: m["spec"]["endpoints"][0].__setitem__("port", "http"))),
    ("ServiceMonitor selects both Services", "double-scrape", _drop_services_label),
    ("scrape annotation and ServiceMonitor", "double-scrape", _annotate_pods),
    ("HPA targets an unknown workload", "hpa", _mutate_first("HorizontalPodAutoscaler", lambda h: h["spec"]["scaleTargetRef"].__setitem__("name", "typo"))),
    ("HPA and spec.replicas", "hpa", _hpa_and_replicas),
    ("HPA beyond the partition count", "hpa", _mutate_first("HorizontalPodAutoscaler", lambda h: h["spec"].__setitem__("maxReplicas", 24))),
    ("HPA scales down at once", "hpa", _mutate_first("HorizontalPodAutoscaler", lambda h: h["spec"]["behavior"]["scaleDown"].__setitem__("stabilizationWindowSeconds", 0))),
    ("no namespace", "namespace", lambda docs: docs[0]["metadata"].pop("namespace", None) is not None),
]


def self_test(renders: dict[str, list[dict]]) -> int:
    failures = 0
    for label, docs in renders.items():
        clean = check(docs)
        if clean:
            print(f"self-test: {label} is not clean to start with:", *clean, sep="\n  ")
            return 1
    for description, rule, mutate in MUTATIONS:
        applied, caught, missed, example = [], [], [], None
        for label, docs in renders.items():
            broken = copy.deepcopy(docs)
            try:
                ok = mutate(broken)
            except (KeyError, TypeError, AttributeError, StopIteration, IndexError):
                ok = False
            if not ok:
                continue
            applied.append(label)
            findings = [f for f in check(broken) if f.rule == rule]
            (caught if findings else missed).append(label)
            if findings:
                example = findings[0]
        if not applied:
            print(f"self-test MISSED  {description}: applies to no render (fix the self-test)")
            failures += 1
        elif missed:
            print(f"self-test MISSED  {description}: no [{rule}] finding for {', '.join(missed)}")
            failures += 1
        else:
            print(f"self-test caught  {description} ({', '.join(caught)}): {example}")
    total = len(MUTATIONS)
    print(f"policy self-test: {total - failures} of {total} mutations caught")
    return 1 if failures else 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--self-test", action="store_true", help="mutate each render and assert every mutation is reported")
    parser.add_argument("files", nargs="+", type=pathlib.Path, help="rendered manifests (`kubectl kustomize` output)")
    args = parser.parse_args(argv)
    renders = {str(f): load(f) for f in args.files}
    if args.self_test:
        return self_test(renders)
    status = 0
    for label, docs in renders.items():
        findings = check(docs)
        r = Render(docs)
        containers = sum(len(Render.pod_spec(w).get("containers") or []) for w in r.workloads)
        if findings:
            status = 1
            print(f"policy FAIL {label}: {len(findings)} finding(s)")
            for f in findings:
                print(f"  {f}")
        else:
            kinds = sorted({d.get('kind') for d in docs})
            print(f"policy ok   {label}: {len(docs)} objects ({', '.join(kinds)}), {len(r.workloads)} workload(s), {containers} container(s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
