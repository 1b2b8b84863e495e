#!/usr/bin/env bash
# The main job on its embedded default: local Orthanc + FHIR server, the synthetic chest CT
# phantom, the offline planner, no API keys. The user's example goal runs end to end and asks
# for approval in this terminal before anything is written. Extra arguments go to
# `imaging-agent ask`. (Its --yes approves automatically only studies a goal names by id; this
# goal names none, so the demo always asks.)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
.venv/bin/imaging-agent services up
.venv/bin/imaging-agent seed
# The demo's reviewer is the OS account running it (its real uid, never $USER): listed as a
# radiologist for this run only, unless .env or the environment lists radiologists already.
if [ -z "${IMAGING_AGENT_LOCAL_RADIOLOGISTS:-}" ] && ! grep -qs '^IMAGING_AGENT_LOCAL_RADIOLOGISTS=\[ *"' .env; then
    IMAGING_AGENT_LOCAL_RADIOLOGISTS="[\"$(id -un)\"]"
    export IMAGING_AGENT_LOCAL_RADIOLOGISTS
    echo "Reviewer for this demo: the OS account $(id -un) (IMAGING_AGENT_LOCAL_RADIOLOGISTS=$IMAGING_AGENT_LOCAL_RADIOLOGISTS)"
fi
.venv/bin/imaging-agent ask "analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS" "$@"
echo
echo "Results: PACS http://127.0.0.1:8042/app/explorer.html   FHIR http://127.0.0.1:8090/fhir"
echo "The PACS asks for a login: user imaging-agent, password in run/orthanc/http-password (or your IMAGING_AGENT_ORTHANC_* settings)"
echo "Stop the services: .venv/bin/imaging-agent services down"
echo "Approve as a signed-in radiologist instead: .venv/bin/imaging-agent users add NAME --role radiologist,"
echo "  .venv/bin/imaging-agent serve (API, OpenAPI at http://127.0.0.1:8000/docs; the web app behind a"
echo "  sign-in at http://127.0.0.1:8000/ui), then .venv/bin/imaging-agent login -u NAME; approvals,"
echo "  process and ask decide as NAME."
