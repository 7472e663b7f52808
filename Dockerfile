# rollhook in one image: `rollhook up` runs web, worker and beat for one Docker host.
#
# rollhook drives the host's Docker engine, and compose resolves bind mounts on the
# host: mount the data directory at the SAME path inside and outside the container, and
# the engine's volumes directory too (backups and restores read and write them). See
# deploy/rollhook.compose.yml.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# Behind a TLS-intercepting proxy whose CA is in the base image: --build-arg UV_NATIVE_TLS=1
ARG UV_NATIVE_TLS
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir 'uv>=0.5,<1'
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY rollhook ./rollhook
COPY service ./service
COPY workers ./workers
COPY cli ./cli
ENV UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1
RUN /opt/uv/bin/uv sync --frozen --no-dev --extra postgres --no-editable --python python3

FROM ${BASE}
# git syncs the infra repos, restic takes off-host snapshots, caddy is the front proxy that
# `rollhook up` starts when a target has `proxy:` (without it, up stops at start).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates restic \
        caddy \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ROLLHOOK_CONFIG=/etc/rollhook/rollhook.yml \
    ROLLHOOK_DATA_DIR=/var/lib/rollhook
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["rollhook"]
CMD ["up", "--host", "0.0.0.0", "--port", "8000"]
