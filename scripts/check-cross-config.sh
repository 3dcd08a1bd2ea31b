#!/usr/bin/env bash
# check-cross-config.sh - proves that the documented
#   CROSS_CONFIG=cross.toml cross build --release --features vendored-openssl --target <target>
# makes the real `cross` (0.2.5, installed with cargo into $CROSS_ROOT) use cross.toml, for
# every target in it. Needs no Docker: a stand-in container engine (CROSS_CONTAINER_ENGINE)
# records what cross asks of it - the image build with the pre-build step, the container run
# with its environment - and succeeds without running anything; this script then checks that
# the recorded calls carry the pre-build script and the env settings of cross.toml.
# It checks configuration only; scripts/verify-arm.sh compiles and runs the binaries.
set -euo pipefail

CROSS_VERSION=0.2.5
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
root=${CROSS_ROOT:-$HOME/.cache/hubgate/cross-$CROSS_VERSION}

die() { echo "check-cross-config: $*" >&2; exit 1; }

# A no-op once installed. Never run cross outside run_cross below (not even `cross --version`):
# every cross call goes through its toolchain check.
cargo install --quiet cross --version "$CROSS_VERSION" --locked --root "$root"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/engine" <<'EOF'
#!/bin/sh
# Stand-in for docker: one "arg:" line per argument, plus the Dockerfile of a build.
{
    echo "=== engine call"
    dockerfile=""
    for a in "$@"; do
        echo "arg: $a"
        [ "$prev" = "--file" ] || [ "$prev" = "-f" ] && dockerfile=$a
        prev=$a
    done
    [ -n "$dockerfile" ] && sed 's/^/dockerfile: /' "$dockerfile"
} >>"$ENGINE_LOG"
case "$1" in
    --help) echo "Usage: docker [OPTIONS] COMMAND (stand-in for docker)" ;;
    version) echo "linux,,,amd64" ;;
esac
EOF
chmod +x "$work/engine"

# cross 0.2.5 looks for its toolchain in `rustup toolchain list` lines ending in "(default)";
# rustup >= 1.28 writes "(active, default)", so cross would `rustup toolchain add` (= update)
# it, and it `rustup target add`s the target. This check must not change the host toolchain:
# cross gets a read-only rustup with the old list format, and CROSS_CUSTOM_TOOLCHAIN=1 stops
# the target and component installs.
real_rustup=$(command -v rustup) || die "rustup not found"
mkdir "$work/bin"
cat >"$work/bin/rustup" <<EOF
#!/bin/sh
case "\$1 \$2" in
    "toolchain list") "$real_rustup" toolchain list | sed 's/ (active, default)\$/ (default)/; s/ (active)\$//' ;;
    "target list" | "component list") exec "$real_rustup" "\$@" ;;
    *) echo "check-cross-config: refused 'rustup \$*': it would change the host toolchain" >&2; exit 1 ;;
esac
EOF
chmod +x "$work/bin/rustup"

# toml_value <table> <key>: the raw value of `key = value` in `[table]` of cross.toml.
toml_value() {
    awk -v table="[$1]" -v key="$2" '
        /^\[/ { in_table = ($0 == table); next }
        in_table && index($0, key " = ") == 1 { print substr($0, length(key) + 4) }' cross.toml
}

# run_cross <target> <log> [VAR=value...]: the documented cross command for <target> with the
# stand-ins, the engine's calls recorded in <log>, cross's output in $work/out.
run_cross() {
    local target=$1 log=$2
    shift 2
    : >"$log"
    env PATH="$work/bin:$PATH" CROSS_CUSTOM_TOOLCHAIN=1 CARGO_TARGET_DIR="$work/target" \
        ENGINE_LOG="$log" CROSS_CONTAINER_ENGINE="$work/engine" "$@" \
        "$root/bin/cross" build --release --features vendored-openssl --target "$target" >"$work/out" 2>&1 ||
        die "cross failed for $target: $(cat "$work/out")"
}

targets=$(sed -n 's/^\[target\.\([^].]*\)\]$/\1/p' cross.toml)
[ -n "$targets" ] || die "no [target.*] tables in cross.toml"
toolchain_before=$(rustc -vV)

# Control: without CROSS_CONFIG cross ignores cross.toml, so the checks below can fail.
first=${targets%%$'\n'*}
run_cross "$first" "$work/control.log"
! grep -q '^arg: build$' "$work/control.log" || die "cross built a pre-build image without CROSS_CONFIG"
grep -q "file named cross.toml" "$work/out" || die "cross did not notice cross.toml: $(cat "$work/out")"
echo "check-cross-config: control: without CROSS_CONFIG cross ignores cross.toml"

for target in $targets; do
    log="$work/$target.log"
    echo "check-cross-config: CROSS_CONFIG=cross.toml cross build --release --features vendored-openssl --target $target"
    run_cross "$target" "$log" CROSS_CONFIG=cross.toml
    fail() { die "$target: $1; cross said: $(cat "$work/out"); engine calls: $(cat "$log")"; }

    # pre-build: cross builds an image that copies the script named in cross.toml and runs it.
    script=$(toml_value "target.$target" pre-build | tr -d '"')
    [ -n "$script" ] || fail "no pre-build in cross.toml"
    grep -qxF "arg: CROSS_SCRIPT=$script" "$log" || fail "the image build is not given $script"
    grep -qE '^dockerfile: *COPY \$CROSS_SCRIPT ' "$log" || fail "the image build does not copy the script"
    grep -qE '^dockerfile: *RUN \./pre-build-script' "$log" || fail "the image build does not run the script"
    grep -qE '^arg: CROSS_DEB_ARCH=(arm64|armhf)$' "$log" || fail "no CROSS_DEB_ARCH for the script"
    image=$(grep -A1 -xF 'arg: --tag' "$log" | sed -n 's/^arg: \(.*-pre-build\)$/\1/p')
    [ -n "$image" ] || fail "no pre-build image tag"
    [ "$(grep -cxF "arg: $image" "$log")" = 2 ] || fail "cargo does not run in the pre-build image $image"

    grep -qF "cargo build --release --features vendored-openssl --target $target" "$log" ||
        fail "the container does not run the cargo build"

    # env: every passthrough entry of [target.<target>.env] reaches the container.
    passthrough=$(toml_value "target.$target.env" passthrough | tr -d '[]",')
    [ -n "$passthrough" ] || fail "no env.passthrough in cross.toml"
    for var in $passthrough; do
        grep -qxF "arg: $var" "$log" || fail "the container run lacks -e $var"
    done
    echo "check-cross-config: $target: image $image built with $script, run with $passthrough"
done
[ "$(rustc -vV)" = "$toolchain_before" ] || die "the host toolchain changed during the check"
echo "check-cross-config: cross $CROSS_VERSION reads cross.toml via CROSS_CONFIG for: $(echo $targets)"
