#!/usr/bin/env bash
# Build (or reuse) the kube-apiserver and etcd binaries that the test suite's
# local control plane runs (testkit/controlplane/).
#
# Both come from the Go module proxy via the wrapper modules in
# tools/controlplane/{kube-apiserver,etcd}. The binaries live in a cache dir
# OUTSIDE the repo, keyed on the pinned versions and a hash of the wrapper
# modules, so a second run is instant and a version bump rebuilds:
#
#   ${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/controlplane/<k8s>-<etcd>-<hash>/
#
# If KUBEBUILDER_ASSETS is set and holds kube-apiserver and etcd, that dir is
# used as is and nothing is built.
#
# stdout: the directory holding the binaries, as the LAST line
#         (dir=$(tools/build-controlplane.sh | tail -1)).
# stderr: progress.
set -euo pipefail

log() { printf 'build-controlplane: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/controlplane"

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
	if [[ -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
		log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
		printf '%s\n' "$KUBEBUILDER_ASSETS"
		exit 0
	fi
	log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable kube-apiserver and etcd; building instead"
fi

# Pinned versions, read from the wrapper modules' go.mod files.
mod_version() { # <go.mod> <module path>
	awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}
k8s_version="$(mod_version "$src/kube-apiserver/go.mod" k8s.io/kubernetes)"
etcd_version="$(mod_version "$src/etcd/go.mod" go.etcd.io/etcd/server/v3)"
[[ -n "$k8s_version" ]] || die "cannot read the k8s.io/kubernetes version from $src/kube-apiserver/go.mod"
[[ -n "$etcd_version" ]] || die "cannot read the etcd version from $src/etcd/go.mod"

# Version stamp for kube-apiserver (otherwise it reports v0.0.0).
k8s_semver="${k8s_version#v}"
k8s_major="${k8s_semver%%.*}"
k8s_minor="${k8s_semver#*.}"
k8s_minor="${k8s_minor%%.*}"
vpkg=k8s.io/component-base/version
apiserver_ldflags="-s -w -X $vpkg.gitVersion=$k8s_version -X $vpkg.gitMajor=$k8s_major"
apiserver_ldflags+=" -X $vpkg.gitMinor=$k8s_minor -X $vpkg.gitTreeState=clean"
etcd_ldflags="-s -w"
recipe="trimpath cgo0 | $apiserver_ldflags | $etcd_ldflags"

hash="$(
	{
		printf '%s\n' "$recipe"
		cat "$src/kube-apiserver/go.mod" "$src/kube-apiserver/go.sum" "$src/kube-apiserver/main.go"
		cat "$src/etcd/go.mod" "$src/etcd/go.sum" "$src/etcd/main.go"
	} | sha256sum | cut -c1-12
)"

cache_root="${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/controlplane"
out="$cache_root/$k8s_version-$etcd_version-$hash"

have_binaries() { [[ -x "$out/kube-apiserver" && -x "$out/etcd" ]]; }

if have_binaries; then
	log "cached: $out"
	printf '%s\n' "$out"
	exit 0
fi

command -v go >/dev/null 2>&1 ||
	die "'go' is not on PATH: install Go >= 1.26 (or set KUBEBUILDER_ASSETS to a dir with kube-apiserver and etcd)"

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

build() { # <name> <ldflags>
	local name="$1" ldflags="$2" start=$SECONDS
	log "building $name ($([[ $name == etcd ]] && echo "$etcd_version" || echo "$k8s_version")) with $(go version)..."
	if ! (cd "$src/$name" && go build -ldflags "$ldflags" -o "$tmp/$name" .) >&2; then
		die "go build of $name failed (see the output above)"
	fi
	log "built $name in $((SECONDS - start))s"
}

build etcd "$etcd_ldflags"
build kube-apiserver "$apiserver_ldflags"

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
log "done: $out"
printf '%s\n' "$out"
