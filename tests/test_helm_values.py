"""explorer/deploy/helm/config.yaml: Zero to JupyterHub Helm values for a class, checked without a cluster.

Nothing here talks to a cluster or the network. The chart's values schema is not copied into this repository;
``VALUES_SCHEMA`` below is our own JSON-schema fragment: for each section the config uses, the key paths and
types that the chart's schema documents (``CHART_SCHEMA_SOURCE``), written down by hand. A key that is not
there (a misspelling, a key from another chart version) fails with its dotted path. Maps whose keys are free in
the chart's schema (``extraEnv``, ``extraFiles``, ``hub.config.<Class>``, ``lifecycleHooks.postStart``, ...) are
free here too. On top of the chart's types come the checks the schema cannot express: memory in the units
JupyterHub accepts, guarantee <= limit, the sizing against what this project measured, culling, the image, and
that the image is built from environment.yml by repo2docker in a way that makes ``explorer`` importable. And the
class's security: network policies on for the hub, the proxy and the user pods, user pods that reach only the hub,
the proxy and DNS (no other pod, no internet, no cloud metadata server), and user pods that never run as root.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HELM = ROOT / "explorer" / "deploy" / "helm"
CONFIG = HELM / "config.yaml"
README = HELM / "README.md"

CHART_VERSION = "4.4.0"  # jupyterhub Helm chart, the newest stable release when written (JupyterHub 5.5.0 in the hub)
CHART_SCHEMA_SOURCE = "jupyterhub/values.schema.yaml at tag 4.4.0 of github.com/jupyterhub/zero-to-jupyterhub-k8s"

# Where repo2docker puts the repository in the image (--target-repo-dir), the chart's home and uid.
REPO_DIR_IN_IMAGE = "/srv/repo"
HOME = "/home/jovyan"
UID = 1000
FS_GID = 100  # the chart's default fsGid: group "users", owner group of the home volume
DASHBOARD_PATH = "/voila/render/notebooks/dashboard.ipynb"  # under /user/{username}/ on the hub
DASHBOARD_URL = "/user/{username}" + DASHBOARD_PATH

# Measured on this project (issue 13), in bytes.
MB = 10**6
LAB_SERVER_RSS = 100 * MB  # JupyterLab server
LESSON_KERNEL_PEAK = 730 * MB  # the heaviest lesson notebook, executed top to bottom (the lightest: 340 MB)
DASHBOARD_KERNEL_RSS = 315 * MB  # one dashboard kernel after its first tab


# --- our own fragment of the chart's values schema ----------------------------------------------------------------

def _obj(properties: dict | None = None, *, free: bool = False, patterns: dict | None = None,
         required: tuple[str, ...] = ()) -> dict:
    """An object node: fixed ``properties`` (others refused), or ``free`` (any key), or keys matching ``patterns``."""
    node: dict = {"type": "object", "additionalProperties": free}
    if properties:
        node["properties"] = properties
    if patterns:
        node["patternProperties"] = patterns
    if required:
        node["required"] = list(required)
    return node


def _t(*types: str) -> dict:
    return {"type": list(types) if len(types) > 1 else types[0]}


_PULL_POLICY = {"enum": [None, "", "IfNotPresent", "Always", "Never"]}
_IMAGE = _obj({"name": _t("string"), "tag": _t("string"), "pullPolicy": _PULL_POLICY, "pullSecrets": _t("array")},
              required=("name", "tag"))
_EXTRA_ENV = {"type": ["object", "array"], "additionalProperties": True}
_EXTRA_FILES = _obj(patterns={".*": {
    **_obj({"mountPath": _t("string"), "data": _obj(free=True), "stringData": _t("string"),
            "binaryData": _t("string"), "mode": _t("number")}, required=("mountPath",)),
    "oneOf": [{"required": ["data"]}, {"required": ["stringData"]}, {"required": ["binaryData"]}],
}})

# A NetworkPolicy section, the same shape for hub, proxy.chp, proxy.traefik and singleuser (chart 4.4.0).
_NETWORK_POLICY = _obj({
    "enabled": _t("boolean"),
    "ingress": _t("array"),
    "egress": _t("array"),
    "egressAllowRules": _obj({key: _t("boolean") for key in (
        "cloudMetadataServer", "dnsPortsCloudMetadataServer", "dnsPortsKubeSystemNamespace", "dnsPortsPrivateIPs",
        "nonPrivateIPs", "privateIPs")}),
    "interNamespaceAccessLabels": {"enum": ["accept", "ignore"]},
    "allowedIngressPorts": _t("array"),
})

# hub.config.KubeSpawner passes through to KubeSpawner (7.0.0 in the chart's hub image), whose traitlets only warn
# about a misspelt trait: the traits this file sets or that concern the pod's security, as KubeSpawner names them.
# Inside the two security contexts the keys are Kubernetes' own (core/v1 PodSecurityContext and SecurityContext,
# camelCase: KubeSpawner refuses snake_case there), not the chart's.
_SECCOMP = _obj({"type": {"enum": ["RuntimeDefault", "Localhost", "Unconfined"]}, "localhostProfile": _t("string")},
                required=("type",))
_SC_COMMON = {
    "runAsNonRoot": _t("boolean"), "runAsUser": _t("integer"), "runAsGroup": _t("integer"),
    "seccompProfile": _SECCOMP, "seLinuxOptions": _obj(free=True), "appArmorProfile": _obj(free=True),
    "windowsOptions": _obj(free=True),
}
_POD_SECURITY_CONTEXT = _obj({
    **_SC_COMMON, "fsGroup": _t("integer"), "fsGroupChangePolicy": {"enum": ["OnRootMismatch", "Always"]},
    "supplementalGroups": _t("array"), "supplementalGroupsPolicy": _t("string"), "sysctls": _t("array"),
    "seLinuxChangePolicy": _t("string"),
})
_CONTAINER_SECURITY_CONTEXT = _obj({
    **_SC_COMMON, "allowPrivilegeEscalation": _t("boolean"), "privileged": _t("boolean"),
    "readOnlyRootFilesystem": _t("boolean"), "procMount": _t("string"),
    "capabilities": _obj({"add": {"type": "array", "items": _t("string")},
                          "drop": {"type": "array", "items": _t("string")}}),
})
_KUBESPAWNER = _obj({
    "working_dir": _t("string", "null"),
    "pod_security_context": _POD_SECURITY_CONTEXT,
    "container_security_context": _CONTAINER_SECURITY_CONTEXT,
    "uid": _t("integer", "null"), "gid": _t("integer", "null"), "fs_gid": _t("integer", "null"),
    "supplemental_gids": _t("array"), "privileged": _t("boolean"),
    "allow_privilege_escalation": _t("boolean", "null"),
    "automount_service_account_token": _t("boolean", "null"), "service_account": _t("string", "null"),
    "extra_pod_config": _obj(free=True), "extra_container_config": _obj(free=True),
    "init_containers": _t("array"), "environment": _obj(free=True),
})

VALUES_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    **_obj({
        "singleuser": _obj({
            "image": _IMAGE,
            "cpu": _obj({"limit": _t("number", "null"), "guarantee": _t("number", "null")}),
            "memory": _obj({"limit": _t("number", "string", "null"), "guarantee": _t("number", "string", "null")}),
            "extraEnv": _EXTRA_ENV,
            "extraFiles": _EXTRA_FILES,
            "defaultUrl": _t("string", "null"),
            "cmd": _t("array", "string", "null"),
            "startTimeout": _t("integer", "null"),
            "uid": _t("integer", "null"),
            "fsGid": _t("integer", "null"),
            "allowPrivilegeEscalation": _t("boolean", "null"),
            # Pod spec passthrough (KubeSpawner.extra_pod_config). There is no extraContainerConfig in chart 4.4.0.
            "extraPodConfig": _obj(free=True),
            "initContainers": _t("array"),
            "networkPolicy": _NETWORK_POLICY,
            "cloudMetadata": _obj({"blockWithIptables": _t("boolean"), "ip": _t("string")}),
            "nodeSelector": _obj(free=True),
            "extraTolerations": _t("array"),
            "profileList": _t("array"),
            "lifecycleHooks": _obj({"postStart": _obj(free=True), "preStop": _obj(free=True)}),
            "storage": _obj({
                "type": {"enum": ["dynamic", "static", "none"]},
                "capacity": _t("string", "null"),
                "homeMountPath": _t("string"),
                "dynamic": _obj({"storageClass": _t("string", "null"), "pvcNameTemplate": _t("string", "null"),
                                 "volumeNameTemplate": _t("string", "null"), "storageAccessModes": _t("array"),
                                 "subPath": _t("string", "null")}),
                "static": _obj({"pvcName": _t("string", "null"), "subPath": _t("string", "null")}),
                "extraLabels": _obj(patterns={".*": _t("string")}),
                "extraVolumes": _t("object", "array", "null"),
                "extraVolumeMounts": _t("object", "array", "null"),
            }),
        }),
        "hub": _obj({
            # hub.config: keys are Configurable class names (capitalised), their contents pass through.
            "config": _obj({"JupyterHub": _obj(free=True), "KubeSpawner": _KUBESPAWNER},
                           patterns={"^[A-Z].*$": _obj(free=True)}),
            "extraConfig": _obj(free=True),
            "extraEnv": _EXTRA_ENV,
            "extraFiles": _EXTRA_FILES,
            "image": _IMAGE,
            "baseUrl": _t("string"),
            "resources": _obj(free=True),
            "networkPolicy": _NETWORK_POLICY,
        }),
        "proxy": _obj({
            "chp": _obj({"networkPolicy": _NETWORK_POLICY}),
            "traefik": _obj({"networkPolicy": _NETWORK_POLICY}),
            "https": _obj({
                "enabled": _t("boolean", "null"),
                "type": {"enum": [None, "", "letsencrypt", "manual", "offload", "secret"]},
                "hosts": _t("array"),
                "letsencrypt": _obj({"contactEmail": _t("string", "null"), "acmeServer": _t("string", "null")}),
                "manual": _obj({"key": _t("string", "null"), "cert": _t("string", "null")}),
                "secret": _obj({"name": _t("string", "null"), "key": _t("string", "null"),
                                "crt": _t("string", "null")}),
            }),
        }),
        "cull": _obj({
            "enabled": _t("boolean"),
            "users": _t("boolean", "null"),
            "adminUsers": _t("boolean", "null"),
            "removeNamedServers": _t("boolean", "null"),
            "timeout": _t("integer", "null"),
            "every": _t("integer", "null"),
            "concurrency": _t("integer", "null"),
            "maxAge": _t("integer", "null"),
        }, required=("enabled",)),
        "prePuller": _obj({
            "hook": _obj({"enabled": _t("boolean"), "pullOnlyOnChanges": _t("boolean"),
                          "podSchedulingWaitDuration": _t("integer")}),
            "continuous": _obj({"enabled": _t("boolean")}),
            "pullProfileListImages": _t("boolean"),
            "extraImages": _obj(patterns={".*": _obj({"name": _t("string"), "tag": _t("string"),
                                                        "pullPolicy": _PULL_POLICY}, required=("name", "tag"))}),
        }),
        "scheduling": _obj({
            "userScheduler": _obj({"enabled": _t("boolean")}),
            "podPriority": _obj({"enabled": _t("boolean")}),
            "userPlaceholder": _obj({"enabled": _t("boolean"), "replicas": _t("integer")}),
        }),
    }),
}


# --- the checks (each returns a list of problems, so a test can also show that it fails) --------------------------

def undocumented_keys(values: object, schema: dict = VALUES_SCHEMA, path: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths of keys the schema does not document; inside free maps every key is allowed."""
    if not isinstance(values, dict):
        return []
    found = []
    for key, value in values.items():
        here = (*path, str(key))
        sub = schema.get("properties", {}).get(key)
        if sub is None:
            sub = next((s for pattern, s in schema.get("patternProperties", {}).items()
                        if re.search(pattern, str(key))), None)
        if sub is None:
            if schema.get("additionalProperties") is not True:
                found.append(".".join(here))
            continue
        found += undocumented_keys(value, sub, here)
    return found


