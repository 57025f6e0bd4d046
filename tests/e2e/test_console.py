"""The operator console as the server sends it: a page that needs no key to
load (only its calls to /v1/ do), shipped with the package, with headers that
forbid inline script, framing and sniffing."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import Api

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def test_the_console_loads_without_a_key_with_a_strict_content_security_policy(
    api: Api,
) -> None:
    page = api.get("/console", role=None)

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    # Nothing inline for the policy to refuse: scripts and styles are files of its own.
    assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None
    assert "<style" not in page.text and " style=" not in page.text
    assert re.search(r"\son[a-z]+=", page.text) is None


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("console.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("dom.js", "text/javascript; charset=utf-8"),
        ("chart.js", "text/javascript; charset=utf-8"),
        ("user.js", "text/javascript; charset=utf-8"),
        ("ledger.js", "text/javascript; charset=utf-8"),
        ("console.css", "text/css; charset=utf-8"),
    ],
)
def test_each_file_the_page_loads_is_served_with_the_same_headers(
    api: Api, name: str, media_type: str
) -> None:
    served = api.get(f"/console/static/{name}", role=None)

    assert served.status_code == 200
    assert served.headers["content-type"] == media_type
    assert served.headers["content-security-policy"] == CSP
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.content


def test_the_scripts_never_write_markup_nor_evaluate_strings(api: Api) -> None:
    for name in ("console.js", "api.js", "dom.js", "chart.js", "user.js", "ledger.js"):
        script = api.get(f"/console/static/{name}", role=None).text
        for forbidden in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ):
            assert forbidden not in script, f"{name} uses {forbidden}"


@pytest.mark.parametrize(
    "name", ["router.py", "..%2Frouter.py", "missing.js", ".hidden.css", "index"]
)
def test_nothing_but_the_consoles_own_files_is_served(api: Api, name: str) -> None:
    refused = api.get(f"/console/static/{name}", role=None)

    api.problem(refused, 404)


def test_the_console_is_not_part_of_the_api_document(api: Api) -> None:
    paths = api.json(api.get("/openapi.json", role=None))["paths"]

    assert not [path for path in paths if path.startswith("/console")]
