"""k8s/ manifests and the Dockerfile: KubeRay's fields and their types, lifecycle, authentication, no inline
credentials, and consistency with the configs, entrypoint and image they run.

Nothing here talks to Kubernetes (there is no cluster in this environment). KubeRay's CRD OpenAPI schemas
are not shipped by any package on PyPI or npm (they are published only through KubeRay's GitHub and Helm
repositories), so instead of validating against the CRDs this checks a focused JSON Schema written from
KubeRay's ray.io/v1 API reference (v1.6-v1.7) for the fields these manifests use. Objects list their known
fields with `additionalProperties: false`: unless the client asks for strict field validation, the API server
silently prunes unknown fields of a custom resource, and a misspelt `shutdownAfterJobFinishes` would leave GPU
clusters running.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from internvl_batch.config_loader import load_config
from internvl_batch.job import build_parser, overrides_from_args

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
JOB_ENTRYPOINT = "jobs/caption.py"
GPU_RESOURCE = "nvidia.com/gpu"
CONFIG_ANNOTATION = "internvl-batch/config"  # RayClusters name the config they are sized for
MIN_RAY_FOR_TOKEN_AUTH = (2, 52, 0)
DAY_S = 24 * 3600


# --- loading ------------------------------------------------------------------------------------------------


def load_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


DOCS = load_documents()
RAY_KINDS = ("RayJob", "RayCronJob", "RayCluster")
RAY_DOCS = [(f, d) for f, d in DOCS if d.get("kind") in RAY_KINDS]


def doc_id(item) -> str:
    name, doc = item
    return f"{name}:{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def job_spec(doc: dict) -> dict | None:
    """The RayJob spec a document runs (a RayCronJob's template), or None for a RayCluster."""
    if doc["kind"] == "RayJob":
        return doc["spec"]
    if doc["kind"] == "RayCronJob":
        return doc["spec"]["jobTemplate"]
    return None


def cluster_spec(doc: dict) -> dict:
    spec = job_spec(doc)
    return doc["spec"] if spec is None else spec["rayClusterSpec"]


def pod_specs(cluster: dict) -> list[tuple[str, dict, dict | None]]:
    """(group name, pod spec, worker group or None for the head) for every Ray pod template."""
    pods = [("head", cluster["headGroupSpec"]["template"]["spec"], None)]
    for group in cluster.get("workerGroupSpecs", []):
        pods.append((group["groupName"], group["template"]["spec"], group))
    return pods


def ray_container(pod: dict) -> dict:
    # KubeRay treats the first container of each Ray pod template as the Ray container.
    return pod["containers"][0]


def all_containers(pod: dict) -> list[dict]:
    return list(pod.get("initContainers", [])) + list(pod.get("containers", []))


def scalars(node, path="$"):
    """(path, value) for every scalar under node, mapping keys included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key
            yield from scalars(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from scalars(value, f"{path}[{i}]")
    else:
        yield path, node


def mappings(node):
    """Every mapping under node, node included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from mappings(value)
    elif isinstance(node, list):
        for value in node:
            yield from mappings(value)


# --- quantities -----------------------------------------------------------------------------------------------

_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


def quantity(value) -> float:
    """A Kubernetes resource quantity as a number (bytes, cores, devices); `m` is milli."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"([0-9.]+)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?", str(value))
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = float(match.group(1)), match.group(2) or ""
    return number / 1000 if suffix == "m" else number * _SUFFIX[suffix]


def test_quantity_parser():
    assert quantity("8") == 8 and quantity("500m") == 0.5 and quantity(1) == 1
    assert quantity("64Gi") == 64 * 2**30 and quantity("100000000000") == 1e11 and quantity("2G") == 2e9
    for bad in ("8 cores", True, "", "1Gb"):
        with pytest.raises(ValueError):
            quantity(bad)


# --- the focused KubeRay schema ---------------------------------------------------------------------------------

_QUANTITY = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^[0-9.]+(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"},
    ]
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DNS_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_RESOURCES = {
    "type": "object",
    "properties": {
        "limits": {"type": "object", "additionalProperties": _QUANTITY},
        "requests": {"type": "object", "additionalProperties": _QUANTITY},
    },
    "additionalProperties": False,
}
_ENV_VAR = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "value": {"type": "string"},
        "valueFrom": {"type": "object"},
    },
    "additionalProperties": False,
}
_ENV_FROM = {
    "type": "object",
    "properties": {
        "prefix": {"type": "string"},
        "secretRef": {"type": "object", "required": ["name"]},
        "configMapRef": {"type": "object", "required": ["name"]},
    },
    "additionalProperties": False,
}
_CONTAINER = {
    "type": "object",
    "required": ["name", "image", "resources"],
    "properties": {
        "name": _DNS_NAME,
        "image": {"type": "string", "minLength": 1},
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        "workingDir": {"type": "string"},
        "command": {"type": "array", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": {"type": "array", "items": _ENV_VAR},
        "envFrom": {"type": "array", "items": _ENV_FROM},
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["containerPort"],
                "properties": {"containerPort": {"type": "integer"}},
            },
        },
        "resources": _RESOURCES,
        "volumeMounts": {"type": "array", "items": {"type": "object", "required": ["name", "mountPath"]}},
        "securityContext": {"type": "object"},
        "lifecycle": {"type": "object"},
        "readinessProbe": {"type": "object"},
        "livenessProbe": {"type": "object"},
    },
    "additionalProperties": False,
}
_POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "metadata": {"type": "object", "properties": {"labels": _STRING_MAP, "annotations": _STRING_MAP}},
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
                "initContainers": {"type": "array", "items": _CONTAINER},
                "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                "serviceAccountName": _DNS_NAME,
                "nodeSelector": _STRING_MAP,
                "tolerations": {"type": "array", "items": {"type": "object"}},
                "affinity": {"type": "object"},
                "priorityClassName": {"type": "string"},
                "securityContext": {"type": "object"},
                "imagePullSecrets": {"type": "array"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
_INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
_HEAD_GROUP = {
    "type": "object",
    "required": ["template", "rayStartParams"],
    "properties": {
        "template": _POD_TEMPLATE,
        "headService": {"type": "object"},
        "enableIngress": {"type": "boolean"},
        "ingressOptions": {"type": "object"},
        "resources": _STRING_MAP,
        "labels": _STRING_MAP,
        "rayStartParams": _STRING_MAP,
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    },
    "additionalProperties": False,
}
_WORKER_GROUP = {
    "type": "object",
    # KubeRay defaults min/max; these manifests state them, since they are the autoscaling bounds.
    "required": ["groupName", "template", "rayStartParams", "replicas", "minReplicas", "maxReplicas"],
    "properties": {
        "suspend": {"type": "boolean"},
        "groupName": _DNS_NAME,
        "replicas": _INT32,
        "minReplicas": _INT32,
        "maxReplicas": _INT32,
        "idleTimeoutSeconds": _INT32,
        "priority": {"type": "integer"},
        "resources": _STRING_MAP,
        "labels": _STRING_MAP,
        "rayStartParams": _STRING_MAP,
        "template": _POD_TEMPLATE,
        "scaleStrategy": {"type": "object"},
        "numOfHosts": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}
_CLUSTER_SPEC = {
    "type": "object",
    "required": ["rayVersion", "headGroupSpec", "workerGroupSpecs", "authOptions", "enableInTreeAutoscaling"],
    "properties": {
        "upgradeStrategy": {"type": "object"},
        "authOptions": {
            "type": "object",
            "properties": {
                "mode": {"enum": ["disabled", "token"]},
                "secretName": _DNS_NAME,
                "enableK8sTokenAuth": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "suspend": {"type": "boolean"},
        "managedBy": {"type": "string"},
        "autoscalerOptions": {
            "type": "object",
            "properties": {
                "resources": _RESOURCES,
                "image": {"type": "string"},
                "imagePullPolicy": {"type": "string"},
                "securityContext": {"type": "object"},
                "idleTimeoutSeconds": _INT32,
                "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
                "version": {"enum": ["v1", "v2"]},
                "env": {"type": "array", "items": _ENV_VAR},
                "envFrom": {"type": "array", "items": _ENV_FROM},
                "volumeMounts": {"type": "array"},
                "command": {"type": "array", "items": {"type": "string"}},
                "args": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "headServiceAnnotations": _STRING_MAP,
        "enableInTreeAutoscaling": {"type": "boolean"},
        "gcsFaultToleranceOptions": {"type": "object"},
        "historyServerOptions": {"type": "object"},
        "networkPolicy": {"type": "object"},
        "tlsOptions": {"type": "object"},
        "headGroupSpec": _HEAD_GROUP,
        "rayVersion": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "workerGroupSpecs": {"type": "array", "minItems": 1, "items": _WORKER_GROUP},
    },
    "additionalProperties": False,
}
_JOB_SPEC = {
    "type": "object",
    # The lifecycle fields are optional in KubeRay; a batch job here must state every one of them.
    "required": [
        "entrypoint",
        "rayClusterSpec",
        "shutdownAfterJobFinishes",
        "ttlSecondsAfterFinished",
        "activeDeadlineSeconds",
        "backoffLimit",
    ],
    "properties": {
        "activeDeadlineSeconds": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "backoffLimit": _INT32,
        "rayClusterSpec": _CLUSTER_SPEC,
        "submitterPodTemplate": {"type": "object"},
        "metadata": _STRING_MAP,
        "clusterSelector": _STRING_MAP,
        "submitterConfig": {"type": "object", "properties": {"backoffLimit": _INT32}, "additionalProperties": False},
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "deletionStrategy": {"type": "object"},
        "entrypoint": {"type": "string", "minLength": 1},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "entrypointResources": {"type": "string"},
        "entrypointNumCpus": {"type": "number", "minimum": 0},
        "entrypointNumGpus": {"type": "number", "minimum": 0},
        "ttlSecondsAfterFinished": _INT32,
        # Without it the Ray cluster (GPU pods included) outlives the job.
        "shutdownAfterJobFinishes": {"const": True},
        "suspend": {"type": "boolean"},
    },
    "additionalProperties": False,
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": _DNS_NAME, "namespace": _DNS_NAME, "labels": _STRING_MAP, "annotations": _STRING_MAP},
    "additionalProperties": False,
}
_CRON = r"^\S+( \S+){4}$"
SCHEMAS = {
    "RayJob": {"spec": _JOB_SPEC},
    "RayCluster": {"spec": _CLUSTER_SPEC},
    "RayCronJob": {
        "spec": {
            "type": "object",
            "required": ["schedule", "jobTemplate"],
            "properties": {
                "schedule": {"type": "string", "pattern": _CRON},
                "jobTemplate": _JOB_SPEC,
                "suspend": {"type": "boolean"},
            },
            "additionalProperties": False,
        }
    },
}


def document_schema(kind: str) -> dict:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            **SCHEMAS[kind],
        },
        "additionalProperties": False,
    }


def schema_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(document_schema(doc["kind"]))
    return [f"{'.'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in validator.iter_errors(doc)]


# --- which manifests exist --------------------------------------------------------------------------------------


def test_k8s_holds_the_promised_manifests():
    kinds = [doc["kind"] for _, doc in DOCS]
    # Nightly 4B (a RayJob and its RayCronJob), 78B, the interactive cluster and the pods' ServiceAccount.
    assert kinds.count("RayJob") >= 2 and "RayCronJob" in kinds and "RayCluster" in kinds and "ServiceAccount" in kinds
    gpus = [max(gpu_limit(p) for _, p, _ in pod_specs(cluster_spec(d))) for _, d in RAY_DOCS if d["kind"] == "RayJob"]
    assert 8 in gpus, "no RayJob for 8-GPU nodes"


@pytest.mark.parametrize("item", DOCS, ids=doc_id)
def test_every_document_is_a_known_kind_with_a_name(item):
    name, doc = item
    assert (doc.get("apiVersion"), doc.get("kind")) in {
        ("ray.io/v1", "RayJob"),
        ("ray.io/v1", "RayCronJob"),
        ("ray.io/v1", "RayCluster"),
        ("v1", "ServiceAccount"),
    }, f"{name}: unexpected {doc.get('apiVersion')}/{doc.get('kind')}"
    assert re.fullmatch(_DNS_NAME["pattern"], str((doc.get("metadata") or {}).get("name", ""))), name


def test_names_are_unique_per_kind():
    keys = [(d["kind"], d["metadata"]["name"]) for _, d in DOCS]
    assert len(keys) == len(set(keys)), keys


# --- KubeRay structure --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_kuberay_fields_and_types(item):
    assert schema_errors(item[1]) == []


def test_schema_rejects_what_kuberay_would_mangle():
    _, good = next((f, d) for f, d in RAY_DOCS if d["kind"] == "RayJob")
    broken = yaml.safe_load(yaml.safe_dump(good))
    spec = broken["spec"]
    spec["shutdownAfterJobFinish"] = spec.pop("shutdownAfterJobFinishes")  # a typo KubeRay would prune
    spec["rayClusterSpec"]["workerGroupSpecs"][0]["minReplicas"] = "1"  # a string where KubeRay wants int32
    del spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    errors = "\n".join(schema_errors(broken))
    assert "shutdownAfterJobFinish" in errors and "minReplicas" in errors and "'image' is a required property" in errors


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_worker_groups_have_autoscaling_bounds(item):
    cluster = cluster_spec(item[1])
    assert cluster["enableInTreeAutoscaling"] is True
    groups = cluster["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups), "duplicate groupName"
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        assert group["maxReplicas"] >= 1, group["groupName"]
    # Preprocessing actors and model replicas both have somewhere to go.
    assert any(gpu_limit(g["template"]["spec"]) == 0 for g in groups), "no CPU worker group"
    assert any(gpu_limit(g["template"]["spec"]) > 0 for g in groups), "no GPU worker group"


def gpu_limit(pod: dict) -> int:
    limits = ray_container(pod)["resources"].get("limits", {})
    return int(quantity(limits.get(GPU_RESOURCE, 0)))


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_ray_containers_images_and_resources(item):
    cluster = cluster_spec(item[1])
    images = set()
    for group, pod, _ in pod_specs(cluster):
        container = ray_container(pod)
        images.add(container["image"])
        resources = container["resources"]
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(section, {})), f"{group}: {section} need cpu and memory"
            for key in resources.get(section, {}):
                # Only NVIDIA GPUs: a misspelt key (nvidia.com/gpus, gpu) asks for nothing and gets no GPU.
                assert "gpu" not in key.lower() or key == GPU_RESOURCE, f"{group}: GPU resource {key!r}"
        for key, request in resources.get("requests", {}).items():
            # The API server rejects a pod whose request exceeds its limit.
            assert quantity(request) <= quantity(resources.get("limits", {}).get(key, request)), f"{group}: {key}"
        gpus = resources.get("limits", {}).get(GPU_RESOURCE)
        if gpus is not None:
            assert isinstance(gpus, int) and gpus > 0, f"{group}: {GPU_RESOURCE} limit must be a positive integer"
        # Extended resources cannot be overcommitted: a request, if any, must equal the limit.
        if GPU_RESOURCE in resources.get("requests", {}):
            assert resources["requests"][GPU_RESOURCE] == gpus, f"{group}: GPU request without an equal limit"
    # Different images on head and workers means mismatched Ray or package versions.
    assert len(images) == 1, images
    head = ray_container(cluster["headGroupSpec"]["template"]["spec"])["resources"]
    assert not any(GPU_RESOURCE in head.get(s, {}) for s in ("requests", "limits")), "the head must not take a GPU"
    assert cluster["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", "actors must stay off the head"


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_volumes_shared_memory_and_model_cache(item):
    for group, pod, worker_group in pod_specs(cluster_spec(item[1])):
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for volume in volumes.values():
            if "sizeLimit" in volume.get("emptyDir", {}):
                quantity(volume["emptyDir"]["sizeLimit"])
        container = ray_container(pod)
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        for container_ in all_containers(pod):
            for mount in container_.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{group}: mount of undefined volume {mount['name']}"
        # Ray's object store lives in /dev/shm; it must fit there and in the pod's memory.
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm["medium"] == "Memory", group
        memory = quantity(container["resources"]["limits"]["memory"])
        assert quantity(shm["sizeLimit"]) < memory, f"{group}: /dev/shm is charged to the memory limit"
        params = (worker_group or cluster_spec(item[1])["headGroupSpec"])["rayStartParams"]
        if "object-store-memory" in params:
            assert quantity(params["object-store-memory"]) <= quantity(shm["sizeLimit"]), (
                f"{group}: object store > /dev/shm"
            )
        # The Hugging Face cache (weights on GPU pods) goes to a volume, not the container's writable layer.
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("HF_HOME") in mounts, f"{group}: HF_HOME must be a mounted volume"


# --- authentication and credentials -----------------------------------------------------------------------------


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_ray_token_authentication_stays_on(item):
    cluster = cluster_spec(item[1])
    assert cluster["authOptions"].get("mode", "token") == "token"
    assert not cluster["authOptions"].get("enableK8sTokenAuth"), "K8s-delegated auth is unsupported for RayJobs"
    assert version_tuple(cluster["rayVersion"]) >= MIN_RAY_FOR_TOKEN_AUTH
    for group, pod, _ in pod_specs(cluster):
        for container in all_containers(pod):
            for var in container.get("env", []):
                # The operator sets these from authOptions; a hand-set value would override or disable it.
                assert var["name"] not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"), group


_ACCESS_KEY_ID = re.compile(r"\b(AKIA|ASIA|AIDA|AROA)[A-Z0-9]{16}\b")
_SECRET_KEY = re.compile(r"^[A-Za-z0-9/+]{40}$")
_CREDENTIAL_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN", "RAY_AUTH_TOKEN"}


def inline_credentials(doc: dict) -> list[str]:
    found = []
    for path, value in scalars(doc):
        if isinstance(value, str) and (_ACCESS_KEY_ID.search(value) or _SECRET_KEY.match(value)):
            found.append(f"{path}: looks like an AWS key")
    if doc.get("kind") in ("Secret", "ConfigMap"):
        found.append(f"{doc['kind']} {doc['metadata'].get('name')}: secrets are created by hand, not shipped")
    for node in mappings(doc):
        for var in node.get("env", []) if isinstance(node.get("env"), list) else []:
            if var.get("name") in _CREDENTIAL_VARS and "value" in var:
                found.append(f"env {var['name']} has an inline value (use valueFrom.secretKeyRef)")
    return found


@pytest.mark.parametrize("item", DOCS, ids=doc_id)
def test_no_inline_credentials(item):
    assert inline_credentials(item[1]) == []


def test_credential_scan_finds_inline_keys():
    leaked = {
        "kind": "RayJob",
        "metadata": {"name": "x"},
        "spec": {
            "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}],
            "entrypoint": "python jobs/caption.py --set storage.key=AKIAIOSFODNN7EXAMPLE",
        },
    }
    assert len(inline_credentials(leaked)) == 3
    assert inline_credentials({"kind": "Secret", "metadata": {"name": "s3"}, "stringData": {}})


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_every_ray_pod_takes_s3_credentials_from_a_secret_or_its_service_account(item):
    # Both ways are wired into every pod, so a deployment picks one by creating the Secret or annotating the
    # ServiceAccount (IRSA), without editing manifests.
    service_accounts = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "ServiceAccount"}
    for group, pod, _ in pod_specs(cluster_spec(item[1])):
        assert pod.get("serviceAccountName") in service_accounts, f"{group}: serviceAccountName"
        container = ray_container(pod)
        from_secret = any("secretRef" in source for source in container.get("envFrom", [])) or any(
            "secretKeyRef" in var.get("valueFrom", {})
            for var in container.get("env", [])
            if var["name"].startswith("AWS_")
        )
        assert from_secret, f"{group}: no Secret for AWS credentials"


# --- lifecycle ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("item", [i for i in RAY_DOCS if i[1]["kind"] == "RayCronJob"], ids=doc_id)
def test_scheduled_runs_never_overlap_and_match_a_rayjob(item):
    doc = item[1]
    minute, hour, *rest = doc["spec"]["schedule"].split()
    # Daily schedules only (a fixed minute and hour): runs resume from the same output path, one at a time.
    assert minute.isdigit() and hour.isdigit() and rest == ["*", "*", "*"], doc["spec"]["schedule"]
    template = doc["spec"]["jobTemplate"]
    assert template["activeDeadlineSeconds"] + template["ttlSecondsAfterFinished"] < DAY_S
    # The one-off RayJob and the nightly template must not drift apart.
    rayjob_specs = [d["spec"] for _, d in DOCS if d["kind"] == "RayJob"]
    assert template in rayjob_specs, "the RayCronJob's jobTemplate differs from every RayJob's spec"


# --- consistency with the entrypoint, the config and the image ----------------------------------------------------

_UNQUOTED_SPECIAL = set(";&|<>()`$*?[]{}~\n\\#")


def unquoted_specials(command: str) -> list[str]:
    """Shell characters outside quotes: KubeRay pastes the entrypoint into the submitter's bash script."""
    found, quote = [], None
    for char in command:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _UNQUOTED_SPECIAL:
            found.append(char)
    return found


def test_unquoted_specials():
    assert unquoted_specials("python a.py --set 'x=s3://b/*.jsonl' --set \"y=[1, 2]\"") == []
    assert unquoted_specials("cd /x && python a.py --set x=s3://b/*.jsonl > out") == ["&", "&", "*", ">"]


def parse_entrypoint(entrypoint: str):
    assert unquoted_specials(entrypoint) == [], f"unquoted shell characters in entrypoint: {entrypoint!r}"
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", JOB_ENTRYPOINT], f"entrypoint must run `python {JOB_ENTRYPOINT}`: {argv}"
    # The job's own parser: an unknown flag here would fail the job with exit 2 after the cluster came up.
    return build_parser().parse_args(argv[2:])


def dockerignored(path: str) -> bool:
    """Docker's .dockerignore rules (last match wins, `!` re-includes, a directory takes its contents)."""
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        tokens = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        regex = "".join(tokens.get(tok) or re.escape(tok) for tok in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern))
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_matcher():
    assert dockerignored(".venv/lib/x.py") and dockerignored("internvl_batch/__pycache__/a.pyc")
    assert dockerignored("__pycache__/a.pyc") and dockerignored("internvl_batch/model/x.pyc")
    assert not dockerignored("configs/internvl2_5-4b.yaml") and not dockerignored(JOB_ENTRYPOINT)


