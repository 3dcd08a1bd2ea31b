#!/usr/bin/env bash
# verify-arm.sh TARGET - cross-compile the release hubgate for a Raspberry Pi target with
# Debian's packaged toolchain (no Docker, via scripts/rpi-cross.sh) and smoke-run it under
# qemu-user: --version, check of the demo config, one decode. Prints the stripped size and,
# for 32-bit ARM, the CPU architecture the ELF attributes claim.
#
#   TARGET: aarch64-unknown-linux-gnu      Pi 3/4/5, 64-bit OS
#           armv7-unknown-linux-gnueabihf  Pi 2/3/4/5, 32-bit OS
#           arm-unknown-linux-gnueabihf    Pi Zero/1 (ARMv6)
#
# Once per machine (root): scripts/rpi-cross.sh install --with-armv6
# Environment: CARGO_TARGET_DIR (default target/), RPI_CROSS_NICE (default "nice -n 10").
#
# The ARMv6 build runs on an ARMv7 CPU model here, because Debian's armhf ld.so/libc are
# ARMv7; `readelf -A` proves the binary itself is ARMv6. Smoke-test it on a Pi Zero too.
set -euo pipefail

die() { echo "verify-arm: $*" >&2; exit 1; }

target=${1:-}
# features: rquickjs (JavaScript codecs, the default `js` feature) ships no bindings for
# ARMv6, so that build goes without it (docs/building.md: building it with libclang).
case "$target" in
    aarch64-unknown-linux-gnu) gnu=aarch64-linux-gnu; arch=""; features="" ;;
    armv7-unknown-linux-gnueabihf) gnu=arm-linux-gnueabihf; arch=v7; features="" ;;
    arm-unknown-linux-gnueabihf) gnu=arm-linux-gnueabihf; arch=v6; features=--no-default-features ;;
    *) die "usage: $0 aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf|arm-unknown-linux-gnueabihf" ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
cross="$repo/scripts/rpi-cross.sh"
# ARMv6 links against the glibc stubs of zig: as new as bookworm's, whose libssl3 needs >= 2.34.
export RPI_CROSS_GLIBC=${RPI_CROSS_GLIBC:-2.36}
# Size budget of the stripped binary (docs/building.md: a Pi image leaves little room).
budget=8000000

start=$(date +%s)
"$cross" build "$target" --release --locked --bin hubgate $features
echo "verify-arm: $target built in $(($(date +%s) - start)) s"
bin="${CARGO_TARGET_DIR:-$repo/target}/$target/release/hubgate"
[ -x "$bin" ] || die "no binary at $bin"

run() { "$cross" run "$target" "$bin" "$@"; }

# expect <what> <output> <fragment>...: every fragment must occur in the output.
expect() {
    local what=$1 out=$2; shift 2
    for fragment in "$@"; do
        grep -qF -- "$fragment" <<<"$out" || die "$what: expected '$fragment' in: $out"
    done
    echo "verify-arm: $what ok"
}

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
expect "--version" "$(run --version)" "hubgate $version"
expect "check -c config/demo.toml" "$(run check -c config/demo.toml 2>&1)" "config/demo.toml: OK"
# tests/cli.rs decode_prints_the_unpacked_record: Browan TBHH100, 14 °C, 45 %RH, 3.7 V
# (JSON with sorted keys, whole numbers written as integers, compared without whitespace).
expect "decode browan-tbhh100" \
    "$(run decode --codec browan-tbhh100 --fport 103 088C2E2DFFFFFFFF | tr -d ' \n')" \
    '"recType":"io.microshare.environment.unpacked"' \
    '"temperature":[{"unit":"°C","value":14}]' \
    '"humidity":[{"unit":"%RH","value":45}]' \
    '"voltage":[{"unit":"V","value":3.7}]'
# The JavaScript path up to the codec worker's seccomp filter: the worker (hubgate js-worker,
# a second process, which the kernel can only start on this host through a binfmt_misc entry
# for the target) starts, sets its limits and installs its filter before its first request,
# and refuses its codecs without one. qemu-user (7.2) answers seccomp with ENOSYS, so here the
# decode must fail closed, with the worker's reason (docs/codecs.md); it decodes on a Pi.
qemu_binfmt=/proc/sys/fs/binfmt_misc/qemu-${gnu%%-*}
if [ -z "$features" ] && [ -e "$qemu_binfmt" ]; then
    js_args=(decode --js codecs/example-door.js --fport 2 01002a57)
    if js=$(run "${js_args[@]}" 2>&1); then
        die "decode --js: decoded under qemu-user, which cannot install the worker's filter: $js"
    fi
    expect "decode --js codecs/example-door.js fails closed under qemu-user" "$js" \
        "cannot filter its system calls" "its worker died"
elif [ -z "$features" ]; then
    echo "verify-arm: decode --js NOT checked: no $qemu_binfmt to start the codec worker under qemu"
fi

stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
"$gnu-strip" -o "$stripped" "$bin"
size=$(stat -c %s "$stripped")
echo "verify-arm: $target stripped size $size bytes ($(awk -v s="$size" 'BEGIN{printf "%.2f", s/1e6}') MB), file $(stat -c %s "$bin") bytes"
[ "$size" -le "$budget" ] || die "stripped size $size exceeds the budget of $budget bytes"
echo "verify-arm: needs $(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
if [ -n "$arch" ]; then
    tag=$(readelf -A "$bin" | sed -n 's/^ *Tag_CPU_arch: //p')
    echo "verify-arm: readelf -A Tag_CPU_arch: $tag"
    case "$tag" in
        "$arch"*) ;;
        *) die "Tag_CPU_arch is '$tag', expected $arch" ;;
    esac
fi
echo "verify-arm: $target OK"
