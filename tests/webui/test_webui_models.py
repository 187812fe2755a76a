"""The Models page: runs with metrics and reports, the champion marked, promotion by a logged-in admin."""

from __future__ import annotations

import re

import pytest

from t2sql.registry import Registry
from webui import create_app
from webui.testing import app_settings


def login(client):
    r = client.post("/auth/login", data={"username": "admin", "password": "s3cret"})
    assert r.status_code == 302


def test_runs_are_listed_with_metrics_and_the_champion(client):
    page = client.get("/models").get_data(as_text=True)
    rows = re.findall(r"<tr class=\"(champion)?\">(.*?)</tr>", page, re.S)
    marked = {re.search(r"run-[ab]", body).group(0): bool(champ) for champ, body in rows}
    assert marked == {"run-a": True, "run-b": False}
    run_a = next(body for _, body in rows if "run-a" in body)
    assert "41.0%" in run_a and "33.0%" in run_a and "52.00" in run_a and ">77<" in run_a and ">120<" in run_a
    assert "champion-badge" in run_a
    assert "Promote</button>" not in page and "log in" in page


def test_run_detail_embeds_the_report(client):
    page = client.get("/models/run-a").get_data(as_text=True)
    assert '<iframe class="report" src="/models/run-a/files/report.html"' in page
    assert "plots/accuracy.svg" in page
    report = client.get("/models/run-a/files/report.html")
    assert report.status_code == 200 and b"Evaluation report: run-a" in report.data
    assert "script-src 'none'" in report.headers["Content-Security-Policy"]
    plot = client.get("/models/run-a/files/plots/accuracy.svg")
    assert plot.status_code == 200 and plot.data.startswith(b"<svg")


@pytest.mark.parametrize("path", [
    "/models/run-a/files/model/config.json", "/models/run-a/files/../index.json", "/models/run-a/files/..%2Findex.json",
    "/models/nope", "/models/nope/files/report.html", "/models/run-a/files/.lock"])
def test_only_report_files_of_known_runs_are_served(client, path):
    assert client.get(path).status_code == 404


def test_admin_promotes_a_run_and_new_questions_use_it(app, client, tmp_path):
    r = client.post("/api/translate", json={"question": "How many students are there?", "database": "student_1"})
    assert r.json["model"] == "run-a"
    login(client)
    page = client.get("/models").get_data(as_text=True)
    assert page.count("Promote</button>") == 1  # every run but the champion
    r = client.post("/models/run-b/promote", data={"reason": ""})
    assert Registry(tmp_path / "runs").champion() == "run-a"  # a reason is required
    r = client.post("/models/run-b/promote", data={"reason": "better execution accuracy"})
    assert r.status_code == 302
    reg = Registry(tmp_path / "runs")
    assert reg.champion() == "run-b"
    last = reg.decisions()[-1]
    assert last["run_id"] == "run-b" and last["by"] == "admin:admin" and last["reason"] == "better execution accuracy"
    r = client.post("/api/translate", json={"question": "How many students are there?", "database": "student_1"})
    assert r.json["model"] == "run-b" and r.json["cached"] is False  # picked up without a restart
    assert "better execution accuracy" in client.get("/models").get_data(as_text=True)
    assert client.post("/models/nope/promote", data={"reason": "x"}).status_code == 404


def test_empty_registry_says_how_to_fill_it(tmp_path):
    client = create_app(app_settings(tmp_path)).test_client()
    page = client.get("/models").get_data(as_text=True)
    assert "No runs are registered yet" in page
