"""The Pipelines page: clear messages without a Prefect server, admin-only starts, run states."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from webui import create_app
from webui.pipelines import PipelineError, PipelineStatus, PrefectPipelines, parse_overrides
from webui.testing import SPIDER_SAMPLE, app_settings

CONFIG = f"""name: gui-test
data:
  sources:
    - kind: spider
      path: {SPIDER_SAMPLE}
"""


class RecordingPipelines:
    """A pipelines service that keeps runs in memory (the Prefect-backed one is tested against a real server)."""

    deployment = "t2sql-pipeline/on-demand"

    def __init__(self):
        self.runs: dict[str, dict] = {}

    def status(self):
        return PipelineStatus(True, "Prefect server at http://prefect.test/api is up.", "http://prefect.test/api",
                              "http://prefect.test")

    def start(self, parameters):
        if parameters.get("overrides") == ["train.epochs=99"]:
            raise PipelineError("the deployment refused the parameters: epochs")
        run_id = str(uuid.uuid4())
        self.runs[run_id] = {"id": run_id, "name": "brave-otter", "state_type": "SCHEDULED", "state_name": "Scheduled",
                             "message": "", "created": dt.datetime(2025, 1, 1, 12, 0), "start_time": None,
                             "end_time": None, "expected_start_time": dt.datetime(2025, 1, 1, 12, 0),
                             "parameters": parameters, "url": f"http://prefect.test/runs/flow-run/{run_id}"}
        return run_id

    def run(self, run_id):
        if run_id not in self.runs:
            raise PipelineError(f"not found on the Prefect server: flow run {run_id}")
        return self.runs[run_id]

    def recent(self, limit=10):
        return list(self.runs.values())[:limit]


@pytest.fixture
def configs(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "quick.yaml").write_text(CONFIG)
    return folder


@pytest.fixture
def recording():
    return RecordingPipelines()


@pytest.fixture
def client(tmp_path, configs, recording):
    app = create_app(app_settings(tmp_path, PIPELINE_CONFIG_DIR=str(configs),
                                  PIPELINE_SERVICE_FACTORY=lambda cfg: recording))
    return app.test_client()


def login(client):
    assert client.post("/auth/login", data={"username": "admin", "password": "s3cret"}).status_code == 302


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_a_server_the_page_says_how_to_start_one(tmp_path):
    client = create_app(app_settings(tmp_path, PREFECT_API_URL=None)).test_client()
    r = client.get("/pipelines")
    assert r.status_code == 200
    assert "No Prefect server is configured" in r.get_data(as_text=True)
    assert "prefect server start" in r.get_data(as_text=True)


def test_unreachable_server_is_a_message_not_an_error(tmp_path, configs):
    url = f"http://127.0.0.1:{free_port()}/api"
    client = create_app(app_settings(tmp_path, PREFECT_API_URL=url, PIPELINE_CONFIG_DIR=str(configs))).test_client()
    page = client.get("/pipelines")
    assert page.status_code == 200 and f"The Prefect server at {url} is not reachable" in page.get_data(as_text=True)
    assert f'href="{url[:-4]}"' in page.get_data(as_text=True)  # link to the Prefect UI
    login(client)
    r = client.post("/pipelines/start", data={"config_path": str(configs / "quick.yaml"), "overrides": ""},
                    follow_redirects=True)
    assert "Not started" in r.get_data(as_text=True) and "not reachable" in r.get_data(as_text=True)
    run = client.get(f"/pipelines/runs/{uuid.uuid4()}")
    assert run.status_code == 200 and "not reachable" in run.get_data(as_text=True)


def test_starting_needs_an_admin(client, recording):
    page = client.get("/pipelines").get_data(as_text=True)
    assert "Starting a pipeline is an admin action" in page
    r = client.post("/pipelines/start", data={"config_path": "configs/quick.yaml"})
    assert r.status_code == 302 and "/auth/login" in r.headers["Location"]
    assert recording.runs == {}


def test_admin_starts_a_run_and_follows_it(client, recording, configs):
    login(client)
    page = client.get("/pipelines").get_data(as_text=True)
    assert f"<option>{configs / 'quick.yaml'}</option>" in page
    r = client.post("/pipelines/start", data={"config_path": str(configs / "quick.yaml"),
                                              "overrides": "train.epochs=2\n\n# a comment\ntrain.learning_rate=5e-4"})
    assert r.status_code == 302
    run_id = r.headers["Location"].rsplit("/", 1)[1]
    assert recording.runs[run_id]["parameters"] == {"config_path": str(configs / "quick.yaml"),
                                                    "overrides": ["train.epochs=2", "train.learning_rate=5e-4"]}
    run_page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert 'id="run-state">Scheduled<' in run_page and 'http-equiv="refresh"' in run_page
    assert f"http://prefect.test/runs/flow-run/{run_id}" in run_page
    recording.runs[run_id].update(state_type="COMPLETED", state_name="Completed")
    run_page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Completed" in run_page and 'http-equiv="refresh"' not in run_page
    assert "brave-otter" in client.get("/pipelines").get_data(as_text=True)


@pytest.mark.parametrize("overrides, message", [
    ("train.epochs", "expected KEY=VALUE"),
    ("train.nonsense=3", "unknown key"),
    ("train.epochs=-1", "train.epochs"),
    ("train.epochs=99", "refused the parameters"),
])
def test_bad_parameters_are_refused_before_or_by_the_server(client, configs, overrides, message):
    login(client)
    r = client.post("/pipelines/start", data={"config_path": str(configs / "quick.yaml"), "overrides": overrides},
                    follow_redirects=True)
    assert "Not started" in r.get_data(as_text=True) and message in r.get_data(as_text=True)


def test_only_listed_configs_can_be_started(client, recording):
    login(client)
    r = client.post("/pipelines/start", data={"config_path": "/etc/passwd"}, follow_redirects=True)
    assert "Choose one of the listed configs" in r.get_data(as_text=True) and recording.runs == {}


def test_unknown_run_ids(client):
    assert client.get("/pipelines/runs/not-a-uuid").status_code == 404
    page = client.get(f"/pipelines/runs/{uuid.uuid4()}").get_data(as_text=True)
    assert "not found on the Prefect server" in page


def test_parse_overrides():
    assert parse_overrides(" a.b=1 \n\n# c\nx.y=[1, 2]") == ["a.b=1", "x.y=[1, 2]"]
    with pytest.raises(ValueError, match="line 2"):
        parse_overrides("a=1\n=2")


@pytest.mark.slow
def test_against_a_real_prefect_server(tmp_path):
    """Start ``prefect server``, create the deployment, start a run from the page and read its state."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = env["PREFECT_API_URL"]
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        script = (
            "from prefect import flow\n"
            "@flow(name='t2sql-pipeline')\n"
            "def pipeline(config_path: str, overrides: list[str] | None = None):\n"
            "    return config_path\n"
            "from prefect.client.orchestration import get_client\n"
            "with get_client(sync_client=True) as c:\n"
            "    fid = c.create_flow(pipeline)\n"
            "    c.create_deployment(flow_id=fid, name='on-demand')\n"
        )
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
        configs = tmp_path / "configs"
        configs.mkdir()
        (configs / "quick.yaml").write_text(CONFIG)
        app = create_app(app_settings(tmp_path, PREFECT_API_URL=url, PIPELINE_CONFIG_DIR=str(configs)))
        client = app.test_client()
        login(client)
        assert "is up" in client.get("/pipelines").get_data(as_text=True)
        r = client.post("/pipelines/start", data={"config_path": str(configs / "quick.yaml"),
                                                  "overrides": "train.epochs=1"})
        assert r.status_code == 302 and "/pipelines/runs/" in r.headers["Location"], r.headers["Location"]
        page = client.get(r.headers["Location"]).get_data(as_text=True)
        assert 'id="run-state">Scheduled<' in page
        service = PrefectPipelines(url, "t2sql-pipeline/on-demand")
        runs = service.recent()
        assert len(runs) == 1 and runs[0]["parameters"]["overrides"] == ["train.epochs=1"]
        assert Path(runs[0]["parameters"]["config_path"]).name == "quick.yaml"
    finally:
        server.terminate()
        server.wait(timeout=30)
