#!/usr/bin/env bash
# Build rollhook's image and check that it serves. No image can be pulled on machines
# without a registry mirror, so the base is made locally: Debian bookworm (Python 3.11)
# by debootstrap, trusting the host's CA bundle (for TLS-intercepting proxies).
# Needs root, debootstrap, a Docker engine (DOCKER_HOST) and the Debian and PyPI mirrors.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/rollhook-image.XXXXXX)
trap 'docker rm -f rollhook-image-test >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,git,openssh-client \
    bookworm "$work/base" http://deb.debian.org/debian >/dev/null
cp /etc/ssl/certs/ca-certificates.crt "$work/base/etc/ssl/certs/ca-certificates.crt"
tar -C "$work/base" -c . | docker import - rollhook-base:bookworm >/dev/null
docker build -q --network host --build-arg BASE=rollhook-base:bookworm \
    --build-arg UV_NATIVE_TLS=1 -t rollhook:test . >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/data"
docker run -d --name rollhook-image-test --network host \
    -v "$work/data:$work/data" -e ROLLHOOK_DATA_DIR="$work/data" \
    -v "$PWD/deploy/rollhook.example.yml:/etc/rollhook/rollhook.yml:ro" \
    rollhook:test up --host 127.0.0.1 --port "$port" >/dev/null
for _ in $(seq 60); do
    if curl -fsS "http://127.0.0.1:$port/readyz" 2>/dev/null; then
        echo; echo "rollhook:test serves on port $port"; exit 0
    fi
    sleep 1
done
docker logs rollhook-image-test
exit 1
