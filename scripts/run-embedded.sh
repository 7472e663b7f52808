#!/usr/bin/env bash
# `make run` (and `make demo`, which passes `demo`): rollhook on 127.0.0.1:$PORT (8000)
# with the embedded broker and records.
# - The targets file: $ROLLHOOK_CONFIG, else ./rollhook.yml (this checkout's), else the
#   demo's after `make demo`, else deploy/rollhook.example.yml, saying so.
# - First run: generates the webhook and API secrets into $ROLLHOOK_DATA_DIR/secrets/
#   (one file each, mode 0600), hands them over as *_FILE settings, prints them once.
# - Puts `rollhook` on PATH when it may (scripts/install-cli.sh --if-possible).
set -euo pipefail
cd "$(dirname "$0")/.."
command=${1:-up}
export ROLLHOOK_DATA_DIR=${ROLLHOOK_DATA_DIR:-$PWD/data}
export ROLLHOOK_NOTIFY_CONSOLE=${ROLLHOOK_NOTIFY_CONSOLE:-true}  # notifications in the log
port=${PORT:-8000}
secrets_dir=$ROLLHOOK_DATA_DIR/secrets
names=(github_secret gitlab_token registry_token dockerhub_token harbor_token api_token metrics_token)

mkdir -p -m 700 "$ROLLHOOK_DATA_DIR" "$secrets_dir"  # holds the app's data and backups too
chmod 700 "$secrets_dir"
fresh=0
for name in "${names[@]}"; do
    file=$secrets_dir/$name
    if [[ ! -s $file ]]; then
        (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))' >"$file")
        fresh=1
    fi
done

scripts/install-cli.sh --if-possible || true

base=http://127.0.0.1:$port
if [[ $fresh == 1 ]]; then
    cat <<MSG
rollhook: generated secrets in $secrets_dir (shown once; read them there later)

  GitHub / Gitea / Forgejo   $base/hooks/github      secret: $(cat "$secrets_dir/github_secret")
  GitLab                     $base/hooks/gitlab      X-Gitlab-Token: $(cat "$secrets_dir/gitlab_token")
  Registry (Distribution)    $base/hooks/registry    Authorization: Bearer $(cat "$secrets_dir/registry_token")
  Docker Hub                 $base/hooks/dockerhub/$(cat "$secrets_dir/dockerhub_token")
  Harbor                     $base/hooks/harbor      Auth Header: $(cat "$secrets_dir/harbor_token")
  API and CLI                ROLLHOOK_API_TOKEN=$(cat "$secrets_dir/api_token")
  /metrics                   bearer $(cat "$secrets_dir/metrics_token")

MSG
fi
if [[ $command == demo ]]; then
    exec scripts/rollhook demo --port "$port"
fi
if [[ -z ${ROLLHOOK_CONFIG:-} ]]; then
    for candidate in "$PWD/rollhook.yml" "$ROLLHOOK_DATA_DIR/demo/rollhook.yml"; do
        if [[ -f $candidate ]]; then
            export ROLLHOOK_CONFIG=$candidate
            break
        fi
    done
    if [[ -z ${ROLLHOOK_CONFIG:-} ]]; then
        export ROLLHOOK_CONFIG=$PWD/deploy/rollhook.example.yml
        echo "rollhook: no ./rollhook.yml: using $ROLLHOOK_CONFIG, whose repo does not exist." \
            "Write your own (rollhook init adopts what runs here), or try \`make demo\`."
    fi
fi
echo "rollhook: targets file $ROLLHOOK_CONFIG (a saved change is applied while rollhook runs)"
scripts/rollhook check-config
cat <<MSG
rollhook: next, in another terminal: rollhook status (the API token is read from
$secrets_dir/api_token); the README's "Quick start" goes on from here. Ctrl-C stops.
MSG
exec scripts/rollhook up --host 127.0.0.1 --port "$port"
