#!/usr/bin/env bash
# Print the path of a tansu 0.6.0 binary with SASL PLAIN (the Event Hubs
# stand-in used by the integration tests), installing it first if needed.
#
# stdout: only the path. Progress and errors go to stderr.
#
# Order, cheapest first:
#   1. reuse $TANSU_DEST (default /opt/tansu-plain/bin/tansu) if it reports "tansu 0.6.0"
#      (a machine that ran CI before keeps it);
#   2. unpack the prebuilt $HUBGATE_SHARED/bin/tansu-*.gz (a folder beside the checkout), check
#      its sha256 against $HUBGATE_SHARED/bin/tansu.sha256, install it (seconds);
#   3. build the wrapper crate .ci/services/tansu-plain (15-30 min cold on 2 cores).
# Stock tansu from crates.io is NOT acceptable: it has no SASL PLAIN.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/../.." && pwd))"
shared="${HUBGATE_SHARED:-$repo/../shared}"
dest="${TANSU_DEST:-/opt/tansu-plain/bin/tansu}"
want="tansu 0.6.0"

log() { echo "ensure-tansu: $*" >&2; }

is_good() {
    [ -x "$1" ] && [ "$("$1" --version 2>/dev/null | head -n1)" = "$want" ]
}

if is_good "$dest"; then
    log "reusing $dest"
    echo "$dest"
    exit 0
fi

# 2. Prebuilt binary from $HUBGATE_SHARED (verified by sha256 before it is installed).
gz=""
for f in "$shared"/bin/tansu-*.gz; do
    [ -f "$f" ] && gz="$f" && break
done
sumfile="$shared/bin/tansu.sha256"
if [ -n "$gz" ] && [ -f "$sumfile" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    gzip -dc "$gz" >"$tmp/tansu"
    expected="$(awk '{print $1; exit}' "$sumfile")"
    actual="$(sha256sum "$tmp/tansu" | awk '{print $1}')"
    if [ "$expected" = "$actual" ]; then
        chmod 755 "$tmp/tansu"
        if is_good "$tmp/tansu"; then
            install -D -m 755 "$tmp/tansu" "$dest"
            log "installed prebuilt $(basename "$gz") (sha256 $actual) to $dest"
            echo "$dest"
            exit 0
        fi
        log "prebuilt $gz does not report '$want'; building instead"
    else
        log "sha256 mismatch for $gz (expected $expected, got $actual); building instead"
    fi
else
    log "no prebuilt binary under $shared/bin; building instead"
fi

# 3. Build the wrapper (its own workspace and target dir: never part of hubgate's build).
manifest="$repo/.ci/services/tansu-plain/Cargo.toml"
target="${TANSU_TARGET_DIR:-/tmp/tansu-plain-target}"
log "building $manifest (cold: 15-30 min on 2 cores)"
start=$(date +%s)
nice -n 10 cargo build --release --locked --manifest-path "$manifest" --target-dir "$target" >&2
install -D -m 755 "$target/release/tansu" "$dest"
log "built in $(($(date +%s) - start)) s, installed to $dest"
is_good "$dest" || { log "built binary does not report '$want'"; exit 1; }
echo "$dest"
