#!/usr/bin/env bash
# Builds the ThreatConnect package: target/TaniumTrIndicators_v<major>.tcx
#
#   ./package.sh [extra cargo zigbuild args, e.g. --locked]
#
# Needs: rustup/cargo, python3 (with venv), PyPI access on first run.
# Idempotent: reuses target/venv-zig (ziglang + cargo-zigbuild from PyPI, pinned below) and
# cargo's incremental state. Steps:
#   1. release binary against glibc 2.17 (cargo zigbuild, target x86_64-unknown-linux-gnu.2.17),
#      so it loads on the TC job executor's older Linux, without the default `sim` feature, so it
#      holds only the job (no simulators, no demo);
#   2. checks the highest GLIBC symbol version it needs is <= 2.17 (fails otherwise);
#   3. zips install.json, layout.json (if present), README.md, a generated run.py and the binary
#      into one folder TaniumTrIndicators_v<major>/ (reproducible bytes), and lists it;
#   4. with TCEX_VALIDATE=1 (CI): unpacks it and runs `tcex validate` (tcex-cli from PyPI,
#      pinned, in target/venv-tcex) in the unpacked folder; any validation error fails.
#
# Environment overrides (all optional):
#   TCX_APP_DIR   folder with install.json / layout.json / README.md   (default: repo root)
#   TCX_OUT_DIR   where the .tcx goes                                   (default: target/)
#   ZIG_VENV      the Python venv holding ziglang and cargo-zigbuild     (default: target/venv-zig)
#   PYTHON        interpreter used to create the venvs                  (default: python3)
#   TCEX_VALIDATE 1 to run step 4                                       (default: off)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
APP_DIR="${TCX_APP_DIR:-$ROOT}"
OUT="${TCX_OUT_DIR:-$TARGET_DIR}"
VENV="${ZIG_VENV:-$TARGET_DIR/venv-zig}"
PYTHON="${PYTHON:-python3}"
TRIPLE="x86_64-unknown-linux-gnu"
GLIBC="2.17"
PINS=(ziglang==0.17.1 cargo-zigbuild==0.24.1)
TCEX_PINS=(tcex-cli==2.0.0)

die() { echo "package.sh: $*" >&2; exit 1; }
command -v cargo >/dev/null || die "cargo not found (install Rust via rustup)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (install Python 3 with venv)"

# 1. Toolchain: zig + cargo-zigbuild in a private venv, reinstalled only when the pins change.
# venv DIR PACKAGE==VERSION...: creates DIR if needed, installs the pins when they changed.
venv() {
    local dir="$1"
    shift
    if [ ! -x "$dir/bin/python" ]; then
        "$PYTHON" -m venv "$dir" || die "cannot create the venv $dir (is python3-venv installed?)"
    fi
    if [ "$(cat "$dir/.pins" 2>/dev/null)" != "$*" ]; then
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
        echo "$*" >"$dir/.pins"
    fi
}
venv "$VENV" "${PINS[@]}"
# cargo-zigbuild finds zig as `python3 -m ziglang` through the venv's python3.
export PATH="$VENV/bin:$PATH"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TRIPLE"; then
    rustup target add "$TRIPLE"
fi

# 2. Release binary against glibc 2.17, the job only.
start=$(date +%s)
cargo zigbuild --release --no-default-features --target "$TRIPLE.$GLIBC" "$@"
built=$(date +%s)
BINARY="$TARGET_DIR/$TRIPLE/release/tanium-tr-indicators"
[ -f "$BINARY" ] || die "cargo zigbuild did not produce $BINARY"

# 3. Check glibc, assemble the .tcx (the dev-profile example reuses the test build: no second
#    release build for the host).
report="$(cargo run --quiet --example package -- \
    --app-dir "$APP_DIR" --binary "$BINARY" --out "$OUT" --max-glibc "$GLIBC")"
echo "$report"
TCX="$(sed -n 's/^package: \(.*\) ([0-9]* bytes)$/\1/p' <<<"$report")"
[ -f "$TCX" ] || die "the packager did not report a .tcx"
"$VENV/bin/python" -m zipfile -l "$TCX"

# 4. tcex validate on the unpacked package (tcex-cli prints layout errors but still exits 0).
if [ "${TCEX_VALIDATE:-0}" = 1 ]; then
    venv "$TARGET_DIR/venv-tcex" "${TCEX_PINS[@]}"
    unpacked="$(mktemp -d)"
    trap 'rm -rf "$unpacked"' EXIT
    "$VENV/bin/python" -m zipfile -e "$TCX" "$unpacked"
    folder="$(basename "$TCX" .tcx)"
    if ! validation="$(cd "$unpacked/$folder" && "$TARGET_DIR/venv-tcex/bin/tcex" validate 2>&1)" ||
        grep -q "Validation Errors" <<<"$validation"; then
        echo "$validation" >&2
        die "tcex validate failed on $TCX"
    fi
    echo "tcex validate: passed"
fi
echo "release build: $((built - start)) s; total: $(($(date +%s) - start)) s"
echo "package ready: $TCX"
