#!/bin/sh
# The stand-in for anything-llm's docker-entrypoint.sh, in busybox sh.
#
# Like the real app it migrates its storage forward before it serves (prisma migrate
# deploy), refuses storage that a newer version migrated (forward-only migrations: a
# rollback without a data restore must fail loudly), writes SIG_KEY into its runtime .env
# when missing, keeps a live "database" file growing, and serves /api/ping and
# /api/utils/metrics on 127.0.0.1:$SERVER_PORT.
#
# Baked into each image: STANDIN_VERSION (schema version, an integer), STANDIN_APP_VERSION
# (what /api/utils/metrics reports), STANDIN_VARIANT (good | slow | never-healthy | crash)
# and BOOT_DELAY (seconds, overridable at run time). At run time only: STOP_DELAY (seconds
# a stop signal takes to finish, as a draining app's does; once done, a line goes to
# $storage/shutdown.log, so a container killed before it finished leaves none),
# STOP_WRITE_MB (MiB a stop writes to $storage/checkpoint.bin before exiting, as a database
# checkpoints at shutdown), and IGNORE_SIGTERM=1 (PID 1 installs no TERM handler, as
# anything-llm's bash entrypoint: `docker stop` then waits out the grace period and kills
# it; with `init: true` Docker's init is PID 1 and passes SIGTERM on, and this shell, no
# longer PID 1, dies of it). A stop signal that is ignored, or that starts a STOP_DELAY or
# a checkpoint, adds a line to $storage/stop-signals.log first, which a test can watch
# from the host.
#
# /cgi-bin/echo answers any method with "<appVersion> <body length> <sha256 of the body>":
# what a client behind the proxy checks to know who answered, and that a body held during
# a switch arrived whole.

port="${SERVER_PORT:-3001}"
storage="${STORAGE_DIR:-/app/server/storage}"
version="${STANDIN_VERSION:?}"
app="${STANDIN_APP_VERSION:?}"
variant="${STANDIN_VARIANT:-good}"
envfile=/app/server/.env
db="$storage/anythingllm.db"

log() { echo "[anythingllm-standin $app] $*"; }

# PID 1 gets no default signal handling: without this trap `docker stop` would wait out
# its timeout and SIGKILL us. `wait` returns as soon as a trapped signal arrives.
children=""
stop() {
    log "received a stop signal, shutting down"
    if [ "${STOP_DELAY:-0}" != 0 ] || [ "${STOP_WRITE_MB:-0}" != 0 ]; then
        echo "$app stopping" >> "$storage/stop-signals.log"
    fi
    if [ "${STOP_WRITE_MB:-0}" != 0 ]; then
        dd if=/dev/zero of="$storage/checkpoint.bin" bs=1048576 count="$STOP_WRITE_MB" 2>/dev/null
    fi
    if [ "${STOP_DELAY:-0}" != 0 ]; then
        sleep "$STOP_DELAY"
        echo "$app shut down cleanly after ${STOP_DELAY}s" >> "$storage/shutdown.log"
    fi
    [ -n "$children" ] && kill $children 2>/dev/null
    exit 0
}
ignore() {
    log "received a stop signal, ignoring it"
    echo "$app ignored a stop signal" >> "$storage/stop-signals.log"
}
if [ "${IGNORE_SIGTERM:-0}" = 1 ]; then
    # The kernel drops a TERM that PID 1 does not handle; the trap only notes it. Not PID 1
    # (under `init: true`), the shell keeps TERM's default and dies of it.
    if [ "$$" = 1 ]; then
        trap ignore TERM
    fi
    trap stop INT
else
    trap stop TERM INT
fi

# --- "prisma migrate deploy" ------------------------------------------------------------
mkdir -p "$storage/documents" "$storage/lancedb" "$storage/vector-cache" || exit 1
current=0
if [ -s "$storage/schema_version" ]; then
    current="$(cat "$storage/schema_version")"
fi
if [ "$current" -gt "$version" ]; then
    log "storage was migrated by a newer version (schema $current; this image knows $version)" >&2
    exit 3
fi
if [ "$current" -lt "$version" ]; then
    log "migrating storage from schema $current to $version"
fi
echo "$version" > "$storage/schema_version"
echo "migrated $current -> $version by $app" >> "$db"

# --- the runtime .env (anything-llm's EncryptionManager) --------------------------------
if [ -d "$envfile" ]; then
    # Docker made a directory because the bind-mounted file did not exist on the host.
    log "WARNING: $envfile is a directory; settings and SIG_KEY will not persist" >&2
elif ! grep -q '^SIG_KEY=' "$envfile" 2>/dev/null; then
    if [ -s "$envfile" ] && [ -n "$(tail -c 1 "$envfile")" ]; then
        echo >> "$envfile"
    fi
    # Appending (not replacing) keeps the inode: the file is usually a bind mount.
    echo "SIG_KEY='$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')'" >> "$envfile"
    log "self-assigned SIG_KEY in $envfile"
fi

# --- a live database: writes keep coming while the app runs -----------------------------
(
    trap 'exit 0' TERM
    i=0
    while :; do
        i=$((i + 1))
        echo "$app write $i" >> "$db"
        usleep 200000
    done
) &
children="$children $!"

# --- boot --------------------------------------------------------------------------------
if [ "$variant" = crash ]; then
    sleep 0.5 &
    children="$children $!"
    wait $!
    log "fatal: crashed while booting" >&2
    exit 1
fi
sleep "${BOOT_DELAY:-0}" &
booting=$!
children="$children $booting"
while kill -0 "$booting" 2>/dev/null; do wait "$booting"; done  # an ignored signal ends a wait

mkdir -p /tmp/www/api/utils /tmp/www/cgi-bin
# The CGI script is written with this image's version in it ($app expands here).
printf '%s\n' '#!/bin/sh' \
    'sum=$(head -c "${CONTENT_LENGTH:-0}" | sha256sum | cut -d" " -f1)' \
    'printf "Content-Type: text/plain\r\n\r\n"' \
    "echo \"$app \${CONTENT_LENGTH:-0} \$sum\"" > /tmp/www/cgi-bin/echo
chmod 755 /tmp/www/cgi-bin/echo
echo "{\"online\":true,\"appVersion\":\"$app\",\"schemaVersion\":$version}" \
    > /tmp/www/api/utils/metrics
if [ "$variant" != never-healthy ]; then
    echo '{"online":true}' > /tmp/www/api/ping
fi
# busybox httpd per connection behind a listener with a real backlog (acceptor.c).
acceptor "$port" /bin/busybox httpd -i -h /tmp/www &
httpd_pid=$!
children="$children $httpd_pid"
log "Primary server in HTTP mode listening on port $port"
while :; do
    wait $httpd_pid
    status=$?
    kill -0 $httpd_pid 2>/dev/null || break  # still serving: the wait ended for a signal
done
log "httpd exited with $status (port $port taken?)" >&2
exit "$status"
