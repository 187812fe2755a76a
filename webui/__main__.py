"""Serve the web GUI under waitress.

    python -m webui --host 127.0.0.1 --port 8000 --registry runs --threads 8
"""

from __future__ import annotations

import argparse
import logging

from webui import default_registry_root, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m webui", description="Serve the t2sql web GUI (waitress).")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--registry", default=default_registry_root(), help="model registry directory")
    parser.add_argument("--threads", type=int, default=8, help="waitress worker threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.host, args.port, args.registry, threads=args.threads)


if __name__ == "__main__":
    main()