def referenced_config(doc: dict):
    """(config path, overrides) that a manifest runs: from its entrypoint, or a RayCluster's annotation."""
    spec = job_spec(doc)
    if spec is None:
        return doc["metadata"]["annotations"][CONFIG_ANNOTATION], []
    args = parse_entrypoint(spec["entrypoint"])
    return args.config, overrides_from_args(args)


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_entrypoint_and_config_exist_in_the_image(item):
    config_path, _ = referenced_config(item[1])
    # Relative paths resolve in the image's working directory, which holds a copy of this repository.
    assert not Path(config_path).is_absolute(), config_path
    for path in (JOB_ENTRYPOINT, config_path):
        assert (REPO / path).is_file(), f"{path} does not exist in the repository"
        assert not dockerignored(path), f"{path} is excluded from the image by .dockerignore"
    assert "from internvl_batch.job import main" in (REPO / JOB_ENTRYPOINT).read_text()


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_the_config_with_the_entrypoints_overrides_loads(item):
    config_path, overrides = referenced_config(item[1])
    # What the job does first (unknown keys are errors): a bad --set would fail it with exit 2 once the
    # GPU pods are up.
    config = load_config(REPO / config_path, overrides)
    assert config.model.path and config.output.path


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_gpu_workers_fit_the_config(item):
    config_path, overrides = referenced_config(item[1])
    config = load_config(REPO / config_path, overrides)
    per_replica = config.model.gpus_per_replica
    min_replicas, max_replicas = config.resources.gpu_replicas
    cpu_actors, cpus_per_actor = config.resources.cpu_actors[1], config.resources.cpus_per_actor
    groups = cluster_spec(item[1])["workerGroupSpecs"]
    gpu_groups = [g for g in groups if gpu_limit(g["template"]["spec"]) > 0]
    placeable = 0
    for group in gpu_groups:
        pod = group["template"]["spec"]
        gpus = gpu_limit(pod)
        # A replica is one actor: all its GPUs must be in one pod.
        assert gpus >= per_replica, f"{group['groupName']}: {gpus} GPUs per pod < model.gpus_per_replica={per_replica}"
        assert gpus % per_replica == 0, f"{group['groupName']}: {gpus % per_replica} GPUs per pod would stay idle"
        # Each replica also takes one CPU on its pod.
        assert quantity(ray_container(pod)["resources"]["limits"]["cpu"]) >= gpus // per_replica, group["groupName"]
        placeable += group["maxReplicas"] * (gpus // per_replica)
    # The job counts the GPUs present when it starts and runs the model on CPU if there are none.
    gpus_at_start = sum(g["minReplicas"] * gpu_limit(g["template"]["spec"]) for g in gpu_groups)
    assert gpus_at_start >= per_replica, f"{gpus_at_start} GPUs at start < model.gpus_per_replica={per_replica}"
    assert placeable >= max_replicas >= min_replicas, (
        f"room for {placeable} replicas, config wants up to {max_replicas}"
    )
    cpus = sum(
        g["maxReplicas"] * quantity(ray_container(g["template"]["spec"])["resources"]["limits"]["cpu"]) for g in groups
    )
    assert cpus >= cpu_actors * cpus_per_actor + max_replicas, f"{cpus} worker CPUs at most, too few for the actors"


def dockerfile_instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue  # comments may sit inside a continued instruction
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def dockerfile_facts() -> dict:
    args, base, workdir, copy_root, installs_gpu_extra = {}, None, None, None, False
    for instruction, rest in dockerfile_instructions():
        if instruction == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args.setdefault(name.strip(), value.strip().strip('"'))
        elif instruction == "FROM":
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest.split()[0])
        elif instruction == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir}/{rest}"
        elif instruction == "COPY":
            words = [w for w in rest.split() if not w.startswith("--")]
            if words[:-1] == ["."]:
                dest = words[-1]
                copy_root = dest if dest.startswith("/") else f"{workdir}/{dest}".replace("/./", "/").rstrip("/.")
        elif instruction == "RUN" and "pip install" in rest and "[gpu]" in rest and copy_root:
            installs_gpu_extra = True
    return {"args": args, "base": base, "workdir": workdir, "copy_root": copy_root, "gpu_extra": installs_gpu_extra}


def test_dockerfile_builds_on_ray_gpu_image_with_the_repository_as_working_directory():
    facts = dockerfile_facts()
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)-(gpu|cu\d+)", facts["base"] or "")
    assert match, f"base image {facts['base']!r} is not an official Ray GPU image"
    assert int(match.group(2)) >= 10, "the package needs Python >= 3.10"
    assert facts["copy_root"] == facts["workdir"], "the repository must be copied to the final WORKDIR"
    assert facts["gpu_extra"], "the package must be installed with its gpu extra after the repository is copied"
    for path in ("pyproject.toml", "README.md", "internvl_batch/__init__.py"):
        assert not dockerignored(path), f"{path} is needed to install the package"


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_manifests_match_the_image(item):
    facts = dockerfile_facts()
    cluster = cluster_spec(item[1])
    # KubeRay derives commands from rayVersion; a mismatch with the image's Ray breaks job submission.
    assert cluster["rayVersion"] == facts["args"]["RAY_VERSION"]
    for group, pod, _ in pod_specs(cluster):
        # Entrypoints use paths relative to the head's working directory: the repository copied into the image.
        assert ray_container(pod).get("workingDir") == facts["workdir"], group
