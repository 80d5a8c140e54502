# syntax=docker/dockerfile:1
# Build stage: install the service (base dependencies only; PyTorch stays out) into a venv.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY docker/install-service.sh ./docker/
RUN sh docker/install-service.sh /opt/venv /src

# Final stage: the venv, the demo model, a non-root user. No compilers, no torch.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    SOCIALREC_ARTIFACTS=/srv/model_artifacts/demo \
    SOCIALREC_REDIS_URL=redis://redis:6379/0
RUN useradd --system --uid 10001 --home-dir /srv socialrec
COPY --from=build /opt/venv /opt/venv
COPY --chown=socialrec model_artifacts/demo /srv/model_artifacts/demo
WORKDIR /srv
USER socialrec
EXPOSE 8000
# Mount your own artifacts over /srv/model_artifacts/demo, or point SOCIALREC_ARTIFACTS elsewhere.
VOLUME ["/srv/model_artifacts"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["socialrec", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
