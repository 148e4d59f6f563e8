#!/usr/bin/env bash
# Build (or reuse) the fake Pub/Sub server (Google's Go pstest package, wrapped by
# tools/pstest) that the test suite runs when the Cloud SDK's Pub/Sub emulator is not
# installed (testkit/pubsub_emulator.py).
#
# The binary lives in a cache dir OUTSIDE the repo, keyed on a hash of the wrapper module
# (go.mod + go.sum + main.go) and the recipe (tools/gobuild.sh), so a second run is instant
# and a version bump rebuilds:
#
#   ${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/pstest/<hash>/pstest
#
# stdout: the binary's path, as the LAST line (bin=$(tools/build-pstest.sh | tail -1)).
# stderr: progress.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/pstest"
tag=build-pstest
# shellcheck source=tools/gobuild.sh
. "$here/gobuild.sh"

ldflags="-s -w"
version="$(mod_version "$src/go.mod" cloud.google.com/go/pubsub/v2)"
out="$(gobuild_out pstest "$(wrapper_hash "trimpath cgo0 | $ldflags" "$src")")"

# gobuild_reuse_or_lock and gobuild_publish print the directory; this script prints the binary.
dir="$(
	gobuild_reuse_or_lock "$out" pstest
	gobuild "$src" pstest "$version" "$ldflags"
	gobuild_publish "$out"
)"
printf '%s\n' "$(tail -n 1 <<<"$dir")/pstest"
