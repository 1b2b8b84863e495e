#!/usr/bin/env bash
# Installs everything imaging-agent needs on a fresh Debian machine, once:
# Debian packages (Orthanc + DICOMweb plugin, dicom3tools, dcmtk, chromium; PostgreSQL 15 and Redis
# for `services up --scale` and the state tests),
# the project's virtual environment (.venv), the FHIR server's own (.venv-fhir) and the
# test suite's OpenID provider (tests/oidc/node_modules, pinned by its package-lock.json).
# A second run finds each step done (stamp files keyed by the inputs) and returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
DEBIAN_PACKAGES=(orthanc orthanc-dicomweb dicom3tools dcmtk chromium postgresql redis-server)
FHIR_SERVER_REQUIREMENT="sekmet-fhir==0.1.1"

log() { printf '[bootstrap] %s\n' "$*" >&2; }
# pip and setuptools are chatty (mirror warnings, deprecation notices); keep their output in a
# log and show it only when the step fails.
quiet_pip() {
    local log_file=".bootstrap-pip.log"
    if ! "$@" >"$log_file" 2>&1; then
        grep -v "^WARNING: Location" "$log_file" >&2
        log "failed: $* (full output in $log_file)"
        return 1
    fi
}

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts its own Orthanc, PostgreSQL and Redis services on install; ours run from the
    # project's run dir (PostgreSQL as its own system user, made by `services up --scale`).
    for service in orthanc postgresql redis-server; do
        $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || $SUDO service "$service" stop >/dev/null 2>&1 || true
    done
fi

stamp_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

app_stamp=".venv/.bootstrap-$(stamp_of pyproject.toml)"
if [ ! -f "$app_stamp" ]; then
    log "creating .venv and installing the project (first run takes a few minutes)"
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    quiet_pip .venv/bin/pip install -q --upgrade pip
    quiet_pip .venv/bin/pip install -q -e '.[dev]'
    rm -f .venv/.bootstrap-*
    touch "$app_stamp"
fi

fhir_stamp=".venv-fhir/.bootstrap-$(echo "$FHIR_SERVER_REQUIREMENT" | sha256sum | cut -c1-16)"
if [ ! -f "$fhir_stamp" ]; then
    log "creating .venv-fhir with $FHIR_SERVER_REQUIREMENT"
    [ -x .venv-fhir/bin/python ] || "$PYTHON" -m venv .venv-fhir
    quiet_pip .venv-fhir/bin/pip install -q --upgrade pip
    quiet_pip .venv-fhir/bin/pip install -q "$FHIR_SERVER_REQUIREMENT"
    rm -f .venv-fhir/.bootstrap-*
    touch "$fhir_stamp"
fi

# The tests' OpenID provider (npm's oidc-provider, tests/oidc/) runs on the machine's Node.js 20 and
# npm (oidc-provider 9 is made for Node.js 20 and later). `npm ci` installs exactly the lock file, into
# that folder only; node_modules/.package-lock.json is npm's own record of it.
if [ ! tests/oidc/node_modules/.package-lock.json -nt tests/oidc/package-lock.json ]; then
    command -v node >/dev/null && command -v npm >/dev/null \
        || { log "Node.js 20 with npm is needed for the tests' OpenID provider (tests/oidc)"; exit 1; }
    log "installing the tests' OpenID provider (npm ci in tests/oidc)"
    (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
