#!/usr/bin/env bash
# Runs the whole test suite: unit, integration (the suite starts its own Orthanc and FHIR
# server on free ports), realdata (../shared/data; required when CI is set) and browser.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -m unit
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
start=$(date +%s)
# pytest exits 5 when it collected nothing; with `set -e` that fails the run as it should.
.venv/bin/pytest "$@"
echo "[test] finished in $(( $(date +%s) - start )) s"
