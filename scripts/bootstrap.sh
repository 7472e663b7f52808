#!/usr/bin/env bash
# Python dependencies from the lock file. Installs uv (into .tools/) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=$(command -v uv || true)
if [[ -z "$uv" ]]; then
    uv=.tools/bin/uv
    if [[ ! -x "$uv" ]]; then
        if ! python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            fi
        fi
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || { echo "rollhook needs Python 3.11 or newer (python3 is $(python3 -V))" >&2; exit 1; }
        python3 -m venv .tools
        .tools/bin/pip install -q 'uv>=0.5,<1'
    fi
fi
"$uv" sync --frozen --quiet
