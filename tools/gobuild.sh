# Shared by the tools/build-*.sh scripts that build Go binaries from wrapper modules into a
# cache dir OUTSIDE the repo, keyed on a hash of the wrapper modules and the build recipe.
# Source it after setting `tag` (the log prefix). Builds use Go's shared module and build
# caches, so modules common to several binaries are downloaded and compiled once.
#
#   out=$(gobuild_out <cache subdir> <name>)     # the cache dir for this name
#   gobuild_reuse_or_lock "$out" <binary>...     # cached: print $out, exit 0; else lock, $tmp
#   gobuild <wrapper module dir> <binary> <version> <ldflags>   # into $tmp, timed
#   gobuild_publish "$out"                       # $tmp becomes $out; print it
# shellcheck shell=bash

log() { printf '%s: %s\n' "$tag" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# The version of <module path> that <go.mod> requires.
mod_version() { # <go.mod> <module path>
	awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}

# ldflags that strip the binary and stamp a Kubernetes component's version (otherwise it
# reports v0.0.0).
k8s_ldflags() { # <vX.Y.Z>
	local semver="${1#v}" vpkg=k8s.io/component-base/version
	local major="${semver%%.*}" minor="${semver#*.}"
	minor="${minor%%.*}"
	printf '%s' "-s -w -X $vpkg.gitVersion=$1 -X $vpkg.gitMajor=$major"
	printf '%s' " -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
}

# sha256 (12 hex) of the recipe and every wrapper module's go.mod, go.sum and main.go.
wrapper_hash() { # <recipe> <wrapper module dir>...
	local recipe="$1" dir
	shift
	{
		printf '%s\n' "$recipe"
		for dir in "$@"; do
			cat "$dir/go.mod" "$dir/go.sum" "$dir/main.go"
		done
	} | sha256sum | cut -c1-12
}

gobuild_out() { # <cache subdir> <name>
	printf '%s\n' "${RECONCILER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reconciler}/$1/$2"
}

_have_all() { # <dir> <binary>...
	local dir="$1" name
	shift
	for name in "$@"; do
		[[ -x "$dir/$name" ]] || return 1
	done
}

# Reuse the cached binaries (print the dir and exit 0), else take the cache's build lock (one
# builder at a time: parallel test sessions wait, then reuse) and make the temp dir $tmp.
gobuild_reuse_or_lock() { # <out> <binary>...
	local out="$1"
	shift
	if _have_all "$out" "$@"; then
		log "cached: $out"
		printf '%s\n' "$out"
		exit 0
	fi
	command -v go >/dev/null 2>&1 || die "'go' is not on PATH: install Go >= 1.26${GOBUILD_ALTERNATIVE:+ ($GOBUILD_ALTERNATIVE)}"
	local root
	root="$(dirname "$out")"
	mkdir -p "$root"
	exec 9>"$root/.build.lock"
	flock 9
	if _have_all "$out" "$@"; then
		log "cached (built by a concurrent run): $out"
		printf '%s\n' "$out"
		exit 0
	fi
	tmp="$(mktemp -d "$root/.build.XXXXXX")"
	chmod 755 "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	export CGO_ENABLED=0
	# 2 cores: keep parallelism (and so peak memory) modest.
	export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=2 -trimpath -mod=readonly -buildvcs=false"
}

# go build one wrapper module into $tmp/<binary>; logs wall time and peak RSS (/usr/bin/time).
gobuild() { # <wrapper module dir> <binary> <version> <ldflags>
	local dir="$1" name="$2" version="$3" ldflags="$4" start=$SECONDS wall rss_kb
	local -a timer=()
	[[ -x /usr/bin/time ]] && timer=(/usr/bin/time -f "%e %M" -o "$tmp/.$name.time")
	log "building $name ($version) with $(go version)..."
	if ! (cd "$dir" && "${timer[@]}" go build -ldflags "$ldflags" -o "$tmp/$name" .) >&2; then
		die "go build of $name failed (see the output above)"
	fi
	if [[ -s "$tmp/.$name.time" ]]; then
		read -r wall rss_kb <"$tmp/.$name.time"
		rm -f "$tmp/.$name.time"
		log "built $name in ${wall}s, peak RSS $((rss_kb / 1024)) MiB"
	else
		log "built $name in $((SECONDS - start))s"
	fi
}

gobuild_publish() { # <out>
	rm -rf "$1"
	mv "$tmp" "$1"
	trap - EXIT
	log "done: $1"
	printf '%s\n' "$1"
}
