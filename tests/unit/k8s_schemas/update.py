"""Regenerate the KubeRay schemas that tests/unit/test_k8s.py validates k8s/ against.

KubeRay publishes its CRDs only in its repository and Helm chart (no PyPI or npm package holds them). This
takes the `v1` openAPIV3Schema of each CRD from a KubeRay checkout, drops the descriptions, and replaces the
embedded pod templates by `{"type": "object"}`: those are core Kubernetes `PodTemplateSpec`s, which the test
validates with kubernetes-validate against the Kubernetes API's own schemas instead. The output is a few KB
per kind instead of ~1 MB.

    git clone --depth 1 --branch v1.7.0 https://github.com/ray-project/kuberay /tmp/kuberay
    python tests/unit/k8s_schemas/update.py /tmp/kuberay v1.7.0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KINDS = {"RayJob": "rayjobs", "RayCluster": "rayclusters", "RayCronJob": "raycronjobs"}
POD_TEMPLATES = ("template", "submitterPodTemplate")


def trimmed(node):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "description":
                continue
            if key == "properties":
                out[key] = {
                    name: {"type": "object", "x-pod-template": True}
                    if name in POD_TEMPLATES and "spec" in sub.get("properties", {})
                    else trimmed(sub)
                    for name, sub in value.items()
                }
            else:
                out[key] = trimmed(value)
        return out
    if isinstance(node, list):
        return [trimmed(v) for v in node]
    return node


def main(checkout: str, tag: str) -> None:
    bases = Path(checkout) / "ray-operator" / "config" / "crd" / "bases"
    for kind, plural in KINDS.items():
        crd = yaml.safe_load((bases / f"ray.io_{plural}.yaml").read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schema = {"x-source": f"ray-project/kuberay {tag} ray.io_{plural}.yaml, v1"}
        schema.update(trimmed(version["schema"]["openAPIV3Schema"]))
        (HERE / f"{kind}.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
