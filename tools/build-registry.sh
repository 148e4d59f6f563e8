#!/usr/bin/env bash
# Build (or reuse) CNCF Distribution's registry (github.com/distribution/distribution/v3,
# wrapped by tools/registry) that the registry tests run on loopback (testkit/registry.py).
#
# The binary lives in a cache dir OUTSIDE the repo, keyed on a hash of the wrapper
# module (go.mod + go.sum + main.go), so a second run is instant and a version bump
# rebuilds:
#
#   ${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/registry/<hash>/registry
#
# stdout: the binary's path, as the LAST line (bin=$(tools/build-registry.sh | tail -1)).
# stderr: progress.
set -euo pipefail

log() { printf 'build-registry: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/registry"
ldflags="-s -w"
recipe="trimpath cgo0 | $ldflags"

hash="$(
	{
		printf '%s\n' "$recipe"
		cat "$src/go.mod" "$src/go.sum" "$src/main.go"
	} | sha256sum | cut -c1-16
)"

cache_root="${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/registry"
out="$cache_root/$hash"
bin="$out/registry"

if [[ -x "$bin" ]]; then
	log "cached: $bin"
	printf '%s\n' "$bin"
	exit 0
fi

command -v go >/dev/null 2>&1 ||
	die "'go' is not on PATH: install Go >= 1.26 to build the registry the tests run"

mkdir -p "$cache_root"
# One builder at a time (parallel test sessions); the others wait, then reuse.
exec 9>"$cache_root/.build.lock"
flock 9
if [[ -x "$bin" ]]; then
	log "cached (built by a concurrent run): $bin"
	printf '%s\n' "$bin"
	exit 0
fi

tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

export CGO_ENABLED=0
# 2 cores: keep parallelism (and so peak memory) modest.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=2 -trimpath -mod=readonly -buildvcs=false"

start=$SECONDS
log "building registry ($(awk '$1 == "require" && $2 ~ /distribution\/v3/ { print $2, $3 }' "$src/go.mod")) with $(go version)..."
if ! (cd "$src" && go build -ldflags "$ldflags" -o "$tmp/registry" .) >&2; then
	die "go build of the registry failed (see the output above)"
fi
log "built the registry in $((SECONDS - start))s"

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
log "done: $bin"
printf '%s\n' "$bin"
