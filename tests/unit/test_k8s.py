"""k8s/ manifests and the Dockerfile: KubeRay's fields and their types, lifecycle, authentication, no inline
credentials, and consistency with the configs, entrypoint and image they run.

Nothing here talks to Kubernetes (there is no cluster in this environment). Structure is checked against
published schemas, strictly (an unknown field is an error, as with `kubectl --validate=strict`: without it
the API server silently prunes unknown fields, and a misspelt `shutdownAfterJobFinishes` would leave GPU
clusters running):
- KubeRay's own CRD schemas (`k8s_schemas/`, taken from KubeRay's repository by `k8s_schemas/update.py`, the
  only place KubeRay publishes them), for the Ray objects;
- the Kubernetes API's schemas (kubernetes-validate) for the core objects: each Ray pod template and the
  ServiceAccount.
Quantities are parsed by the Kubernetes client (`kubernetes.utils.parse_quantity`), the entrypoint by
`shlex`, .dockerignore by Docker's own matcher (docker-py) and the Dockerfile by dockerfile-parse. The rest
are this project's rules: what a batch job must state, and consistency with the configs and the image.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from docker.utils.build import PatternMatcher
from dockerfile_parse import DockerfileParser
from kubernetes.utils import parse_quantity

from internvl_batch.cli import caption_parser, overrides_from_args
from internvl_batch.config_loader import load_config

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "k8s_schemas"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
JOB_ENTRYPOINT = "jobs/caption.py"
GPU_RESOURCE = "nvidia.com/gpu"
CONFIG_ANNOTATION = "internvl-batch/config"  # RayClusters name the config they are sized for
MIN_RAY_FOR_TOKEN_AUTH = (2, 52, 0)
K8S_VERSION = "1.33"  # the oldest Kubernetes the manifests are checked against (KubeRay 1.7 supports it)
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
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


def quantity(value) -> float:
    """A Kubernetes resource quantity as a number (bytes, cores, devices)."""
    return float(parse_quantity(value))


# --- schemas ----------------------------------------------------------------------------------------------------


def strict(schema):
    """The schema with unknown fields refused wherever it lists an object's fields (what strict field
    validation does on the API server); objects that keep unknown fields (`x-kubernetes-preserve-unknown-
    fields`, maps) stay open."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(kind: str) -> jsonschema.Validator:
    schema = strict(json.loads((SCHEMAS / f"{kind}.json").read_text()))
    return jsonschema.Draft202012Validator(schema)


def pod_templates(node, path="$"):
    """(path, template) for every pod template in a Ray object (the fields the trimmed CRD leaves open)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("template", "submitterPodTemplate") and isinstance(value, dict) and "spec" in value:
                yield f"{path}.{key}", value
            else:
                yield from pod_templates(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from pod_templates(value, f"{path}[{i}]")


def core_errors(doc: dict) -> list[str]:
    """A core Kubernetes object checked against the Kubernetes API's schema (the first error, if any)."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.absolute_path)) or '$'}: {exc.message}"]
    return []


def schema_errors(doc: dict) -> list[str]:
    """KubeRay's schema for a Ray object, the Kubernetes schema for each of its pod templates."""
    if doc["kind"] not in RAY_KINDS:
        return core_errors(doc)
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
        for e in crd_validator(doc["kind"]).iter_errors(doc)
    ]
    for path, template in pod_templates(doc.get("spec", {}), "spec"):
        podtemplate = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
        errors += [f"{path}: {e}" for e in core_errors(podtemplate)]
    return errors


# --- which manifests exist --------------------------------------------------------------------------------------


PROMISED_MANIFESTS = {
    # file: the kinds it holds (k8s/README.md's table)
    "serviceaccount.yaml": ["ServiceAccount"],
    "rayjob-internvl2_5-4b.yaml": ["RayJob"],
    "raycronjob-internvl2_5-4b-nightly.yaml": ["RayCronJob"],
    "rayjob-internvl2_5-78b.yaml": ["RayJob"],
    "raycluster-interactive.yaml": ["RayCluster"],
    "rayjob-media-library.yaml": ["RayJob"],
    "raycronjob-media-library-nightly.yaml": ["RayCronJob"],
}


def test_k8s_holds_the_promised_manifests():
    kinds = [doc["kind"] for _, doc in DOCS]
    # Nightly 4B (a RayJob and its RayCronJob), 78B, the interactive cluster, the pods' ServiceAccount, and the
    # nightly media-library captioning (a RayJob and its RayCronJob).
    assert kinds.count("RayJob") >= 2 and "RayCronJob" in kinds and "RayCluster" in kinds and "ServiceAccount" in kinds
    for name, expected in PROMISED_MANIFESTS.items():
        assert [d["kind"] for f, d in DOCS if f == name] == expected, name
    # The media-library job reads media roots as they are (input.media), no manifest.
    config_path, overrides = referenced_config(dict(DOCS)["raycronjob-media-library-nightly.yaml"])
    config = load_config(REPO / config_path, overrides)
    assert config.input.media and not config.input.manifests and config.output.resume
    assert config.output.on_config_change == "error"
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
    assert DNS_LABEL.fullmatch(str((doc.get("metadata") or {}).get("name", ""))), name


