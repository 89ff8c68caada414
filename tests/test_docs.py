"""The docs page: Swagger UI served by the mock itself, with the spec at /openapi.yaml and /openapi.json."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import SPEC_PATH
from mock_server import Config, create_app
from mock_server import docs as docs_module

LOCAL_REF = re.compile(r'(?:src|href)="([^"]+)"')


def test_docs_page_loads_only_local_assets(client):
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    refs = LOCAL_REF.findall(page)
    assert refs and all(ref.startswith("/docs/") for ref in refs), refs
    assert "http://" not in page and "https://" not in page
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert asset.mimetype in ("text/css", "text/javascript", "image/png"), (ref, asset.mimetype)


def test_docs_with_a_trailing_slash_and_head(client):
    assert client.get("/docs/").status_code == 200
    head = client.head("/docs/static/swagger-ui-bundle.js")
    assert head.status_code == 200 and head.get_data() == b"" and int(head.headers["Content-Length"]) > 100_000


def test_init_script_points_swagger_ui_at_the_mocks_spec_and_no_online_validator(client):
    script = client.get("/docs/init.js").get_data(as_text=True)
    assert 'url: "/openapi.json"' in script
    assert "validatorUrl: null" in script


def test_openapi_yaml_is_the_spec_file_byte_for_byte(client):
    response = client.get("/openapi.yaml")
    assert response.status_code == 200 and response.mimetype == "application/yaml"
    assert response.get_data() == SPEC_PATH.read_bytes()


def test_openapi_json_is_the_spec_with_this_mock_first_in_servers(client):
    served = client.get("/openapi.json", base_url="http://127.0.0.1:9123").get_json()
    spec = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    assert served["servers"][0]["url"] == "http://127.0.0.1:9123"
    assert served["servers"][1:] == spec["servers"]
    assert {k: v for k, v in served.items() if k != "servers"} == {k: v for k, v in spec.items() if k != "servers"}
    again = client.get("/openapi.json", base_url="http://127.0.0.1:8080").get_json()
    assert [s["url"] for s in again["servers"]] == ["http://127.0.0.1:8080"], "no duplicate server"


def test_docs_under_a_path_prefix(client):
    page = client.get("/docs", base_url="http://localhost/mock/").get_data(as_text=True)
    assert 'src="/mock/docs/static/swagger-ui-bundle.js"' in page
    script = client.get("/docs/init.js", base_url="http://localhost/mock/").get_data(as_text=True)
    assert 'url: "/mock/openapi.json"' in script


def test_static_assets_are_cacheable_and_revalidate(client):
    first = client.get("/docs/static/swagger-ui.css")
    assert "max-age" in first.headers["Cache-Control"] and first.headers.get("ETag")
    again = client.get("/docs/static/swagger-ui.css", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("path", ["/docs/static/swagger-editor-bundle.js", "/docs/static/../core.py", "/docs/nope"])
def test_other_paths_under_docs_are_the_mocks_404(client, path):
    response = client.get(path)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == 0


def test_other_methods_get_ocps_405(client):
    response = client.post("/docs")
    assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"
    body = response.get_json()
    assert body["status"] == 405 and body["successful"] is False and body["error"]["code"] == 0


def test_without_swagger_ui_the_page_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(docs_module, "static_dir", lambda: None)
    client = create_app(Config(db_path=str(tmp_path / "w.sqlite3"))).test_client()
    response = client.get("/docs")
    assert response.status_code == 503 and "swagger-ui-py" in response.get_json()["error"]["message"]
    assert client.get("/openapi.yaml").status_code == 200


def test_swagger_ui_is_version_5_or_newer():
    """Swagger UI reads OpenAPI 3.1 from version 5 on (swagger-ui-bundle's 4.x cannot render this spec)."""
    bundle = (docs_module.static_dir() / "swagger-ui-bundle.js").read_text(encoding="utf-8", errors="replace")
    versions = {tuple(map(int, v.split("."))) for v in re.findall(r'"(5\.\d+\.\d+)"', bundle)}
    assert versions and max(versions) >= (5, 0, 0)