def schema_errors(values: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(VALUES_SCHEMA)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
            for e in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))]


# JupyterHub's ByteSpecification (Spawner.mem_limit / mem_guarantee): bytes, or a number with K, M, G or T, in
# units of 1024. Kubernetes spellings such as "2Gi" or "2000Mi" are refused when the hub starts a server.
BYTE_SPEC = re.compile(r"^(\d+(?:\.\d+)?)([KMGT])$")
K8S_QUANTITY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")  # storage capacity: a k8s quantity


def to_bytes(spec: object) -> int:
    if isinstance(spec, bool):
        raise ValueError(f"{spec!r} is not a memory size")
    if isinstance(spec, int | float):
        return int(spec)
    match = BYTE_SPEC.match(str(spec))
    if not match:
        raise ValueError(f"{spec!r} is not a memory size JupyterHub accepts (a number with K, M, G or T)")
    return int(float(match[1]) * 1024 ** ("KMGT".index(match[2]) + 1))


def _get(values: dict, dotted: str, default: object = None) -> object:
    node: object = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def resource_problems(values: dict) -> list[str]:
    problems = []
    memory = {}
    for which in ("guarantee", "limit"):
        spec = _get(values, f"singleuser.memory.{which}")
        try:
            memory[which] = to_bytes(spec)
        except ValueError as err:
            problems.append(f"singleuser.memory.{which}: {err}")
            continue
        if memory[which] <= 0:
            problems.append(f"singleuser.memory.{which}: {spec!r} is not positive")
    if len(memory) == 2 and memory["guarantee"] > memory["limit"]:
        problems.append(f"singleuser.memory: guarantee {_get(values, 'singleuser.memory.guarantee')!r} is above "
                        f"the limit {_get(values, 'singleuser.memory.limit')!r}")
    cpu = {}
    for which in ("guarantee", "limit"):
        value = _get(values, f"singleuser.cpu.{which}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            problems.append(f"singleuser.cpu.{which}: {value!r} is not a positive number of CPUs")
        else:
            cpu[which] = value
    if len(cpu) == 2 and cpu["guarantee"] > cpu["limit"]:
        problems.append(f"singleuser.cpu: guarantee {cpu['guarantee']} is above the limit {cpu['limit']}")
    capacity = _get(values, "singleuser.storage.capacity")
    if capacity is not None and not K8S_QUANTITY.match(str(capacity)):
        problems.append(f"singleuser.storage.capacity: {capacity!r} is not a Kubernetes quantity")
    return problems


def cull_problems(values: dict) -> list[str]:
    cull = values.get("cull") or {}
    problems = [] if cull.get("enabled") is True else ["cull.enabled: idle servers must be culled"]
    for key in ("timeout", "every"):
        value = cull.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(f"cull.{key}: {value!r} is not a positive whole number of seconds")
    if not problems and cull["every"] >= cull["timeout"]:
        problems.append(f"cull.every ({cull['every']} s) should be shorter than cull.timeout ({cull['timeout']} s)")
    max_age = cull.get("maxAge", 0)
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
        problems.append(f"cull.maxAge: {max_age!r} is not a whole number of seconds >= 0")
    return problems


_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_NAME = re.compile(rf"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def image_problems(values: dict) -> list[str]:
    name, tag = _get(values, "singleuser.image.name"), _get(values, "singleuser.image.tag")
    problems = []
    if not isinstance(name, str) or not IMAGE_NAME.match(name) or len(name) > 63:
        problems.append(f"singleuser.image.name: {name!r} is not an image name without a tag (at most 63 chars)")
    if not isinstance(tag, str) or not IMAGE_TAG.match(tag):
        problems.append(f"singleuser.image.tag: {tag!r} is not an image tag (quote an all-digit SHA)")
    elif tag == "latest":
        problems.append("singleuser.image.tag: `latest` changes under running servers; use a fixed tag")
    return problems


# What the user pods' NetworkPolicy allows out, beyond the hub and the proxy (which the chart always allows): DNS,
# wherever the cluster's resolver is, and nothing else. No other pod or cluster service (privateIPs), no internet
# (nonPrivateIPs: the class runs offline, everything ships in the image), no cloud metadata server.
USER_EGRESS = {
    "cloudMetadataServer": False,
    "privateIPs": False,
    "nonPrivateIPs": False,
    "dnsPortsPrivateIPs": True,
    "dnsPortsKubeSystemNamespace": True,
    "dnsPortsCloudMetadataServer": True,
}
NETWORK_POLICIES = ("hub", "proxy.chp", "proxy.traefik", "singleuser")
# docker-stacks' start.sh variables that only work when the container starts as root.
ROOT_START_ENV = {"NB_UID", "NB_GID", "NB_USER", "GRANT_SUDOERS", "CHOWN_HOME", "CHOWN_EXTRA", "NB_UMASK"}


def _empty(value: object) -> bool:
    return value is None or value == []


def network_problems(values: dict) -> list[str]:
    problems = [f"{which}.networkPolicy.enabled: must be true" for which in NETWORK_POLICIES
                if _get(values, f"{which}.networkPolicy.enabled") is not True]
    policy = _get(values, "singleuser.networkPolicy", {})
    rules = policy.get("egressAllowRules") or {}
    problems += [f"singleuser.networkPolicy.egressAllowRules.{key}: {rules.get(key)!r}, expected {want!r}"
                 for key, want in USER_EGRESS.items() if rules.get(key) is not want]
    for key in ("egress", "ingress", "allowedIngressPorts"):
        if not _empty(policy.get(key)):
            problems.append(f"singleuser.networkPolicy.{key}: {policy[key]!r} opens user pods beyond the chart's rules")
    if policy.get("interNamespaceAccessLabels", "ignore") != "ignore":
        problems.append("singleuser.networkPolicy.interNamespaceAccessLabels: labelled pods of other namespaces "
                        "would reach user pods")
    # the metadata server: refused by the network policy; the iptables alternative is a root init container
    if _get(values, "singleuser.cloudMetadata.blockWithIptables") is not False:
        problems.append("singleuser.cloudMetadata.blockWithIptables: must be false (the network policy blocks the "
                        "metadata server; the iptables init container runs as root, which runAsNonRoot refuses)")
    # what the class itself needs stays reachable
    if _get(values, "hub.networkPolicy.egressAllowRules.nonPrivateIPs") is False:
        problems.append("hub.networkPolicy.egressAllowRules.nonPrivateIPs: the hub must reach the OAuth provider")
    if _get(values, "proxy.chp.networkPolicy.allowedIngressPorts", ["http", "https"]) != ["http", "https"]:
        problems.append("proxy.chp.networkPolicy.allowedIngressPorts: browsers must reach the proxy (http, https)")
    if rules.get("nonPrivateIPs") is False and _get(values, "singleuser.extraEnv.HF_HUB_OFFLINE") != "1":
        problems.append("singleuser.extraEnv.HF_HUB_OFFLINE: user pods have no internet, set it to \"1\"")
    return problems


def root_problems(values: dict) -> list[str]:
    problems = []
    if _get(values, "singleuser.uid") != UID:
        problems.append(f"singleuser.uid: {_get(values, 'singleuser.uid')!r}, expected {UID} (the image's user)")
    if _get(values, "singleuser.fsGid") != FS_GID:
        problems.append(f"singleuser.fsGid: {_get(values, 'singleuser.fsGid')!r}, expected {FS_GID}")
    if _get(values, "singleuser.allowPrivilegeEscalation") is not False:
        problems.append("singleuser.allowPrivilegeEscalation: must be false (no sudo, no setuid)")
    pod = _get(values, "hub.config.KubeSpawner.pod_security_context") or {}
    container = _get(values, "hub.config.KubeSpawner.container_security_context") or {}
    for where, context in (("pod_security_context", pod), ("container_security_context", container)):
        if context.get("runAsNonRoot") is not True:
            problems.append(f"hub.config.KubeSpawner.{where}.runAsNonRoot: must be true")
        if context.get("runAsUser", UID) != UID:
            problems.append(f"hub.config.KubeSpawner.{where}.runAsUser: {context['runAsUser']!r}, expected {UID}")
    if _get(pod, "seccompProfile.type") != "RuntimeDefault":
        problems.append("hub.config.KubeSpawner.pod_security_context.seccompProfile.type: must be RuntimeDefault")
    capabilities = container.get("capabilities") or {}
    if capabilities.get("drop") != ["ALL"] or capabilities.get("add"):
        problems.append("hub.config.KubeSpawner.container_security_context.capabilities: drop [ALL], add none")
    if container.get("privileged") is True or container.get("allowPrivilegeEscalation") is True:
        problems.append("hub.config.KubeSpawner.container_security_context: privileged / escalation must stay off")
    env = set(_get(values, "singleuser.extraEnv") or {}) & ROOT_START_ENV
    if env:
        problems.append(f"singleuser.extraEnv: {sorted(env)} start the server as root first")
    if _get(values, "singleuser.initContainers") or _get(values, "hub.config.KubeSpawner.init_containers"):
        problems.append("init containers: none (a root one would be refused by runAsNonRoot)")
    return problems


def all_problems(values: dict) -> list[str]:
    return ([f"undocumented key: {p}" for p in undocumented_keys(values)] + schema_errors(values)
            + resource_problems(values) + cull_problems(values) + image_problems(values)
            + network_problems(values) + root_problems(values))


# --- the shipped file -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text() -> str:
    return CONFIG.read_text()


@pytest.fixture(scope="module")
def values(text: str) -> dict:
    return yaml.safe_load(text)


def test_config_parses_to_sections_of_the_chart(values):
    assert isinstance(values, dict)
    assert set(values) <= set(VALUES_SCHEMA["properties"]), set(values) - set(VALUES_SCHEMA["properties"])


def test_every_key_is_documented_by_the_chart(values):
    assert undocumented_keys(values) == []


def test_values_have_the_chart_schemas_types(values):
    assert schema_errors(values) == []


def test_per_user_cpu_and_memory(values):
    assert resource_problems(values) == []
    for which in ("guarantee", "limit"):  # both set: a guarantee alone lets one student take a node's memory
        assert _get(values, f"singleuser.memory.{which}") is not None
        assert _get(values, f"singleuser.cpu.{which}") is not None


def test_sizing_covers_what_was_measured(values):
    guarantee = to_bytes(_get(values, "singleuser.memory.guarantee"))
    limit = to_bytes(_get(values, "singleuser.memory.limit"))
    env = _get(values, "singleuser.extraEnv")
    budget = int(env["EXPLORER_MEMORY_BUDGET"])  # the guard would otherwise budget from the node's RAM
    # a student in a lesson is inside the guarantee; the dashboard beside it plus one guarded computation fit
    assert guarantee >= LAB_SERVER_RSS + LESSON_KERNEL_PEAK
    assert 0 < budget and LAB_SERVER_RSS + LESSON_KERNEL_PEAK + DASHBOARD_KERNEL_RSS + budget <= limit
    # torch's threads match the CPUs the pod may use
    assert int(env["OMP_NUM_THREADS"]) == math.ceil(_get(values, "singleuser.cpu.limit"))


def test_idle_servers_and_kernels_are_culled(values):
    assert cull_problems(values) == []
    assert _get(values, "cull.users") is False  # servers are stopped; accounts (and their volumes) stay
    kernels = _get(values, "singleuser.extraFiles.server-config.data.MappingKernelManager")
    assert kernels["cull_connected"] is False  # a kernel with an open page is never culled
    assert 0 < kernels["cull_interval"] < kernels["cull_idle_timeout"] < _get(values, "cull.timeout")


def test_image_is_pinned(values):
    assert image_problems(values) == []


def test_default_url_opens_a_shipped_lesson(values):
    url = _get(values, "singleuser.defaultUrl")
    assert isinstance(url, str) and url.startswith("/lab/tree/"), url
    assert (ROOT / url.removeprefix("/lab/tree/")).is_file(), url


def test_storage_is_the_home_directory(values):
    storage = _get(values, "singleuser.storage")
    assert storage["type"] == "dynamic" and storage["homeMountPath"] == HOME
    assert _get(values, "hub.config.KubeSpawner.working_dir") == HOME  # the server's root is the home, not the repo
    assert _get(values, "singleuser.uid", UID) == UID


def test_dashboard_url_is_documented_and_served(values, text):
    assert DASHBOARD_URL in text and DASHBOARD_PATH in README.read_text()
    assert (ROOT / "notebooks" / "dashboard.ipynb").is_file()
    # the lessons (and the dashboard notebook) reach the home directory, where the URL's relative path points
    command = " ".join(_get(values, "singleuser.lifecycleHooks.postStart.exec.command"))
    assert f"{REPO_DIR_IN_IMAGE}/notebooks" in command and "$HOME" in command and "-n" in command.split()
    # the server extension renders it with the standalone dashboard's settings
    voila = _get(values, "singleuser.extraFiles.voila-config")
    assert voila["mountPath"].startswith("/etc/jupyter/") and voila["mountPath"].endswith("/voila.json")
    shipped = yaml.safe_load((ROOT / "notebooks" / "voila.json").read_text())
    assert voila["data"]["VoilaConfiguration"] == shipped["VoilaConfiguration"]
    server = _get(values, "singleuser.extraFiles.server-config")
    assert server["mountPath"] == str(Path(voila["mountPath"]).parent / "jupyter_server_config.json")
    assert server["data"]["VoilaExecutor"] == shipped["VoilaExecutor"]


def _local_pip_requirement(line: str) -> bool:
    """What repo2docker treats as a local requirement (then it installs the environment after copying the repo)."""
    line = line.split("#", 1)[0].strip()
    if line.startswith(("-e ", "--editable ")):
        line = line.split(None, 1)[1]
    elif line.startswith("--editable="):
        line = line.split("=", 1)[1]
    return line.startswith(".") or "file://" in line


def test_image_is_built_from_environment_yml_by_repo2docker(values, text):
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [line for d in env["dependencies"] if isinstance(d, dict) for line in d.get("pip", [])]
    names = {re.split(r"[<>=!~ ]", spec, maxsplit=1)[0] for spec in conda}
    # the single-user server, JupyterLab and Voila's server extension come from environment.yml
    assert {"pip", "jupyterhub", "jupyterlab", "voila"} <= names
    # `- -e .` installs explorer; a local requirement makes repo2docker copy the repo before installing
    assert any(_local_pip_requirement(line) for line in pip), pip
    assert (ROOT / "pyproject.toml").is_file()
    # a binder/ or .binder/ folder would make repo2docker ignore the root environment.yml
    assert not (ROOT / "binder").exists() and not (ROOT / ".binder").exists()
    # the documented build puts the repo where the postStart hook looks, as the user the chart runs
    for doc in (text, README.read_text()):
        assert "jupyter-repo2docker" in doc
        assert f"--target-repo-dir {REPO_DIR_IN_IMAGE}" in doc
        assert f"--user-id {UID}" in doc and "--user-name jovyan" in doc
        assert _get(values, "singleuser.image.name") in doc


def test_chart_version_is_the_one_checked_against(text):
    assert f"chart {CHART_VERSION}" in text
    assert f"--version {CHART_VERSION}" in README.read_text()


SECRET_KEY = re.compile(r"secret|password|token|api_?key|private|client_id|cookie", re.IGNORECASE)


def _secrets(node: object, path: tuple[str, ...] = ()) -> list[str]:
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _secrets(value, (*path, str(key)))
                + ([".".join((*path, str(key)))] if SECRET_KEY.search(str(key))
                   and isinstance(value, str | int | float) and not isinstance(value, bool)
                   and value != "" else [])]
    if isinstance(node, list):
        return [p for item in node for p in _secrets(item, path)]
    return []


def test_no_secrets_and_a_real_authenticator(values):
    assert _secrets(values) == []
    oauth = _get(values, "hub.extraEnv.OAUTH_CLIENT_SECRET")
    assert set(oauth) == {"valueFrom"} and "secretKeyRef" in oauth["valueFrom"]
    assert _get(values, "hub.config.JupyterHub.authenticator_class") not in (None, "", "dummy", "null")


def test_network_policy_on_for_hub_proxy_and_user_pods(values):
    for which in NETWORK_POLICIES:
        assert _get(values, f"{which}.networkPolicy.enabled") is True, which
    assert network_problems(values) == []


def test_user_pods_reach_only_the_hub_the_proxy_and_dns(values):
    policy = _get(values, "singleuser.networkPolicy")
    assert policy["egressAllowRules"] == USER_EGRESS
    assert policy["egressAllowRules"]["privateIPs"] is False  # no other student's pod, no cluster service
    assert policy["egressAllowRules"]["nonPrivateIPs"] is False  # no internet: the class runs offline
    assert any(policy["egressAllowRules"][key] for key in USER_EGRESS if key.startswith("dnsPorts"))  # DNS kept
    assert policy["egress"] == []
    # ingress: only the chart's own rule (pods labelled network-access-singleuser: the hub and the proxy)
    assert policy["ingress"] == [] and policy["allowedIngressPorts"] == []
    assert policy["interNamespaceAccessLabels"] == "ignore"
    # offline: transformers must not wait on the Hugging Face hub
    assert _get(values, "singleuser.extraEnv.HF_HUB_OFFLINE") == "1"


def test_cloud_metadata_server_is_blocked(values):
    assert _get(values, "singleuser.networkPolicy.egressAllowRules.cloudMetadataServer") is False
    # by the network policy only: the iptables init container is privileged and runs as uid 0
    assert _get(values, "singleuser.cloudMetadata.blockWithIptables") is False
    assert _get(values, "singleuser.cloudMetadata.ip") in (None, "169.254.169.254")


def _uid_zero(node: object, path: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths of every uid/runAsUser set to 0 (root), anywhere in the values."""
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _uid_zero(value, (*path, str(key)))
                + ([".".join((*path, str(key)))] if key in ("uid", "runAsUser", "run_as_user", "fs_gid", "fsGid")
                   and value == 0 and not isinstance(value, bool) else [])]
    if isinstance(node, list):
        return [p for item in node for p in _uid_zero(item, path)]
    return []


def test_user_pods_never_run_as_root(values):
    assert root_problems(values) == []
    assert _get(values, "singleuser.uid") == UID and _get(values, "singleuser.fsGid") == FS_GID
    assert _get(values, "singleuser.allowPrivilegeEscalation") is False
    pod = _get(values, "hub.config.KubeSpawner.pod_security_context")
    container = _get(values, "hub.config.KubeSpawner.container_security_context")
    assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["runAsNonRoot"] is True and container["capabilities"] == {"drop": ["ALL"]}
    # fsGroup comes from singleuser.fsGid; the pod's securityContext is merged, not replaced (no extraPodConfig)
    assert "fsGroup" not in pod and "securityContext" not in (_get(values, "singleuser.extraPodConfig") or {})
    # nowhere in the values (comments aside): a root start, a root uid, Jupyter's allow_root
    dumped = yaml.safe_dump(values)
    for word in ("GRANT_SUDOERS", "NB_UID", "allow_root", "allow-root", "sudo"):
        assert word not in dumped, word
    assert _uid_zero(values) == []


def test_readme_gives_the_read_only_environment_step(text):
    readme = README.read_text()
    for command in ("chown -R root:root /srv/conda", "chmod -R go-w /srv/conda", "USER 1000"):
        assert command in readme, command
    assert "chown -R root:root" in text and "README.md" in text  # the image comment points to it
    for word in ("NetworkPolicy controller", "169.254.169.254", "runAsNonRoot"):
        assert word in readme, word


# --- the checker can fail --------------------------------------------------------------------------------------------

def _changed(values: dict, dotted: str, value: object = None, *, rename: str | None = None) -> dict:
    changed = copy.deepcopy(values)
    *parents, last = dotted.split(".")
    node = changed
    for part in parents:
        node = node[part]
    if rename is not None:
        node[rename] = node.pop(last)
    else:
        node[last] = value
    return changed


@pytest.mark.parametrize(("dotted", "rename", "expected"), [
    ("singleuser.memory", "memroy", "singleuser.memroy"),
    ("cull.timeout", "timout", "cull.timout"),
    ("singleuser.cpu.guarantee", "guarentee", "singleuser.cpu.guarentee"),
    ("hub.config", "configs", "hub.configs"),
])
def test_checker_names_a_misspelled_key(values, dotted, rename, expected):
    assert all_problems(values) == []
    assert undocumented_keys(_changed(values, dotted, rename=rename)) == [expected]
    assert any(expected.rsplit(".", 1)[1] in p for p in schema_errors(_changed(values, dotted, rename=rename)))


@pytest.mark.parametrize(("dotted", "value", "expected"), [
    # chart 4.4.0 has no container-level passthrough under singleuser: helm would refuse the install
    ("singleuser.extraContainerConfig", {"securityContext": {"runAsNonRoot": True}}, "singleuser.extraContainerConfig"),
    ("singleuser.networkPolicy.egressAllowRules.privateIps", False,
     "singleuser.networkPolicy.egressAllowRules.privateIps"),
    ("proxy.chp.networkPolicy.enable", True, "proxy.chp.networkPolicy.enable"),
    ("hub.config.KubeSpawner.container_security_context.run_as_non_root", True,
     "hub.config.KubeSpawner.container_security_context.run_as_non_root"),
    ("hub.config.KubeSpawner.pod_security_contex", {}, "hub.config.KubeSpawner.pod_security_contex"),
])
def test_checker_names_an_unknown_security_key(values, dotted, value, expected):
    assert undocumented_keys(_changed(values, dotted, value)) == [expected]


def test_checker_refuses_a_lowercase_hub_config_section(values):
    changed = copy.deepcopy(values)
    changed["hub"]["config"]["kubeSpawner"] = {"working_dir": HOME}
    assert undocumented_keys(changed) == ["hub.config.kubeSpawner"]


@pytest.mark.parametrize(("dotted", "value", "expected"), [
    ("singleuser.memory.guarantee", "4G", "guarantee '4G' is above the limit"),
    ("singleuser.cpu.guarantee", 3, "guarantee 3 is above the limit"),
    ("singleuser.memory.limit", "2Gi", "not a memory size JupyterHub accepts"),
    ("singleuser.cpu.limit", "2", "is not a positive number of CPUs"),
    ("singleuser.storage.capacity", "2 GB", "is not a Kubernetes quantity"),
    ("cull.timeout", "3600", "cull.timeout: '3600' is not a positive whole number"),
    ("cull.every", 0, "cull.every: 0 is not a positive whole number"),
    ("cull.enabled", False, "idle servers must be culled"),
    ("singleuser.image.tag", "latest", "use a fixed tag"),
    ("singleuser.image.tag", 1234567, "is not an image tag"),
    ("singleuser.image.name", "Registry.example.org/Org/Image:1", "is not an image name"),
])
def test_checker_refuses_wrong_values(values, dotted, value, expected):
    problems = all_problems(_changed(values, dotted, value))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("dotted", "value", "expected"), [
    ("singleuser.networkPolicy.enabled", False, "singleuser.networkPolicy.enabled: must be true"),
    ("hub.networkPolicy.enabled", False, "hub.networkPolicy.enabled: must be true"),
    ("proxy.chp.networkPolicy.enabled", False, "proxy.chp.networkPolicy.enabled: must be true"),
    ("proxy.traefik.networkPolicy.enabled", False, "proxy.traefik.networkPolicy.enabled: must be true"),
    ("singleuser.networkPolicy.egressAllowRules.privateIPs", True, "egressAllowRules.privateIPs: True"),
    ("singleuser.networkPolicy.egressAllowRules.nonPrivateIPs", True, "egressAllowRules.nonPrivateIPs: True"),
    ("singleuser.networkPolicy.egressAllowRules.cloudMetadataServer", True, "cloudMetadataServer: True"),
    ("singleuser.networkPolicy.egressAllowRules.dnsPortsPrivateIPs", False, "dnsPortsPrivateIPs: False"),
    ("singleuser.networkPolicy.egress", [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}], "networkPolicy.egress"),
    ("singleuser.networkPolicy.allowedIngressPorts", [8888], "networkPolicy.allowedIngressPorts"),
    ("singleuser.networkPolicy.interNamespaceAccessLabels", "accept", "other namespaces"),
    ("singleuser.cloudMetadata.blockWithIptables", True, "blockWithIptables: must be false"),
    ("proxy.chp.networkPolicy.allowedIngressPorts", [], "browsers must reach the proxy"),
    ("singleuser.extraEnv.HF_HUB_OFFLINE", "0", "HF_HUB_OFFLINE"),
    ("singleuser.uid", 0, "singleuser.uid: 0"),
    ("singleuser.fsGid", 0, "singleuser.fsGid: 0"),
    ("singleuser.allowPrivilegeEscalation", True, "allowPrivilegeEscalation: must be false"),
    ("singleuser.allowPrivilegeEscalation", None, "allowPrivilegeEscalation: must be false"),
    ("hub.config.KubeSpawner.pod_security_context.runAsNonRoot", False, "pod_security_context.runAsNonRoot"),
    ("hub.config.KubeSpawner.pod_security_context.runAsUser", 0, "pod_security_context.runAsUser: 0"),
    ("hub.config.KubeSpawner.pod_security_context.seccompProfile", {"type": "Unconfined"}, "RuntimeDefault"),
    ("hub.config.KubeSpawner.container_security_context.runAsNonRoot", False, "container_security_context.runAs"),
    ("hub.config.KubeSpawner.container_security_context.capabilities", {"drop": ["NET_RAW"]}, "drop [ALL]"),
    ("hub.config.KubeSpawner.container_security_context.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
     "drop [ALL]"),
    ("hub.config.KubeSpawner.container_security_context.privileged", True, "privileged"),
    ("singleuser.extraEnv.GRANT_SUDOERS", "yes", "start the server as root"),
    ("singleuser.initContainers", [{"name": "root", "image": "busybox"}], "init containers"),
])
def test_checker_refuses_weakened_security(values, dotted, value, expected):
    assert network_problems(values) + root_problems(values) == []
    problems = all_problems(_changed(values, dotted, value))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("dotted", "value", "expected"), [
    ("hub.config.GitHubOAuthenticator.client_secret", "0123abcd", "hub.config.GitHubOAuthenticator.client_secret"),
    ("hub.extraEnv.OAUTH_CLIENT_SECRET", "0123abcd", "hub.extraEnv.OAUTH_CLIENT_SECRET"),
])
def test_checker_finds_a_secret_written_into_the_file(values, dotted, value, expected):
    assert _secrets(_changed(values, dotted, value)) == [expected]
