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

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/cluster"
tag=build-cluster
# shellcheck source=tools/gobuild.sh
. "$here/gobuild.sh"
names=(kube-scheduler kube-controller-manager kubectl kwok)

# Pinned versions, read from the wrapper modules' go.mod files.
k8s_version="$(mod_version "$src/kube-controller-manager/go.mod" k8s.io/kubernetes)"
kwok_version="$(mod_version "$src/kwok/go.mod" sigs.k8s.io/kwok)"
[[ -n "$k8s_version" ]] || die "cannot read the k8s.io/kubernetes version from $src/kube-controller-manager/go.mod"
[[ -n "$kwok_version" ]] || die "cannot read the kwok version from $src/kwok/go.mod"

# The k8s binaries get a version stamp (kubectl would warn about the skew to v0.0.0).
k8s_ldflags="$(k8s_ldflags "$k8s_version")"
kwok_ldflags="-s -w" # kwok carries its version in its pkg/consts
recipe="trimpath cgo0 | $k8s_ldflags | $kwok_ldflags"
hash="$(wrapper_hash "$recipe" "${names[@]/#/$src/}")"
out="$(gobuild_out cluster "$k8s_version-$kwok_version-$hash")"

gobuild_reuse_or_lock "$out" "${names[@]}"
for name in "${names[@]}"; do
	if [[ $name == kwok ]]; then
		gobuild "$src/$name" "$name" "$kwok_version" "$kwok_ldflags"
	else
		gobuild "$src/$name" "$name" "$k8s_version" "$k8s_ldflags"
	fi
done
gobuild_publish "$out"
