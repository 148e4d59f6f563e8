#!/usr/bin/env bash
# Build (or reuse) the binaries that turn the test control plane into a local cluster that
# rolls out (testkit/controlplane/cluster.py): kube-controller-manager, kube-scheduler,
# kubectl and kwok (simulated nodes).
#
# All come from the Go module proxy via the wrapper modules in tools/cluster/<name>. The
# binaries live in a cache dir OUTSIDE the repo, keyed on the pinned versions and a hash of
# the wrapper modules, so a second run is instant and a version bump rebuilds:
#
#   ${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/cluster/<k8s>-<kwok>-<hash>/
#
# It shares Go's module and build caches with tools/build-controlplane.sh, so the k8s modules
# are downloaded once and the packages both use are compiled once.
#
# stdout: the directory holding the binaries, as the LAST line
#         (dir=$(tools/build-cluster.sh | tail -1)).
# stderr: progress, with each build's wall time and peak RSS when /usr/bin/time exists.
set -euo pipefail

log() { printf 'build-cluster: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/cluster"
names=(kube-scheduler kube-controller-manager kubectl kwok)

# Pinned versions, read from the wrapper modules' go.mod files.
mod_version() { # <go.mod> <module path>
	awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}
k8s_version="$(mod_version "$src/kube-controller-manager/go.mod" k8s.io/kubernetes)"
kwok_version="$(mod_version "$src/kwok/go.mod" sigs.k8s.io/kwok)"
[[ -n "$k8s_version" ]] || die "cannot read the k8s.io/kubernetes version from $src/kube-controller-manager/go.mod"
[[ -n "$kwok_version" ]] || die "cannot read the kwok version from $src/kwok/go.mod"

# Version stamp for the k8s binaries (otherwise they report v0.0.0, and kubectl warns
# about the skew to the API server).
k8s_semver="${k8s_version#v}"
k8s_major="${k8s_semver%%.*}"
k8s_minor="${k8s_semver#*.}"
k8s_minor="${k8s_minor%%.*}"
vpkg=k8s.io/component-base/version
k8s_ldflags="-s -w -X $vpkg.gitVersion=$k8s_version -X $vpkg.gitMajor=$k8s_major"
k8s_ldflags+=" -X $vpkg.gitMinor=$k8s_minor -X $vpkg.gitTreeState=clean"
kwok_ldflags="-s -w" # kwok carries its version in its pkg/consts
recipe="trimpath cgo0 | $k8s_ldflags | $kwok_ldflags"

hash="$(
	{
		printf '%s\n' "$recipe"
		for name in "${names[@]}"; do
			cat "$src/$name/go.mod" "$src/$name/go.sum" "$src/$name/main.go"
		done
	} | sha256sum | cut -c1-12
)"

cache_root="${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/cluster"
out="$cache_root/$k8s_version-$kwok_version-$hash"

have_binaries() {
	local name
	for name in "${names[@]}"; do
		[[ -x "$out/$name" ]] || return 1
	done
}

if have_binaries; then
	log "cached: $out"
	printf '%s\n' "$out"
	exit 0
fi

command -v go >/dev/null 2>&1 || die "'go' is not on PATH: install Go >= 1.26"

mkdir -p "$cache_root"
# One builder at a time (parallel test sessions); the others wait, then reuse.
exec 9>"$cache_root/.build.lock"
flock 9
if have_binaries; then
	log "cached (built by a concurrent run): $out"
	printf '%s\n' "$out"
	exit 0
fi

tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

export CGO_ENABLED=0
# 2 cores: keep parallelism (and so peak memory) modest.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=2 -trimpath -mod=readonly -buildvcs=false"

build() { # <name> <version> <ldflags>
	local name="$1" version="$2" ldflags="$3" start=$SECONDS
	local -a timer=()
	[[ -x /usr/bin/time ]] && timer=(/usr/bin/time -f "%e %M" -o "$tmp/.$name.time")
	log "building $name ($version) with $(go version)..."
	if ! (cd "$src/$name" && "${timer[@]}" go build -ldflags "$ldflags" -o "$tmp/$name" .) >&2; then
		die "go build of $name failed (see the output above)"
	fi
	if [[ -s "$tmp/.$name.time" ]]; then
		read -r wall rss_kb <"$tmp/.$name.time"
		log "built $name in ${wall}s, peak RSS $((rss_kb / 1024)) MiB"
		rm -f "$tmp/.$name.time"
	else
		log "built $name in $((SECONDS - start))s"
	fi
}

for name in "${names[@]}"; do
	if [[ $name == kwok ]]; then
		build "$name" "$kwok_version" "$kwok_ldflags"
	else
		build "$name" "$k8s_version" "$k8s_ldflags"
	fi
done

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
log "done: $out"
printf '%s\n' "$out"
