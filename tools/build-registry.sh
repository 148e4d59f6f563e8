#!/usr/bin/env bash
# Build (or reuse) CNCF Distribution's registry (github.com/distribution/distribution/v3,
# wrapped by tools/registry) that the registry tests run on loopback (testkit/registry.py).
#
# The binary lives in a cache dir OUTSIDE the repo, keyed on a hash of the wrapper module
# (go.mod + go.sum + main.go) and the recipe (tools/gobuild.sh), so a second run is instant
# and a version bump rebuilds:
#
#   ${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/registry/<hash>/registry
#
# stdout: the binary's path, as the LAST line (bin=$(tools/build-registry.sh | tail -1)).
# stderr: progress.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/registry"
tag=build-registry
# shellcheck source=tools/gobuild.sh
. "$here/gobuild.sh"

ldflags="-s -w"
version="$(mod_version "$src/go.mod" github.com/distribution/distribution/v3)"
out="$(gobuild_out registry "$(wrapper_hash "trimpath cgo0 | $ldflags" "$src")")"

# gobuild_reuse_or_lock and gobuild_publish print the directory; this script prints the binary.
dir="$(
	gobuild_reuse_or_lock "$out" registry
	gobuild "$src" registry "$version" "$ldflags"
	gobuild_publish "$out"
)"
printf '%s\n' "$(tail -n 1 <<<"$dir")/registry"
