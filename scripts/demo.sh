#!/usr/bin/env bash
# The main job on its embedded default: local Orthanc + FHIR server, the synthetic chest CT
# phantom, the offline planner, no API keys.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
.venv/bin/imaging-agent services up
.venv/bin/imaging-agent seed
.venv/bin/imaging-agent pending
