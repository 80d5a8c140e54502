"""`make run`: a real Redis (the configured one if it answers, else one started here), the demo
users loaded into it, and the service on http://127.0.0.1:8000. Ctrl-C stops what this started
and nothing else."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from app.config import Settings
from app.store.bootstrap import load_into_redis
from app.tools.local_redis import LocalRedis, answers

DEMO = Path("model_artifacts/demo")
HOST, PORT = "127.0.0.1", int(os.environ.get("SOCIALREC_PORT", "8000"))


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("SOCIALREC_ARTIFACTS", str(DEMO))
    url = os.environ.get("SOCIALREC_REDIS_URL", "redis://127.0.0.1:6379/0")
    server = None
    if not answers(url):
        server = LocalRedis(Path(".run/redis")).start()
        print(f"started redis-server at {server.url} (data in .run/redis)", flush=True)
        url = server.url
    os.environ["SOCIALREC_REDIS_URL"] = url
    try:
        settings = Settings()
        users = load_into_redis(settings.artifacts, settings.artifacts / "data", url, settings)
        print(f"loaded {users} demo users into {url}", flush=True)
        print(f"\n  socialrec on http://{HOST}:{PORT}  —  API docs: http://{HOST}:{PORT}/docs\n"
              f"  try: curl 'http://{HOST}:{PORT}/recommend/u0001?k=5&explain=true'\n",
              flush=True)
        import uvicorn

        uvicorn.run("app.main:create_app", factory=True, host=HOST, port=PORT,
                    log_level="info", access_log=False)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()
            print("stopped the redis-server this run started", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
