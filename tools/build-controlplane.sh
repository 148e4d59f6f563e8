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
# stderr: progress, with each build's wall time and peak RSS when /usr/bin/time exists.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/controlplane"
tag=build-controlplane
# shellcheck source=tools/gobuild.sh
. "$here/gobuild.sh"

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
	if [[ -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
		log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
		printf '%s\n' "$KUBEBUILDER_ASSETS"
		exit 0
	fi
	log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable kube-apiserver and etcd; building instead"
fi

# Pinned versions, read from the wrapper modules' go.mod files.
k8s_version="$(mod_version "$src/kube-apiserver/go.mod" k8s.io/kubernetes)"
etcd_version="$(mod_version "$src/etcd/go.mod" go.etcd.io/etcd/server/v3)"
[[ -n "$k8s_version" ]] || die "cannot read the k8s.io/kubernetes version from $src/kube-apiserver/go.mod"
[[ -n "$etcd_version" ]] || die "cannot read the etcd version from $src/etcd/go.mod"

apiserver_ldflags="$(k8s_ldflags "$k8s_version")"
etcd_ldflags="-s -w"
recipe="trimpath cgo0 | $apiserver_ldflags | $etcd_ldflags"
hash="$(wrapper_hash "$recipe" "$src/kube-apiserver" "$src/etcd")"
out="$(gobuild_out controlplane "$k8s_version-$etcd_version-$hash")"

GOBUILD_ALTERNATIVE="or set KUBEBUILDER_ASSETS to a dir with kube-apiserver and etcd"
gobuild_reuse_or_lock "$out" kube-apiserver etcd
gobuild "$src/etcd" etcd "$etcd_version" "$etcd_ldflags"
gobuild "$src/kube-apiserver" kube-apiserver "$k8s_version" "$apiserver_ldflags"
gobuild_publish "$out"
