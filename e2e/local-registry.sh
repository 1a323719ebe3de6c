#!/usr/bin/env bash
# Starts (or stops) a throwaway CNCF distribution registry on 127.0.0.1 for trying imagepush.
#   e2e/local-registry.sh start [PORT]   # default port 5000; storage in a temporary directory
#   e2e/local-registry.sh stop  [PORT]
# Needs /usr/bin/docker-registry (Debian package `docker-registry`).
set -euo pipefail
cmd=${1:-start}
port=${2:-5000}
dir=${TMPDIR:-/tmp}/imagepush-registry-$port

case "$cmd" in
start)
    command -v docker-registry >/dev/null || { echo "docker-registry is not installed (apt-get install docker-registry)" >&2; exit 1; }
    if [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        echo "registry already running on 127.0.0.1:$port (pid $(cat "$dir/pid"))"; exit 0
    fi
    mkdir -p "$dir/storage"
    cat > "$dir/config.yml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $dir/storage}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$port, secret: imagepush-local}
YAML
    nohup docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 50); do
        if curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; then
            echo "registry running on 127.0.0.1:$port (storage $dir/storage, log $dir/registry.log)"; exit 0
        fi
        sleep 0.2
    done
    echo "registry did not start; log:" >&2; cat "$dir/registry.log" >&2; exit 1
    ;;
stop)
    if [[ -f $dir/pid ]]; then kill "$(cat "$dir/pid")" 2>/dev/null || true; rm -rf "$dir"; echo "stopped"; else echo "not running"; fi
    ;;
*) echo "usage: $0 start|stop [PORT]" >&2; exit 2 ;;
esac
