#!/usr/bin/env bash
# The main job on its embedded default: local Orthanc + FHIR server, the synthetic chest CT
# phantom, the offline planner, no API keys. The user's example goal runs end to end and asks
# for approval in this terminal before anything is written. Extra arguments go to
# `imaging-agent ask`, e.g. --yes (approve automatically; recorded as not reviewed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
.venv/bin/imaging-agent services up
.venv/bin/imaging-agent seed
.venv/bin/imaging-agent ask "analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS" "$@"
echo
echo "Results: PACS http://127.0.0.1:8042/app/explorer.html   FHIR http://127.0.0.1:8090/fhir"
echo "The PACS asks for a login: user imaging-agent, password in run/orthanc/http-password (or your IMAGING_AGENT_ORTHANC_* settings)"
echo "The web app: .venv/bin/imaging-agent ui   Stop the services: .venv/bin/imaging-agent services down"
