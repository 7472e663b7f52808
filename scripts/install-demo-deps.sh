#!/usr/bin/env bash
# What `make demo` needs from the system, installed only where missing (Debian/Ubuntu):
# a registry (docker-registry: rollhook pulls by digest, so the demo app's images live in
# a local registry), busybox (the demo app is made of it), git, curl and openssl (the
# signed push it prints). A Docker engine is not installed here: `rollhook demo` says
# when none answers.
set -euo pipefail
found() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /usr/bin/$1 ]]; }
missing=()
found docker-registry || missing+=(docker-registry)
found busybox || missing+=(busybox-static)
for cmd in git curl openssl; do found "$cmd" || missing+=("$cmd"); done
((${#missing[@]})) || exit 0
sudo=()
if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "install-demo-deps: install these (as root): ${missing[*]}" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null; then
    echo "install-demo-deps: no apt-get; install these yourself: ${missing[*]}" >&2
    exit 1
fi
echo "install-demo-deps: installing ${missing[*]}"
# docker-registry's package starts a system registry on :5000; the demo runs its own.
created_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi
cleanup() { if ((created_policy)); then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q)
"${apt[@]}" install --no-install-recommends "${missing[@]}" >/dev/null \
    || { "${apt[@]}" update >/dev/null && "${apt[@]}" install --no-install-recommends "${missing[@]}"; }
