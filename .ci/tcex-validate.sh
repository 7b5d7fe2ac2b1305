#!/usr/bin/env bash
# Runs ThreatConnect's own `tcex validate` (PyPI package tcex-cli) on the app's manifest files.
#
# Usage: .ci/tcex-validate.sh            (from anywhere; needs python3 with venv, and PyPI)
# Env:   TCEX_VENV         venv folder to create/reuse   (default: ${TMPDIR:-/tmp}/tanium-tr-indicators-tcex-venv)
#        TCEX_CLI_VERSION  tcex-cli version to install    (default: 2.0.0; "latest" for newest)
#
# `tcex validate` prints its findings but exits 0 even when validation fails, so this script
# also fails on any "failed" row, a "Validation Errors" panel, or an exception in its output.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TCEX_VENV:-${TMPDIR:-/tmp}/tanium-tr-indicators-tcex-venv}"
version="${TCEX_CLI_VERSION:-2.0.0}"

if [ ! -x "$venv/bin/tcex" ]; then
    echo "tcex-validate: creating $venv and installing tcex-cli ($version)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    if [ "$version" = "latest" ]; then
        "$venv/bin/python" -m pip install --quiet tcex-cli
    else
        "$venv/bin/python" -m pip install --quiet "tcex-cli==$version"
    fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/tcex-validate.XXXXXX")"
trap 'rm -rf "$work"' EXIT
app="$work/app"
mkdir -p "$app"
cp "$repo/install.json" "$repo/layout.json" "$app/"
if [ -f "$repo/README.md" ]; then
    cp "$repo/README.md" "$app/"
fi
if [ -f "$repo/run.py" ]; then
    cp "$repo/run.py" "$app/"
else
    # programMain is "run": the package ships a run.py launcher; a stub stands in for it here.
    printf '"""Launcher stub: the package ships the real run.py."""\n' > "$app/run.py"
fi

set +e
output="$(cd "$app" && COLUMNS=200 NO_COLOR=1 TERM=dumb "$venv/bin/tcex" validate 2>&1)"
rc=$?
set -e
printf '%s\n' "$output"

if [ "$rc" -ne 0 ]; then
    echo "tcex-validate: FAILED (tcex validate exited $rc)" >&2
    exit 1
fi
if printf '%s' "$output" | grep -Eqi 'failed|Validation Errors|Exception|Traceback'; then
    echo "tcex-validate: FAILED (see the findings above)" >&2
    exit 1
fi
echo "tcex-validate: passed" >&2
