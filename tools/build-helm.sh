#!/usr/bin/env bash
# Build (or reuse) the upstream helm CLI (helm.sh/helm/v4, wrapped by tools/helm): the tests
# install the chart with it (testkit/helm.py), and anything delivering through Helm can use the
# same pinned binary. Nothing here is specific to one chart.
#
# The binary lives in a cache dir OUTSIDE the repo, keyed on the pinned version and a hash of
# the wrapper module (go.mod + go.sum + main.go) and the recipe (tools/gobuild.sh), so a second
# run is instant and a version bump rebuilds:
#
#   ${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/helm/<version>-<hash>/helm
#
# It shares Go's module and build caches with the other tools/build-*.sh scripts (client-go
# and apimachinery are compiled once for kubectl and helm).
#
# stdout: the binary's path, as the LAST line (bin=$(tools/build-helm.sh | tail -1)).
# stderr: progress, with the build's wall time and peak RSS when /usr/bin/time exists.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/helm"
tag=build-helm
# shellcheck source=tools/gobuild.sh
. "$here/gobuild.sh"

version="$(mod_version "$src/go.mod" helm.sh/helm/v4)"
[[ -n "$version" ]] || die "cannot read the helm.sh/helm/v4 version from $src/go.mod"
# Stamp the version as helm's own Makefile does (otherwise `helm version` says v4.3).
vpkg=helm.sh/helm/v4/internal/version
ldflags="-s -w -X $vpkg.version=$version -X $vpkg.gitTreeState=clean"
out="$(gobuild_out helm "$version-$(wrapper_hash "trimpath cgo0 | $ldflags" "$src")")"

# gobuild_reuse_or_lock and gobuild_publish print the directory; this script prints the binary.
dir="$(
	gobuild_reuse_or_lock "$out" helm
	gobuild "$src" helm "$version" "$ldflags"
	gobuild_publish "$out"
)"
printf '%s\n' "$(tail -n 1 <<<"$dir")/helm"
