"""Bring the t2sql deployments up on this machine: a Prefect server, the deployments declared in
``prefect.yaml``, and a process worker that runs them.

    python -m deployments.up                                     # UI at http://127.0.0.1:4200
    python -m deployments.up --port 4300 --nightly-cron "30 1 * * *" --timezone Europe/Paris

A server already answering at ``PREFECT_API_URL`` (or at --host/--port) is used as it is; otherwise
``prefect server start`` is started (SQLite under ``PREFECT_HOME``, ~/.prefect by default). Then
the process work pool is created if missing, ``prefect deploy --all`` applies ``prefect.yaml``, and
``prefect worker start`` runs the flows from this checkout. The UI address is printed last.
Ctrl-C (or SIGTERM) stops the worker and the server this command started.

Flow runs store their task results under ``PREFECT_LOCAL_STORAGE_PATH`` (default
``.t2sql/work/prefect-results``, beside the quickstart's work dir), so an unchanged rerun is cached.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = ROOT / "prefect.yaml"
NIGHTLY = "t2sql-nightly/nightly"


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect server answers ``GET {api_url}/health`` with 200."""
    import httpx

    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(path: Path | None, n: int = 30) -> str:
    if path is None or not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def start_server(host: str, port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start ``prefect server start`` in the background, its output in ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_healthy(api_url: str, timeout: float = 240.0, process: subprocess.Popen | None = None,
                 log_path: Path | None = None) -> float:
    """Wait until the server answers its health check.

    Returns:
        Seconds waited.

    Raises:
        RuntimeError: the server process exited, or no answer within ``timeout`` (the message
            ends with the server log).
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if api_healthy(api_url):
            return time.monotonic() - t0
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {process.returncode}:\n{_tail(log_path)}")
        time.sleep(0.5)
    raise RuntimeError(f"no Prefect server answered at {api_url}/health within {timeout:.0f} s:\n{_tail(log_path)}")


def read_prefect_file(path: Path = PREFECT_FILE) -> dict[str, Any]:
    """``prefect.yaml`` as a mapping (anchors resolved)."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not data.get("deployments"):
        raise ValueError(f"{path}: no deployments declared")
    return data


def deployment_names(api_url: str, spec: dict[str, Any]) -> list[str]:
    """``flow-name/deployment-name`` of the deployments of a ``prefect.yaml`` mapping, as the server has them."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        found = {(d.name, d.entrypoint): flows.get(d.flow_id, "") for d in client.read_deployments()}
    names, missing = [], []
    for d in spec["deployments"]:
        flow_name = found.get((d["name"], d["entrypoint"]))
        if flow_name:
            names.append(f"{flow_name}/{d['name']}")
        else:
            missing.append(f"{d['name']} ({d['entrypoint']})")
    if missing:
        raise RuntimeError(f"the server lacks deployments after prefect deploy: {', '.join(missing)}")
    return names


def work_pools(spec: dict[str, Any]) -> list[str]:
    """The work pools the deployments of a ``prefect.yaml`` mapping use."""
    pools = []
    for d in spec["deployments"]:
        name = (d.get("work_pool") or {}).get("name")
        if not name:
            raise ValueError(f"deployment {d.get('name')!r}: work_pool.name is missing")
        if name not in pools:
            pools.append(name)
    return pools


def ensure_work_pool(api_url: str, name: str, pool_type: str = "process") -> bool:
    """Create the work pool ``name`` when the server lacks it.

    Returns:
        True when it was created, False when it existed.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type=pool_type,
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            return False
    return True


def deploy(env: dict[str, str], prefect_file: Path = PREFECT_FILE, timeout: float = 600.0) -> str:
    """Apply ``prefect.yaml`` with ``prefect deploy --all`` from the repository root.

    Returns:
        The command's output.

    Raises:
        RuntimeError: the command failed (its output is in the message).
    """
    cmd = [sys.executable, "-m", "prefect", "deploy", "--all", "--no-prompt", "--prefect-file", str(prefect_file)]
    proc = subprocess.run(cmd, cwd=ROOT, env={**env, "PWD": str(ROOT)}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[2:])}` failed with code {proc.returncode}:\n{out[-4000:]}")
    return out


def set_cron(api_url: str, deployment: str, cron: str, timezone: str = "UTC") -> None:
    """Replace the first schedule of ``deployment`` (``flow/deployment``) by a cron schedule.

    Raises:
        ValueError: the cron expression or time zone is invalid.
        RuntimeError: no such deployment.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect.exceptions import ObjectNotFound

    schedule = CronSchedule(cron=cron, timezone=timezone)
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise RuntimeError(f"no deployment {deployment!r} on {api_url}: is it declared in prefect.yaml?") from None
        existing = client.read_deployment_schedules(dep.id)
        if existing:
            client.update_deployment_schedule(dep.id, existing[0].id, schedule=schedule, active=True)
        else:
            client.create_deployment_schedules(dep.id, [(schedule, True)])


def describe_schedules(api_url: str, deployments: list[str]) -> dict[str, list[str]]:
    """The schedules of each deployment as text (``cron 0 2 * * * UTC``)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    out: dict[str, list[str]] = {}
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for name in deployments:
            dep = client.read_deployment_by_name(name)
            out[name] = [f"cron {s.schedule.cron} {s.schedule.timezone}" if getattr(s.schedule, "cron", None)
                         else str(s.schedule) for s in client.read_deployment_schedules(dep.id) if s.active]
    return out


def start_worker(pool: str, env: dict[str, str], limit: int | None = 1) -> subprocess.Popen:
    """Start ``prefect worker start`` for a process pool; its output goes to this terminal."""
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    if limit:
        cmd += ["--limit", str(limit)]
    return subprocess.Popen(cmd, cwd=ROOT, env={**env, "PWD": str(ROOT)}, stdin=subprocess.DEVNULL)


def child_env(api_url: str) -> dict[str, str]:
    """Environment of the server, ``prefect deploy`` and the worker (and so of every flow run)."""
    env = dict(os.environ)
    env["PREFECT_API_URL"] = api_url
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(ROOT / ".t2sql" / "work" / "prefect-results"))
    env.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def stop(process: subprocess.Popen | None, name: str, timeout: float = 30.0) -> None:
    """Terminate a child process (SIGTERM, then SIGKILL after ``timeout``)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop in {timeout:.0f} s; killing it", flush=True)
        process.kill()
        process.wait()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deployments.up", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address of the server to start (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4200, help="port of the server to start (default 4200)")
    p.add_argument("--prefect-file", type=Path, default=PREFECT_FILE, help="deployments file (default prefect.yaml)")
    p.add_argument("--nightly-cron", default=os.environ.get("T2SQL_NIGHTLY_CRON"),
                   help="cron of the nightly retraining, e.g. '30 1 * * *' (default: prefect.yaml's; "
                        "env T2SQL_NIGHTLY_CRON)")
    p.add_argument("--timezone", default=os.environ.get("T2SQL_NIGHTLY_TIMEZONE", "UTC"),
                   help="time zone of --nightly-cron (default UTC)")
    p.add_argument("--limit", type=int, default=1, help="flow runs the worker runs at once (default 1)")
    p.add_argument("--no-worker", action="store_true",
                   help="apply the deployments (and --nightly-cron) and exit; a server started here is stopped")
    p.add_argument("--log-dir", type=Path, default=ROOT / ".t2sql" / "logs", help="where the server log goes")
    p.add_argument("--server-timeout", type=float, default=240.0, help="seconds to wait for the server")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m deployments.up``; returns the exit code (0 after Ctrl-C)."""
    args = build_parser().parse_args(argv)
    api_url = os.environ.get("PREFECT_API_URL") or f"http://{args.host}:{args.port}/api"
    api_url = api_url.rstrip("/")
    ui_url = api_url[: -len("/api")] if api_url.endswith("/api") else api_url
    env = child_env(api_url)
    os.environ.update({k: env[k] for k in ("PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED")})
    server = None
    workers: list[subprocess.Popen] = []

    def on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both end in the `finally` below; a shell that started this command in the
    # background leaves SIGINT ignored, which the server and worker would inherit.
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        spec = read_prefect_file(args.prefect_file)
        if args.nightly_cron:  # refuse a bad cron before starting anything
            from prefect.client.schemas.schedules import CronSchedule

            CronSchedule(cron=args.nightly_cron, timezone=args.timezone)
        if api_healthy(api_url):
            print(f"using the Prefect server at {api_url}", flush=True)
        else:
            host, port = args.host, args.port
            log_path = args.log_dir / "prefect-server.log"
            print(f"starting the Prefect server on {host}:{port} (log: {log_path})", flush=True)
            server = start_server(host, port, env, log_path)
            waited = wait_healthy(api_url, args.server_timeout, server, log_path)
            print(f"server healthy after {waited:.0f} s", flush=True)
        for pool in work_pools(spec):
            if ensure_work_pool(api_url, pool):
                print(f"created work pool {pool} (process)", flush=True)
        print(f"applying {args.prefect_file.name} (prefect deploy --all)", flush=True)
        deploy(env, args.prefect_file)
        names = deployment_names(api_url, spec)
        if args.nightly_cron:
            set_cron(api_url, NIGHTLY, args.nightly_cron, args.timezone)
        schedules = describe_schedules(api_url, names)
        if not args.no_worker:
            workers = [start_worker(pool, env, args.limit) for pool in work_pools(spec)]
        print("\nt2sql deployments are up.", flush=True)
        for name in names:
            when = "; ".join(schedules.get(name) or []) or "on demand"
            print(f"  {name:38s} {when}")
        if workers:
            print(f"  worker: pool {', '.join(work_pools(spec))}, {args.limit} flow run(s) at a time, from {ROOT}")
        print(f"  start a run: prefect deployment run t2sql-pipeline/on-demand "
              f"--param config_path=configs/quickstart.yaml")
        print(f"Prefect UI: {ui_url}", flush=True)
        if args.no_worker:
            return 0
        print("Ctrl-C stops the worker" + (" and the server." if server is not None else "."), flush=True)
        while True:
            for worker in workers:
                if worker.poll() is not None:
                    print(f"the worker exited with code {worker.returncode}", flush=True)
                    return 1
            if server is not None and server.poll() is not None:
                print(f"the server exited with code {server.returncode}:\n{_tail(args.log_dir / 'prefect-server.log')}",
                      flush=True)
                return 1
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
        return 0
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"deployments.up: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for worker in workers:
            stop(worker, "the worker")
        stop(server, "the server")


if __name__ == "__main__":
    sys.exit(main())
