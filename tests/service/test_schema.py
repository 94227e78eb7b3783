"""A bounded schemathesis run over the served OpenAPI document: no input yields a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.helpers import lorif_serve

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.skipif(
    not SCHEMATHESIS.exists() and shutil.which("schemathesis") is None,
    reason="schemathesis not installed",
)
def test_schemathesis_finds_no_server_error(small_index, tmp_path):
    with lorif_serve(small_index, env={"LORIF_MAX_PROMPT_TOKENS": "64"}) as (url, _):
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "40",
                "--seed",
                "1",
                "--generation-deterministic",
                "--workers",
                "1",
                "--report",
                "junit",
                "--report-junit-path",
                str(tmp_path / "junit.xml"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    # the run really exercised the API: every operation was generated, called and passed
    report = ElementTree.parse(tmp_path / "junit.xml").getroot()
    cases = {c.get("name"): c for c in report.iter("testcase")}
    for op in (
        "POST /v1/attributions",
        "GET /v1/examples/{example_id}",
        "GET /v1/index",
        "GET /health/ready",
        "GET /metrics",
    ):
        assert op in cases and len(cases[op]) == 0, (op, out[-4000:])
    assert report.get("failures") == "0" and report.get("errors") == "0"
    generated = re.search(r"(\d+) generated", out)
    assert generated and int(generated.group(1)) >= 100, out[-2000:]