def test_names_are_unique_per_kind():
    keys = [(d["kind"], d["metadata"]["name"]) for _, d in DOCS]
    assert len(keys) == len(set(keys)), keys


# --- KubeRay structure --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("item", DOCS, ids=doc_id)
def test_fields_and_types_follow_the_published_schemas(item):
    assert schema_errors(item[1]) == []


def test_schema_check_refuses_what_kubernetes_would_mangle():
    _, good = next((f, d) for f, d in RAY_DOCS if d["kind"] == "RayJob")
    broken = copy.deepcopy(good)
    spec = broken["spec"]
    spec["shutdownAfterJobFinish"] = spec.pop("shutdownAfterJobFinishes")  # a typo KubeRay would prune
    spec["rayClusterSpec"]["workerGroupSpecs"][0]["minReplicas"] = "1"  # a string where KubeRay wants int32
    container = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")  # a pod field typo: the volumes would not be mounted
    errors = "\n".join(schema_errors(broken))
    assert "'shutdownAfterJobFinish' was unexpected" in errors and "minReplicas" in errors
    assert "headGroupSpec.template" in errors and "'volumeMount' was unexpected" in errors


# What a batch job here must state, although KubeRay has defaults for it.
JOB_MUST_STATE = ("shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit")
CLUSTER_MUST_STATE = ("rayVersion", "authOptions", "enableInTreeAutoscaling")
WORKER_GROUP_MUST_STATE = ("replicas", "minReplicas", "maxReplicas")  # the autoscaling bounds


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_lifecycle_and_bounds_are_stated(item):
    spec = job_spec(item[1])
    if spec is not None:
        assert [k for k in JOB_MUST_STATE if k not in spec] == []
        # Without it the Ray cluster (GPU pods included) outlives the job.
        assert spec["shutdownAfterJobFinishes"] is True
    cluster = cluster_spec(item[1])
    assert [k for k in CLUSTER_MUST_STATE if k not in cluster] == []
    for group in cluster["workerGroupSpecs"]:
        assert [k for k in WORKER_GROUP_MUST_STATE if k not in group] == [], group["groupName"]
    for group, pod, _ in pod_specs(cluster):
        assert ray_container(pod).get("image"), f"{group}: the Ray container needs an image"


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


def parse_entrypoint(entrypoint: str):
    # KubeRay pastes the entrypoint into the submitter's bash script: it must be written exactly as
    # shlex.join writes its arguments (specials quoted, nothing else), so the shell sees those arguments.
    argv = shlex.split(entrypoint)
    assert entrypoint == shlex.join(argv), f"entrypoint not quoted as `shlex.join` would: {entrypoint!r}"
    assert argv[:2] == ["python", JOB_ENTRYPOINT], f"entrypoint must run `python {JOB_ENTRYPOINT}`: {argv}"
    # The job's own parser: an unknown flag here would fail the job with exit 2 after the cluster came up.
    return caption_parser().parse_args(argv[2:])


def test_an_unquoted_glob_or_operator_is_refused():
    parse_entrypoint("python jobs/caption.py --config c.yaml --set 'input.manifests=s3://b/*.jsonl'")
    for bad in ("python jobs/caption.py --set input.manifests=s3://b/*.jsonl", "python jobs/caption.py > out"):
        with pytest.raises(AssertionError, match="not quoted"):
            parse_entrypoint(bad)


def dockerignored(path: str) -> bool:
    """Docker's own .dockerignore matcher (docker-py's, as `docker build` applies the file)."""
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    return PatternMatcher(patterns).matches(path)


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
    assert "from internvl_batch.cli import caption_main" in (REPO / JOB_ENTRYPOINT).read_text()


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


def dockerfile_facts() -> dict:
    parser = DockerfileParser(path=str(DOCKERFILE))
    workdir, copy_root, installs_gpu_extra = None, None, False
    for step in parser.structure:
        instruction, value = step["instruction"], step["value"]
        if instruction == "WORKDIR":
            workdir = value if value.startswith("/") else f"{workdir}/{value}"
        elif instruction == "COPY":
            words = [w for w in value.split() if not w.startswith("--")]
            if words[:-1] == ["."]:
                dest = words[-1]
                copy_root = dest if dest.startswith("/") else f"{workdir}/{dest}".replace("/./", "/").rstrip("/.")
        elif instruction == "RUN" and "pip install" in value and "[gpu]" in value and copy_root:
            installs_gpu_extra = True
    # The ARG defaults before FROM, as the base image sees them (dockerfile-parse substitutes them).
    return {
        "args": parser.args,
        "base": parser.baseimage,
        "workdir": workdir,
        "copy_root": copy_root,
        "gpu_extra": installs_gpu_extra,
    }


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
