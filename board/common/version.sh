#!/bin/sh
# version.sh [REPO]: prints the release version, the `version` of [workspace.package] in
# the workspace's Cargo.toml (the one place it is kept; the gatehouse binary's
# --version, the image's os-release and the RAUC bundle all say it).
set -eu
repo="${1:-$(cd "$(dirname "$0")/../.." && pwd)}"
v="$(sed -n '/^\[workspace\.package\]/,/^\[/{s/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p}' "$repo/Cargo.toml" | head -n 1)"
if [ -z "$v" ]; then
    echo "version.sh: no [workspace.package] version in $repo/Cargo.toml" >&2
    exit 1
fi
printf '%s\n' "$v"
