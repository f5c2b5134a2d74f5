#!/usr/bin/env bash
# Makes sure the build can start: a Rust toolchain, and the Debian packages that
# melior/mlir-sys need (LLVM/MLIR 22 and the libraries they link against).
# Idempotent and silent when everything is present; called by `make deps`.
set -euo pipefail

MIN_RUST="1.85"
PACKAGES=(llvm-22-dev libmlir-22-dev mlir-22-tools libclang-22-dev libpolly-22-dev libzstd-dev libz3-dev libxml2-dev)

# Rust: we cannot install it for the user (rustup is a per-user choice), so say how.
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: \`cargo\` not found. Install a Rust toolchain >= ${MIN_RUST} with rustup:" >&2
    echo "       curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
    echo "       (see https://rustup.rs), then open a new shell and run make again." >&2
    exit 1
fi

# Debian packages: install only the missing ones.
missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

# The Makefile passes SUDO ("" as root, "sudo" otherwise); work it out when run by hand.
if [ -z "${SUDO+set}" ]; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
fi
if [ -n "$SUDO" ] && ! command -v "$SUDO" >/dev/null 2>&1; then
    echo "error: need root to install ${missing[*]}, and \`$SUDO\` is not available." >&2
    echo "       Install them as root: apt-get install -y ${missing[*]}" >&2
    exit 1
fi

echo "ensure-deps: installing ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
