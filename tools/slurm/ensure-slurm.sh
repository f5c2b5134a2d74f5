#!/usr/bin/env bash
# Makes sure the Slurm daemons and clients are installed, for the tests that
# start a one-node cluster (tests/slurm.rs, tools/slurm/cluster.sh).
# Exit 0: installed (or already there). Exit 3: cannot be installed here (not
# root and no sudo, or no package access); the reason is on stderr.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-slurm: no apt-get on this machine; install ${missing[*]} by hand" >&2
    exit 3
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
    echo "ensure-slurm: need root to install ${missing[*]} (not root, no password-less sudo)" >&2
    exit 3
fi

echo "ensure-slurm: installing ${missing[*]}" >&2
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || {
        echo "ensure-slurm: apt-get update failed (no package access?)" >&2
        exit 3
    }
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || {
        echo "ensure-slurm: apt-get install ${missing[*]} failed" >&2
        exit 3
    }
fi
