"""A real Ray head (``ray start --head``, token auth on, as in docker-compose and KubeRay): the
API joining it as a Ray Client (``lorif serve --cluster ray://…``), and the RayService's own
Serve config (deploy/kuberay/rayservice.yaml) deployed through the dashboard's REST API — the
way KubeRay deploys it — both answering as one process does."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from tests.deploy.test_kuberay import serve_config
from tests.helpers import free_port, lorif_serve
from tests.service.test_cluster import PROMPTS, ask, same, settings

pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head() -> Iterator[dict[str, str]]:
    """A head with 2 CPUs; yields the addresses and the environment (token) of its clients."""
    gcs, client, dashboard = free_port(), free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [
            str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2",
            f"--port={gcs}", f"--ray-client-server-port={client}",
            f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
            "--include-dashboard=true", "--disable-usage-stats",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    dashboard_url = f"http://127.0.0.1:{dashboard}"
    auth = {"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"}
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{dashboard_url}/api/version", headers=auth).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
        time.sleep(0.5)
    assert httpx.get(f"{dashboard_url}/api/version").status_code == 401  # the token is needed
    yield {"client": f"ray://127.0.0.1:{client}", "dashboard": dashboard_url, **env}
    # its own session: the head and every Ray process under it go at once (a SIGTERM alone
    # drains the node for up to 30 s)
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=30)
    # `ray stop` would remove the note of "the latest cluster", which ray.init() connects to
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if current.exists() and current.read_text().strip().endswith(f":{gcs}"):
        current.unlink()


@pytest.fixture(scope="module")
def want(small_sharded_index) -> dict[str, dict]:
    with TestClient(create_app(settings(small_sharded_index, scorer="thread"))) as c:
        return {p: ask(c, p) for p in PROMPTS}


def serve_cli(ray_head: dict[str, str], *args: str) -> str:
    run = subprocess.run(
        [str(BIN / "serve"), *args, "--address", ray_head["dashboard"]],
        env=ray_head, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_the_rayservice_serve_config_deploys_and_answers(
    ray_head, small_sharded_index, want, tmp_path
):
    config = serve_config()
    port = free_port()
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    (app,) = config["applications"]
    # the manifest as it is, sized down to 2 CPUs and pointed at the test index
    app["args"] |= {"index": str(small_sharded_index), "device": "cpu", "cluster_cpus": 0.25,
                    "cluster_replicas": 1, "cache_size": 0}  # fmt: skip
    for d in app["deployments"]:
        d |= {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    serve_cli(ray_head, "deploy", str(path))
    try:
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            while True:
                try:
                    if c.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, serve_cli(ray_head, "status")
                time.sleep(1)
            assert c.get("/v1/index").json()["scorer"] == "cluster"
            for p in PROMPTS:
                same(ask(c, p), want[p])
    finally:
        serve_cli(ray_head, "shutdown", "--yes")


def test_the_api_as_a_ray_client(ray_head, small_sharded_index, want):
    with lorif_serve(
        small_sharded_index, "--cluster", ray_head["client"], "--cluster-cpus", "0.25",
        "--cache-size", "0", env=ray_head, timeout_s=180,
    ) as (url, _):  # fmt: skip
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.get("/v1/index").json()["scorer"] == "cluster"
            for p in PROMPTS:
                same(ask(c, p), want[p])
        status = serve_cli(ray_head, "status")
        assert "lorif-shards-0" in status and "lorif-shards-1" in status
    # a graceful stop deletes the applications it deployed
    assert "lorif-shards" not in serve_cli(ray_head, "status")
