#!/usr/bin/env bash
# Print the path of a LazyFS binary (the power-cut file system of the fault suite),
# building it first if needed.
#
# stdout: only the path. Progress and errors go to stderr.
#
#   1. reuse $LAZYFS_PREFIX/bin/lazyfs (default /opt/lazyfs) if it is there with its library
#      (a machine that ran CI before keeps it);
#   2. build it with $HUBGATE_SHARED/tools/lazyfs/build.sh (a folder beside the checkout:
#      LazyFS source and its two dependencies as tarballs; offline, ~2 min on 2 cores) into
#      that prefix.
# Building needs cmake g++ pkg-config libfuse3-dev; mounting needs fuse3, root and /dev/fuse
# (.ci/run installs the packages).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/../.." && pwd))"
shared="${HUBGATE_SHARED:-$repo/../shared}"
prefix="${LAZYFS_PREFIX:-/opt/lazyfs}"
bin="$prefix/bin/lazyfs"

log() { echo "ensure-lazyfs: $*" >&2; }

# LazyFS has no --version (and even --help needs a config file): check that it and its
# page-cache library load.
is_good() {
    [ -x "$1" ] && ! ldd "$1" 2>/dev/null | grep -q 'not found'
}

if is_good "$bin"; then
    log "reusing $bin"
    echo "$bin"
    exit 0
fi

build="$shared/tools/lazyfs/build.sh"
[ -x "$build" ] || [ -f "$build" ] || { log "no $build: cannot build LazyFS"; exit 1; }
log "building LazyFS into $prefix with $build"
start=$(date +%s)
nice -n 10 bash "$build" "$prefix" >&2
log "built in $(($(date +%s) - start)) s"
is_good "$bin" || { log "$bin does not run after the build"; exit 1; }
echo "$bin"
