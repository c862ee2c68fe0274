#!/usr/bin/env bash
# Installs the local AWS emulator (moto server, pinned) into a git-ignored venv inside the project.
# Idempotent: a venv that already has the pinned version is left alone.
# Prints the venv's python path on the last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="${BUNKER_VENV:-$root/.venv}"
pin="moto[server]==5.2.5"   # 5.2.1 answers CompleteMultipartUpload in a shape the Rust SDK rejects (getmoto/moto#10055)
# CRC32C (C extension): the plugin checks S3 part checksums with it, and moto computes CRC32C
# correctly only when it is installed.
crc="crc32c==2.9.post0"
# cfn-lint lints the CloudFormation template and reads it for deploy/check_policies.py (moto
# brings it too; pinned here so the check does not move with moto's requirements).
lint="cfn-lint==1.58.0"
# pyarrow writes the real Parquet files of the plugin's RDS snapshot exports (moto_rds_export.py).
arrow="pyarrow==26.0.1"

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "setup-emulator: python3 venv support missing; installing python3-venv" >&2
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
  else
    echo "setup-emulator: install python3 with the venv module, then run again" >&2; exit 2
  fi
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import crc32c, moto, sys; from importlib.metadata import version as v; sys.exit(0 if moto.__version__ == "5.2.5" and v("cfn-lint") == "1.58.0" and v("pyarrow") == "26.0.1" else 1)' >/dev/null 2>&1; then
  "$venv/bin/pip" install -q --disable-pip-version-check "$pin" "$crc" "$lint" "$arrow" >&2
fi
# checkov checks the CloudFormation template (tests/policies.rs), in a venv of its own: its
# pinned dependencies would fight moto's.
checkov_venv="${BUNKER_CHECKOV_VENV:-$root/.venv-checkov}"
if ! "$checkov_venv/bin/checkov" --version 2>/dev/null | grep -qx "3.2.533"; then
  python3 -m venv "$checkov_venv" >&2
  "$checkov_venv/bin/pip" install -q --disable-pip-version-check "checkov==3.2.533" >&2
fi
echo "$venv/bin/python"
