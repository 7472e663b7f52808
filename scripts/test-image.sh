#!/usr/bin/env bash
# Build rollhook's image and deploy through it: tests/test_image.py alone (`make test`
# runs it too). No image is pulled: the base is Debian bookworm made by debootstrap from
# the mirror apt uses here, cached in .test-run/cache/. The private engine of the tests
# builds and runs it, never the host's Docker. Needs root, debootstrap (installed by
# scripts/install-test-deps.sh), and the Debian and PyPI mirrors.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/install-test-deps.sh
uv=$(command -v uv || echo .tools/bin/uv)
exec "$uv" run --frozen pytest tests/test_image.py -s "$@"
