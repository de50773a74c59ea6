#!/usr/bin/env bash
# Make sure a Docker engine answers: use a running one, or (as root) install Debian's docker.io and
# debootstrap when missing and start dockerd in the background. Exit 0 when `docker info` answers;
# otherwise print why on stderr and exit 1. Prints the PID of a dockerd it started on stdout.
set -uo pipefail

if docker info >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "docker-engine: no engine answers and not root, so none can be started here" >&2
    exit 1
fi
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    echo "docker-engine: installing Debian's docker.io and debootstrap" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null; }; then
        echo "docker-engine: apt-get could not install docker.io/debootstrap" >&2
        exit 1
    fi
fi
dockerd > /tmp/portfolio-mlops-dockerd.log 2>&1 &
pid=$!
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        echo "$pid"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
    sleep 0.5
done
echo "docker-engine: dockerd did not come up; last lines of its log:" >&2
tail -5 /tmp/portfolio-mlops-dockerd.log >&2
kill "$pid" 2>/dev/null
exit 1
