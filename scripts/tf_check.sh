#!/usr/bin/env bash
# Static checks of terraform/: formatting and checkov (security).
#
#   scripts/tf_check.sh
#
# checkov lives in its own venv (.venv-checkov): its bc-python-hcl2 dependency
# conflicts with the python-hcl2 the unit tests use. The venv is created on first
# run. checkov reads .checkov.yaml (framework, offline mode); every skipped
# check is justified inline next to its resource.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v terraform >/dev/null 2>&1; then
  echo "tf_check: terraform is not installed" >&2
  exit 1
fi

if [ ! -x .venv-checkov/bin/checkov ]; then
  echo "tf_check: creating .venv-checkov (first run, takes a few minutes)" >&2
  python3 -m venv .venv-checkov
  .venv-checkov/bin/pip install --quiet checkov
fi

echo "== terraform fmt -check -recursive terraform"
terraform fmt -check -recursive -diff terraform

echo "== checkov -d terraform"
.venv-checkov/bin/checkov -d terraform --quiet --compact --framework terraform
