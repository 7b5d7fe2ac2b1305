#!/usr/bin/env bash
# Validates the intel documents this app renders:
#  - every STIX sample against the STIX 1.2 / CybOX 2.1 schemas with stix-validator (PyPI);
#  - every OpenIOC sample against .ci/openioc-1.1.xsd (structure of the OpenIOC 1.1 schema) with lxml;
#  - every OpenIOC sample through tools written elsewhere (.ci/openioc_outside_check.py): Mandiant's
#    ioc_writer parses it and downgrades it to OpenIOC 1.0, MITRE's openioc-to-stix converts that
#    to CybOX (every item and value must survive), and stix-validator validates the result.
# Samples (each type, IPv6, partial hashes, hostile values, huge descriptions, many tags) come
# from the ignored test `write_samples` in tests/intel.rs.
# Env: STIX_VENV (default target/stix-venv), INTEL_SAMPLE_DIR (default: a fresh temp dir).
# Exit status is non-zero when anything fails to build, install or validate.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${STIX_VENV:-target/stix-venv}"
if [ ! -x "$venv/bin/stix-validator" ] || ! "$venv/bin/python" -c 'import ioc_writer, openioc2stix' 2>/dev/null; then
    python3 -m venv "$venv"
    # ioc-writer and openioc-to-stix are old and finished (2016, 2018): pinned.
    "$venv/bin/pip" install --quiet --disable-pip-version-check stix-validator \
        "ioc-writer==0.3.3" "openioc-to-stix==1.4.0"
fi

out="${INTEL_SAMPLE_DIR:-}"
if [ -z "$out" ]; then
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
fi
INTEL_SAMPLE_DIR="$out" cargo test --quiet --test integration -- --ignored --exact intel::write_samples

shopt -s nullglob
stix=("$out"/*.stix.xml)
ioc=("$out"/*.openioc.xml)
if [ "${#stix[@]}" -eq 0 ] || [ "${#ioc[@]}" -eq 0 ]; then
    echo "stix-validate: no samples were written to $out" >&2
    exit 1
fi

# --stix-version pins the schema set; the validator exits non-zero on any invalid document.
"$venv/bin/stix-validator" --stix-version 1.2 --quiet "${stix[@]}"
echo "stix-validate: ${#stix[@]} STIX documents valid"

"$venv/bin/python" .ci/openioc_validate.py .ci/openioc-1.1.xsd "${ioc[@]}"

"$venv/bin/python" .ci/openioc_outside_check.py "$out/from-openioc" "${ioc[@]}"
converted=("$out"/from-openioc/*.stix.xml)
"$venv/bin/stix-validator" --stix-version 1.2 --quiet "${converted[@]}"
echo "stix-validate: ${#converted[@]} packages openioc-to-stix made of the OpenIOC samples valid"
