"""`make run`: a real Redis (the configured one if it answers, else one started here), the demo
users loaded into it, and the service on http://127.0.0.1:8000 (`SOCIALREC_PORT` to change
it). Ctrl-C stops what this started and nothing else.

A Redis started here keeps its data in `.run/redis` with the append-only file on, so what was
posted to the demo survives a restart of `make run` (`make clean` starts over); the demo
users themselves are loaded again at every start."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from app.cli import ordinary_error
from app.config import Settings
from app.offline.load import load_into_redis
from app.tools.local_redis import LocalRedis, answers

DEMO = Path("model_artifacts/demo")
REDIS_DIR = Path(".run/redis")
HOST = "127.0.0.1"


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("SOCIALREC_ARTIFACTS", str(DEMO))
    port = os.environ.get("SOCIALREC_PORT", "8000")
    if not port.isdigit() or not 0 < int(port) < 65536:
        print(f"error: SOCIALREC_PORT: {port!r} is not a TCP port number", file=sys.stderr)
        return 2
    url = os.environ.get("SOCIALREC_REDIS_URL", "redis://127.0.0.1:6379/0")
    server = None
    try:
        if not answers(url):
            server = LocalRedis(REDIS_DIR, appendonly=True).start()
            print(f"started redis-server at {server.url} (data in {REDIS_DIR})", flush=True)
            url = server.url
        os.environ["SOCIALREC_REDIS_URL"] = url
        settings = Settings()
        users = load_into_redis(settings.artifacts, settings.artifacts / "data", url, settings)
        print(f"loaded {users} demo users into {url}", flush=True)
        print(f"\n  socialrec on http://{HOST}:{port}  —  API docs: http://{HOST}:{port}/docs\n"
              f"  try: curl 'http://{HOST}:{port}/recommend/u0001?k=5&explain=true'\n",
              flush=True)
        import uvicorn

        uvicorn.run("app.main:create_app", factory=True, host=HOST, port=int(port),
                    log_level="info", access_log=False)
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        message = ordinary_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
            print("stopped the redis-server this run started", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
