#!/usr/bin/env bash
# What the tests need from the system, installed once (idempotent, quiet when done).
#
# Debian 12 / Ubuntu packages: redis-server, docker-registry (CNCF Distribution),
# busybox-static (the stand-in image), git, openssl, postgresql, caddy (the front proxy),
# restic (off-host backups) with openssh-server and openssh-client (its SFTP backend),
# chromium and chromium-driver (the dashboard's browser tests, driven by Selenium), gcc
# and libc6-dev (the stand-in's static listener, tests/harness/standin_files/acceptor.c),
# debootstrap (the Debian base rollhook's own image is built on in tests/test_image.py, where
# no image can be pulled), systemd (only its systemd-analyze, for tests/test_hosts_tls.py to
# verify deploy/hosts/rollhook-worker.service; nothing starts systemd), wrk and webhook
# (adnanh's; the ingress benchmark's load generator and peer, `make bench-ingress`); and
# Debian's docker.io, but ONLY when no dockerd is installed: an existing Docker is never
# replaced. The tests start their own private copies of these servers on 127.0.0.1 and stop
# them again, so the packages' system services (a system Caddy on port 80 included) are
# kept from starting during the install.
set -euo pipefail

packages=(redis-server docker-registry busybox-static git openssl postgresql caddy
    restic openssh-server openssh-client chromium chromium-driver gcc libc6-dev debootstrap
    systemd wrk webhook)

# Daemons live in sbin, which is not on a non-root PATH on Debian.
found() {
    command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]
}

have_dockerd() { found dockerd; }

if ! have_dockerd; then
    packages+=(docker.io)
    # On kernels with AppArmor on (Ubuntu), dockerd needs apparmor_parser to start
    # any container; Debian lists it only as a recommendation.
    if [[ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" == Y ]]; then
        packages+=(apparmor)
    fi
fi

installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

missing=()
for pkg in "${packages[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null; then
        echo "install-test-deps: no apt-get; install these yourself: ${missing[*]}" >&2
        exit 1
    fi
    sudo=()
    if [[ $EUID -ne 0 ]]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "install-test-deps: run as root (or with sudo) to install: ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "install-test-deps: installing ${missing[*]}"
    log=$(mktemp)
    created_policy=0
    cleanup() {
        rm -f "$log"
        if ((created_policy)); then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; fi
    }
    trap cleanup EXIT
    # Keep the packages' services (a system redis, postgres, dockerd) from starting:
    # the tests run their own. Only a policy created here is removed afterwards.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
        # A fresh machine may have stale or no package lists.
        "${apt[@]}" update >>"$log" 2>&1 || true
        if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
            tail -n 40 "$log" >&2
            echo "install-test-deps: installing ${missing[*]} failed (log above)" >&2
            exit 1
        fi
    fi
fi

# What the harness runs, checked here so that a broken machine fails before the tests.
for cmd in redis-server docker-registry git openssl caddy containerd runc runuser restic sshd \
    ssh ssh-keygen debootstrap systemd-analyze; do
    found "$cmd" || {
        echo "install-test-deps: '$cmd' is still missing" >&2
        exit 1
    }
done
have_dockerd || { echo "install-test-deps: no dockerd after install" >&2; exit 1; }
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "install-test-deps: no PostgreSQL server (initdb) after install" >&2
    exit 1
fi
