#!/usr/bin/env bash
# Build (or reuse) the fake Pub/Sub server (Google's Go pstest package, wrapped by
# tools/pstest) that the test suite runs when the Cloud SDK's Pub/Sub emulator is not
# installed (testkit/pubsub_emulator.py).
#
# The binary lives in a cache dir OUTSIDE the repo, keyed on a hash of the wrapper
# module (go.mod + go.sum + main.go), so a second run is instant and a version bump
# rebuilds:
#
#   ${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/pstest/<hash>/pstest
#
# stdout: the binary's path, as the LAST line (bin=$(tools/build-pstest.sh | tail -1)).
# stderr: progress.
set -euo pipefail

log() { printf 'build-pstest: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/pstest"
ldflags="-s -w"
recipe="trimpath cgo0 | $ldflags"

hash="$(
	{
		printf '%s\n' "$recipe"
		cat "$src/go.mod" "$src/go.sum" "$src/main.go"
	} | sha256sum | cut -c1-16
)"

cache_root="${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/pstest"
out="$cache_root/$hash"
bin="$out/pstest"

if [[ -x "$bin" ]]; then
	log "cached: $bin"
	printf '%s\n' "$bin"
	exit 0
fi

command -v go >/dev/null 2>&1 ||
	die "'go' is not on PATH: install Go >= 1.26 to build the fake Pub/Sub server"

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
log "building pstest ($(awk '$1 == "require" && $2 ~ /pubsub/ { print $2, $3 }' "$src/go.mod")) with $(go version)..."
if ! (cd "$src" && go build -ldflags "$ldflags" -o "$tmp/pstest" .) >&2; then
	die "go build of pstest failed (see the output above)"
fi
log "built pstest in $((SECONDS - start))s"

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
log "done: $bin"
printf '%s\n' "$bin"
