#!/usr/bin/env bash
# Builds the ThreatConnect package: target/TaniumTrIndicators_v<major>.tcx
#
#   ./package.sh [extra cargo zigbuild args, e.g. --locked]
#
# Needs: rustup/cargo, python3 (with venv), objdump (binutils), PyPI access on first run.
# Idempotent: reuses target/venv-zig (ziglang + cargo-zigbuild from PyPI, pinned below) and
# cargo's incremental state. Steps:
#   1. release binary against glibc 2.17 (cargo zigbuild, target x86_64-unknown-linux-gnu.2.17),
#      so it loads on the TC job executor's older Linux;
#   2. checks the highest GLIBC symbol version it needs is <= 2.17 (fails otherwise);
#   3. zips install.json, layout.json (if present), README.md, a generated run.py and the binary
#      into one folder TaniumTrIndicators_v<major>/ (reproducible bytes), and lists it.
#
# Environment overrides (all optional):
#   TCX_APP_DIR   folder with install.json / layout.json / README.md   (default: repo root)
#   TCX_OUT_DIR   where the .tcx goes                                   (default: target/)
#   ZIG_VENV      the Python venv holding ziglang and cargo-zigbuild     (default: target/venv-zig)
#   PYTHON        interpreter used to create that venv                  (default: python3)
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

die() { echo "package.sh: $*" >&2; exit 1; }
command -v cargo >/dev/null || die "cargo not found (install Rust via rustup)"
command -v objdump >/dev/null || die "objdump not found (install binutils)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (install Python 3 with venv)"

# 1. Toolchain: zig + cargo-zigbuild in a private venv, reinstalled only when the pins change.
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || die "cannot create the venv $VENV (is python3-venv installed?)"
fi
if [ "$(cat "$VENV/.pins" 2>/dev/null)" != "${PINS[*]}" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
    echo "${PINS[*]}" >"$VENV/.pins"
fi
# cargo-zigbuild finds zig as `python3 -m ziglang` through the venv's python3.
export PATH="$VENV/bin:$PATH"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TRIPLE"; then
    rustup target add "$TRIPLE"
fi

# 2. Release binary against glibc 2.17.
start=$(date +%s)
cargo zigbuild --release --target "$TRIPLE.$GLIBC" "$@"
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
echo "release build: $((built - start)) s; total: $(($(date +%s) - start)) s"
echo "package ready: $TCX"
