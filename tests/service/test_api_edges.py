"""The API's edges (issue: hardening, item 8): strict inputs, no Host-derived redirects, HEAD,
local API docs with a CSP, docs behind the key by choice, no host paths, key files."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.settings import ServiceSettings


@pytest.fixture(scope="module")
def client(small_index):
    with TestClient(
        create_app(ServiceSettings(index=str(small_index), device="cpu", scorer="thread"))
    ) as c:
        yield c


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "x", "k": True},
        {"prompt": "   \n\t "},
        {"prompt": "the king.", "completion": "  "},
        {"prompt": "x", "k": "3"},
        {"prompt": "x", "damping": "0.1"},
        {"prompt": "x", "damping": True},
        {"prompt": "x", "verbatim": "yes"},
    ],
)
def test_strict_bodies(client, body):
    r = client.post("/v1/attributions", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("example_id", ["1_000", "+1", "-1", "1e3", " 1", "99999999999999999999"])
def test_example_ids_are_plain_digits(client, example_id):
    assert client.get(f"/v1/examples/{example_id}").status_code in (404, 422)
    assert client.get("/v1/examples/1").status_code == 200


def test_media_type_is_case_insensitive_and_head_works(client):
    r = client.post(
        "/v1/attributions",
        content=b'{"prompt": "the king."}',
        headers={"content-type": "APPLICATION/JSON; charset=UTF-8"},
    )
    assert r.status_code == 200, r.text
    assert client.head("/").status_code == 200


def test_no_redirect_built_from_the_host_header(client):
    r = client.get("/v1/index/", headers={"host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers
    assert "evil.example" not in r.text


def test_index_summary_holds_no_host_paths(client, small_index):
    body = client.get("/v1/index").text
    assert str(small_index.parent) not in body and "/tmp" not in body
    assert set(client.get("/v1/index").json()["model"]) <= {"spec", "name", "class", "fingerprint"}


def test_docs_are_served_locally_with_a_csp(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "http" not in page.text  # nothing from another origin
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in (
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/static/docs.js",
    ):
        assert client.get(asset).status_code == 200, asset


def test_docs_behind_the_key_unless_public(small_index):
    for public, code in ((False, 401), (True, 200)):
        settings = ServiceSettings(
            index=str(small_index),
            device="cpu",
            scorer="thread",
            api_key="s3cret",
            public_docs=public,
        )
        with TestClient(create_app(settings)) as c:
            assert c.get("/openapi.json").status_code == code
            assert c.get("/docs").status_code == code
            assert c.get("/openapi.json", headers={"x-api-key": "s3cret"}).status_code == 200
            assert c.get("/health/ready").status_code == 200
            assert c.get("/v1/index", headers={"x-api-key": "s3crex"}).status_code == 401


def test_api_key_file(tmp_path):
    key = tmp_path / "key"
    key.write_text("from-a-file\n")
    assert ServiceSettings(api_key_file=str(key)).api_key == "from-a-file"
    with pytest.raises(ValidationError, match="not both"):
        ServiceSettings(api_key="x", api_key_file=str(key))
    with pytest.raises(ValidationError, match="cannot read the API key file"):
        ServiceSettings(api_key_file=str(tmp_path / "missing"))


def test_api_key(small_index):
    app = create_app(
        ServiceSettings(index=str(small_index), device="cpu", scorer="thread", api_key="s3cret")
    )
    with TestClient(app) as c:
        r = c.post("/v1/attributions", json={"prompt": "the king."})
        assert r.status_code == 401 and r.json()["title"] == "Unauthorized"
        ok = c.post(
            "/v1/attributions", json={"prompt": "the king."}, headers={"X-API-Key": "s3cret"}
        )
        assert ok.status_code == 200
        assert c.get("/health/live").status_code == 200  # health stays open
        assert c.post("/v1/admin/reload").status_code == 401  # admin: behind the key
        reload = c.post("/v1/admin/reload", headers={"X-API-Key": "s3cret"})
        assert reload.status_code == 200 and reload.json()["status"] == "unchanged"
        assert reload.json()["version"]["number"] == 1


@pytest.mark.parametrize(
    "body", [b'{"prompt": "\xff\xfe the king."}', b'{"prompt": "x", "a": ' + b"[" * 1200]
)
def test_unreadable_json_is_a_422_problem(client, body):
    """Invalid UTF-8 and nesting past the parser's depth are invalid requests, as documented
    (FastAPI answers 400 by itself)."""
    r = client.post("/v1/attributions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics", "/v1/index"])
def test_head_on_probes_and_the_summary(client, path):
    r = client.head(path)
    assert r.status_code == 200 and r.content == b""


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/docs"])
def test_a_large_body_on_a_page_is_a_413_not_a_traceback(client, path):
    r = client.request("GET", path, content=b"x" * 70_000)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"


def test_cors_preflight_passes_the_key_and_refusals_carry_cors(small_index):
    origin = "http://page.example"
    settings = ServiceSettings(
        index=str(small_index), device="cpu", scorer="thread", api_key="k", cors_origins=origin
    )
    with TestClient(create_app(settings)) as c:
        pre = c.options(
            "/v1/attributions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key, content-type",
            },
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
        refused = c.post("/v1/attributions", json={"prompt": "x"}, headers={"Origin": origin})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == origin
        wrong_type = c.post(
            "/v1/attributions",
            content=b"x",
            headers={"Origin": origin, "X-API-Key": "k", "content-type": "text/plain"},
        )
        assert wrong_type.status_code == 415
        assert wrong_type.headers["access-control-allow-origin"] == origin


def test_cors_origins_from_the_flag_or_the_environment(small_index, monkeypatch):
    from lorif_cli.serve import settings_from

    one = settings_from(str(small_index), {"cors_origins": "http://a.example"})
    assert one.cors_origins == ["http://a.example"]
    two = settings_from(str(small_index), {"cors_origins": '["http://a", "http://b"]'})
    assert two.cors_origins == ["http://a", "http://b"]
    monkeypatch.setenv("LORIF_CORS_ORIGINS", "http://c,http://d")
    assert ServiceSettings().cors_origins == ["http://c", "http://d"]


def test_favicon(client):
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
