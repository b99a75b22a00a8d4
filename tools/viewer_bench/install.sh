#!/usr/bin/env bash
# Installs what the viewer bench needs beyond Debian's packages (orthanc, orthanc-dicomweb, chromium):
#   - the OHIF viewer, already built: the npm package @ohif/app ships dist/; only that folder is kept, in
#     tools/viewer_bench/ohif/ (git-ignored). `npm pack` fetches the one tarball, none of its dependencies.
# Idempotent: does nothing when the pinned versions are already there. CI calls it from .ci/run.
set -euo pipefail

OHIF_VERSION="3.13.2"

here="$(cd "$(dirname "$0")" && pwd)"
target="$here/ohif"

if [ "$(cat "$target/VERSION" 2>/dev/null || true)" != "$OHIF_VERSION" ]; then
    if ! command -v npm >/dev/null; then
        echo "viewer bench: npm is not installed; the viewer tests will skip" >&2
    else
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        (cd "$tmp" && npm pack --silent "@ohif/app@$OHIF_VERSION" >/dev/null)
        tar xzf "$tmp"/ohif-app-"$OHIF_VERSION".tgz -C "$tmp" package/dist package/LICENSE
        rm -rf "$target"
        mkdir -p "$target"
        mv "$tmp/package/dist" "$target/dist"
        mv "$tmp/package/LICENSE" "$target/LICENSE"
        echo "$OHIF_VERSION" >"$target/VERSION"
        echo "viewer bench: OHIF $OHIF_VERSION installed in $target"
    fi
fi
