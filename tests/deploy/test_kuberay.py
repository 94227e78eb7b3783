"""The KubeRay manifest (deploy/kuberay/): a RayService with the fields KubeRay documents, its
Serve config valid for Ray's own schema and naming our application, its pod templates valid
core resources (kubernetes-validate), the overlay on the base. No cluster here: the Serve
config itself is deployed on a real Ray head in tests/service/test_ray_head.py."""

from __future__ import annotations

import importlib
import re

import pytest
import yaml

from tests.deploy.test_deploy import kubernetes_validate
from tests.helpers import ROOT

KUBERAY = ROOT / "deploy" / "kuberay"


def rayservice() -> dict:
    return yaml.safe_load((KUBERAY / "rayservice.yaml").read_text())


def serve_config() -> dict:
    return yaml.safe_load(rayservice()["spec"]["serveConfigV2"])


def pod_templates() -> dict[str, dict]:
    cluster = rayservice()["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"]}
    groups |= {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    return {name: g["template"] for name, g in groups.items()}


def test_rayservice_has_the_fields_kuberay_documents():
    doc = rayservice()
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService"
    spec = doc["spec"]
    assert isinstance(spec["serveConfigV2"], str)  # KubeRay takes the Serve config as a string
    cluster = spec["rayClusterConfig"]
    pin = re.search(r"ray\[serve\]==([\d.]+)", (ROOT / "pyproject.toml").read_text())
    assert pin and cluster["rayVersion"] == pin.group(1), "rayVersion must match the extra's pin"
    assert cluster["authOptions"] == {"mode": "token"}  # no unauthenticated Ray endpoints
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"  # KubeRay talks to it
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert isinstance(group["rayStartParams"], dict)
    for name, template in pod_templates().items():
        (c,) = template["spec"]["containers"]
        assert c["image"] == "lorif:cluster", name  # the image with the cluster extra
        assert c["readinessProbe"]["httpGet"] and c["livenessProbe"]["httpGet"], name
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/index"]["readOnly"] is True and "/dev/shm" in mounts, name
        assert {r["configMapRef"]["name"] for r in c["envFrom"] if "configMapRef" in r} == {
            "lorif-settings"
        }


def test_serve_config_is_valid_for_ray_and_names_our_application():
    pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")
    from ray.serve.schema import ServeDeploySchema

    from service.settings import ServiceSettings

    config = ServeDeploySchema.model_validate(serve_config())
    (app,) = config.applications
    module, _, attr = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert set(app.args) <= set(ServiceSettings.model_fields), "unknown settings in args"
    ServiceSettings(**app.args)  # values of the right types
    assert {d.name for d in app.deployments} <= {"Ingress"} | {
        f"ShardGroup{g}" for g in range(app.args["cluster_groups"])
    }


def test_serve_application_refuses_unknown_args():
    pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")
    from service.serve_app import build

    with pytest.raises(ValueError, match=r"unknown settings .*'cluster_cpu'"):
        build({"index": "/nonexistent", "cluster_cpu": 2})
    with pytest.raises(ValueError, match="args.index"):
        build({"cluster_cpus": 2})


def test_pod_templates_are_valid_core_resources(tmp_path):
    docs = [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": t}
        for name, t in pod_templates().items()
    ]
    path = tmp_path / "templates.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    kubernetes_validate(path)


def test_overlay_replaces_the_api_deployment_with_the_rayservice():
    kustomization = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../", "rayservice.yaml"]
    deleted = [yaml.safe_load(p["patch"]) for p in kustomization["patches"]]
    assert {(d["kind"], d["metadata"]["name"], d["$patch"]) for d in deleted} == {
        ("Deployment", "lorif-api", "delete"),
        ("Service", "lorif-api", "delete"),
    }
    base = [d for p in (ROOT / "deploy").glob("*.yaml") for d in yaml.safe_load_all(p.read_text())]
    names = {(d["kind"], d["metadata"]["name"]) for d in base if d and "metadata" in d}
    assert {(d["kind"], d["metadata"]["name"]) for d in deleted} <= names
    # KubeRay starts Ray from a login shell, whose PATH lacks the venv: the image links it
    docker = (ROOT / "Dockerfile").read_text()
    assert 'ln -s "/opt/venv/bin/$t" /usr/local/bin/' in docker
