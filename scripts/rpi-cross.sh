#!/usr/bin/env bash
# rpi-cross.sh - cross-compile a Rust project for Raspberry Pi WITHOUT Docker/cross.
# (The team's shared tool, extended here with the target's libssl3.)
#
# Host: Debian 12 (bookworm) x86_64, root, rustup toolchain for x86_64 only (no
# rustup targets can be downloaded). Only the Debian apt, crates.io and PyPI
# registries are needed.
#
# How it works
#   * Debian's `rustc-web` (1.96 in bookworm-security) is installed next to rustup.
#     rustup's `cargo` stays first on PATH; the cross builds use RUSTC=/usr/bin/rustc.
#   * The prebuilt std for the target comes from Debian's libstd-rust-web-dev:<arch>
#     .deb of EXACTLY the same version as rustc-web.  The .deb is downloaded and
#     verified (InRelease signature -> Packages.xz sha256 -> .deb sha256) and
#     unpacked into a private sysroot ($PREFIX/sysroot/<triple>/usr) that is passed
#     with --sysroot via CARGO_TARGET_<T>_RUSTFLAGS.  No dpkg multiarch needed.
#   * Linker / C / C++ compilers: Debian's gcc-<gnu-triple> cross packages.
#   * OpenSSL: the target's libssl-dev + libssl3 .debs (same version as the host's libssl-dev,
#     verified the same way) in $PREFIX/openssl/<debarch>, for builds that link the Pi's libssl3.
#   * Test runner: qemu-user-static (explicit runner, binfmt_misc not required).
#   * ARMv6 (Pi Zero/1): Debian has no ARMv6 std and its armhf crt/libgcc are
#     ARMv7/Thumb-2, so those targets use `cargo zigbuild` (ziglang + cargo-zigbuild
#     from PyPI) + `-Zbuild-std` with Debian's rust-web-src (RUSTC_BOOTSTRAP=1).
#
# Usage
#   rpi-cross.sh install [--with-armv6]   # apt packages, std sysroots, curl shim (+zig, rust-src)
#   rpi-cross.sh env   <target>           # print `export ...` lines (eval "$(rpi-cross.sh env T)")
#   rpi-cross.sh build <target> [cargo args...]   # in the project dir; default args: --release
#   rpi-cross.sh run   <target> <binary> [args...]  # run a built binary under qemu-user
#
# Targets
#   aarch64-unknown-linux-gnu        Pi 3/4/5, 64-bit OS            (Debian std, gcc)
#   armv7-unknown-linux-gnueabihf    Pi 2/3/4/5, 32-bit OS          (Debian std, gcc)
#   arm-unknown-linux-gnueabihf      Pi Zero/Zero W/1 (ARMv6), glibc>=2.28 (zig + build-std)
#   arm-unknown-linux-musleabihf     Pi Zero/1, fully static        (zig + build-std)
#
# Environment knobs
#   RPI_CROSS_PREFIX=/opt/rpi-cross       where sysroots / shims / venv go
#   RPI_CROSS_ALLOW_STALE_INDEX=1         accept a Packages.xz whose sha256 does not
#                                         match the signed InRelease (mirror mid-sync);
#                                         the .deb is then only checked against that
#                                         unverified index.  Off by default.
#   RPI_CROSS_GLIBC=2.28                  glibc floor for arm-unknown-linux-gnueabihf
set -euo pipefail

PREFIX=${RPI_CROSS_PREFIX:-/opt/rpi-cross}
DEB_RUSTC=/usr/bin/rustc
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
NICE=${RPI_CROSS_NICE:-nice -n 10}

die() { echo "cross-setup: $*" >&2; exit 1; }
log() { echo "cross-setup: $*" >&2; }

# ---- target table -----------------------------------------------------------
# LINK: the target's own link flags. aarch64: segments aligned to 16 KiB, not the linker's
# default 64 KiB: the Pi 5's kernel uses 16 KiB pages, the Pi 3/4's 4 KiB, none 64 KiB, and the
# default pads the file with up to 64 KiB of zeros between the code and the data (52 KiB of
# the binary at e38a904, 4 KiB with 16 KiB; docs/building.md, "Sizes").
target_info() {   # sets: MODE DEBARCH GNU LINK (qemu-run has its own table)
    LINK=""
    case "$1" in
        aarch64-unknown-linux-gnu)     MODE=debian; DEBARCH=arm64; GNU=aarch64-linux-gnu
                                       LINK="-C link-arg=-Wl,-z,max-page-size=16384" ;;
        armv7-unknown-linux-gnueabihf) MODE=debian; DEBARCH=armhf; GNU=arm-linux-gnueabihf ;;
        arm-unknown-linux-gnueabihf)   MODE=zig;    DEBARCH=armhf; GNU=arm-linux-gnueabihf ;;
        arm-unknown-linux-musleabihf)  MODE=zig;    DEBARCH=armhf; GNU=arm-linux-gnueabihf ;;
        *) die "unsupported target '$1'" ;;
    esac
}
upper() { echo "$1" | tr 'a-z-' 'A-Z_'; }
under() { echo "$1" | tr '-' '_'; }

# ---- install ----------------------------------------------------------------
APT_PKGS=(rustc-web gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross
          gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross
          qemu-user-static binfmt-support cmake make perl pkg-config xz-utils curl gpgv libssl-dev
          file ca-certificates)

# fetch_deb <package> <debarch> <version> <dest>: download+verify a Debian package of another
# architecture and unpack it into <dest> (no dpkg multiarch needed)
fetch_deb() {
    local pkg=$1 debarch=$2 ver=$3 dest=$4
    local tmp; tmp=$(mktemp -d)
    local found=""
    # rustc-web lives in bookworm-security (newer) and bookworm (older) - try both
    for repo in "http://deb.debian.org/debian-security bookworm-security" \
                "http://deb.debian.org/debian bookworm-updates" \
                "http://deb.debian.org/debian bookworm"; do
        set -- $repo; local base=$1 suite=$2
        curl -fsSL "$base/dists/$suite/InRelease" -o "$tmp/InRelease" || continue
        gpgv --keyring "$KEYRING" "$tmp/InRelease" 2>/dev/null || die "InRelease signature check failed for $suite"
        local want; want=$(awk -v f="main/binary-$debarch/Packages.xz" \
            '/^SHA256:/{s=1;next} /^[A-Za-z]/{s=0} s && $3==f {print $1; exit}' "$tmp/InRelease")
        [ -n "$want" ] || continue
        curl -fsSL "$base/dists/$suite/main/binary-$debarch/Packages.xz" -o "$tmp/Packages.xz" || continue
        local got; got=$(sha256sum "$tmp/Packages.xz" | cut -d' ' -f1)
        if [ "$got" != "$want" ]; then
            if [ "${RPI_CROSS_ALLOW_STALE_INDEX:-0}" = 1 ]; then
                log "WARNING: $suite/$debarch Packages.xz does not match signed InRelease (stale mirror); continuing because RPI_CROSS_ALLOW_STALE_INDEX=1"
            else
                log "$suite/$debarch Packages.xz sha256 mismatch (mirror mid-sync?); skipping this suite (set RPI_CROSS_ALLOW_STALE_INDEX=1 to accept)"
                continue
            fi
        fi
        local rec; rec=$(xz -dc "$tmp/Packages.xz" | awk -v pkg="$pkg" -v v="$ver" '
            /^Package: /{p=$2} /^Version: /{vv=$2} /^Filename: /{fn=$2} /^SHA256: /{sh=$2}
            /^$/{ if (p==pkg && vv==v && r=="") r=fn" "sh; p=vv=fn=sh="" }
            END{ if (r!="") print r }')   # no early exit: with pipefail a SIGPIPE to xz would abort
        if [ -n "$rec" ]; then found="$base $rec"; break; fi
    done
    [ -n "$found" ] || die "$pkg $ver for $debarch not found in a verifiable index"
    set -- $found
    log "downloading $2"
    curl -fsSL "$1/$2" -o "$tmp/pkg.deb"
    [ "$(sha256sum "$tmp/pkg.deb" | cut -d' ' -f1)" = "$3" ] || die "sha256 mismatch for $2"
    mkdir -p "$dest"
    dpkg-deb -x "$tmp/pkg.deb" "$dest"
    rm -rf "$tmp"
}

# present <dest> <version>: <dest> was unpacked from packages of <version>; else empty it
present() {
    if [ -f "$1/.version" ] && [ "$(cat "$1/.version")" = "$2" ]; then
        log "$1 ($2) already present"; return 0; fi
    rm -rf "$1"; return 1
}

# fetch_std_deb <debarch> <version> <triple>: the target's prebuilt std from libstd-rust-web-dev
fetch_std_deb() {
    local dest="$PREFIX/sysroot/$3"
    present "$dest" "$2" && return 0
    fetch_deb libstd-rust-web-dev "$1" "$2" "$dest"
    [ -d "$dest/usr/lib/rustlib/$3/lib" ] || die "unexpected layout of libstd-rust-web-dev (no usr/lib/rustlib/$3)"
    echo "$2" > "$dest/.version"
}

# fetch_openssl <debarch> <version>: libssl-dev + libssl3 of the target architecture, for
# builds that link the Pi's libssl3 instead of vendoring OpenSSL
fetch_openssl() {
    local dest="$PREFIX/openssl/$1"
    present "$dest" "$2" && return 0
    fetch_deb libssl3 "$1" "$2" "$dest"
    fetch_deb libssl-dev "$1" "$2" "$dest"
    echo "$2" > "$dest/.version"
}

install_curl_shim() {
    # librdkafka 2.12.x (rdkafka-sys 4.10 / rdkafka 0.39) #includes <curl/curl.h> even with
    # WITH_CURL=0 (cmake '#cmakedefine01' + '#ifdef' bug, librdkafka#5135, rust-rdkafka#829).
    # Debian 12's curl headers (curl >= 7.56, no curlbuild.h) are architecture independent,
    # so the host's copy is enough (cross's Ubuntu 16.04 images differ: cross-pre-build.sh).
    [ -f "$PREFIX/include/curl/curl.h" ] && return 0
    local tmp; tmp=$(mktemp -d); chmod 755 "$tmp"
    (cd "$tmp" && apt-get download libcurl4-openssl-dev >/dev/null 2>&1) || die "apt-get download libcurl4-openssl-dev failed"
    dpkg-deb -x "$tmp"/libcurl4-openssl-dev_*.deb "$tmp/x"
    mkdir -p "$PREFIX/include"
    cp -r "$tmp"/x/usr/include/*/curl "$PREFIX/include/"
    rm -rf "$tmp"
}

install_zig() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rust-web-src >/dev/null
    if [ ! -x "$PREFIX/venv/bin/cargo-zigbuild" ]; then
        python3 -m venv "$PREFIX/venv" 2>/dev/null || {
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >/dev/null
            /usr/bin/python3 -m venv "$PREFIX/venv"; }
        "$PREFIX/venv/bin/pip" install -q ziglang cargo-zigbuild
    fi
}

write_runners() {
    mkdir -p "$PREFIX/bin"
    # Use the cross libc that matches the cross ld.so.  If multiarch libc6:arm64/armhf
    # is also installed, plain `-L /usr/<gnu>` would mix the cross ld.so with the
    # multiarch libc.so.6 (qemu falls back to host paths) and threaded programs hang.
    # The target's libssl3 (fetch_openssl) is found through LD_LIBRARY_PATH as well.
    { echo '#!/bin/sh'; echo "ssl=$PREFIX/openssl"; cat; } > "$PREFIX/bin/qemu-run" <<'EOF'
# qemu-run <target> <binary> [args]
t=$1; shift
case "$t" in
  aarch64-unknown-linux-gnu)     exec env QEMU_LD_PREFIX=/usr/aarch64-linux-gnu QEMU_SET_ENV=LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib:$ssl/arm64/usr/lib/aarch64-linux-gnu qemu-aarch64-static -cpu ${QEMU_CPU:-cortex-a53} "$@" ;;
  armv7-unknown-linux-gnueabihf) exec env QEMU_LD_PREFIX=/usr/arm-linux-gnueabihf QEMU_SET_ENV=LD_LIBRARY_PATH=/usr/arm-linux-gnueabihf/lib:$ssl/armhf/usr/lib/arm-linux-gnueabihf qemu-arm-static -cpu ${QEMU_CPU:-cortex-a7} "$@" ;;
  # Debian's armhf libc is ARMv7, so an ARMv6 glibc binary can only be smoke-tested on an ARMv7 CPU model here
  arm-unknown-linux-gnueabihf)   exec env QEMU_LD_PREFIX=/usr/arm-linux-gnueabihf QEMU_SET_ENV=LD_LIBRARY_PATH=/usr/arm-linux-gnueabihf/lib:$ssl/armhf/usr/lib/arm-linux-gnueabihf qemu-arm-static -cpu ${QEMU_CPU:-max} "$@" ;;
  # static musl binary: run on the real Pi Zero/1 CPU model (ARM1176JZF-S)
  arm-unknown-linux-musleabihf)  exec qemu-arm-static -cpu ${QEMU_CPU:-arm1176} "$@" ;;
  *) echo "qemu-run: unknown target $t" >&2; exit 2 ;;
esac
EOF
    chmod +x "$PREFIX/bin/qemu-run"
    for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf arm-unknown-linux-gnueabihf arm-unknown-linux-musleabihf; do
        printf '#!/bin/sh\nexec %s %s "$@"\n' "$PREFIX/bin/qemu-run" "$t" > "$PREFIX/bin/qemu-run-$t"
        chmod +x "$PREFIX/bin/qemu-run-$t"
    done
}

cmd_install() {
    local with_armv6=0
    [ "${1:-}" = "--with-armv6" ] && with_armv6=1
    [ "$(id -u)" = 0 ] || die "install needs root"
    local t0; t0=$(date +%s)
    apt-get update -q >/dev/null || log "WARNING: apt-get update reported errors (continuing)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PKGS[@]}" >/dev/null
    local ver; ver=$(dpkg-query -W -f='${Version}' rustc-web)
    log "rustc-web $ver: $($DEB_RUSTC -V)"
    fetch_std_deb arm64 "$ver" aarch64-unknown-linux-gnu
    fetch_std_deb armhf "$ver" armv7-unknown-linux-gnueabihf
    local ssl; ssl=$(dpkg-query -W -f='${Version}' libssl-dev)
    fetch_openssl arm64 "$ssl"
    fetch_openssl armhf "$ssl"
    install_curl_shim
    [ $with_armv6 = 1 ] && install_zig
    write_runners
    log "install finished in $(( $(date +%s) - t0 )) s (prefix $PREFIX)"
}

# ---- env / build / run ------------------------------------------------------
cmd_env() {
    local t=${1:?target}; target_info "$t"
    local TU; TU=$(upper "$t"); local tl; tl=$(under "$t")
    echo "export RUSTC=$DEB_RUSTC"
    echo "export CARGO_TARGET_${TU}_RUNNER=$PREFIX/bin/qemu-run-$t"
    if [ "$t" = arm-unknown-linux-musleabihf ]; then   # static: only vendored OpenSSL fits
        echo "export CFLAGS_${tl}=\"-I$PREFIX/include\""
    else
        # The target's libssl3 for openssl-sys (ignored by builds that vendor OpenSSL), and
        # its multiarch opensslconf.h/configuration.h for librdkafka's C compile.
        local ssl="$PREFIX/openssl/$DEBARCH/usr"
        [ -d "$ssl/lib/$GNU" ] || die "no libssl-dev for $DEBARCH - run: $0 install"
        echo "export ${TU}_OPENSSL_LIB_DIR=$ssl/lib/$GNU ${TU}_OPENSSL_INCLUDE_DIR=$ssl/include"
        echo "export CFLAGS_${tl}=\"-I$PREFIX/include -I$ssl/include/$GNU\""
    fi
    if [ "$MODE" = debian ]; then
        [ -d "$PREFIX/sysroot/$t/usr/lib/rustlib/$t/lib" ] || die "no std for $t - run: $0 install"
        echo "export CARGO_TARGET_${TU}_LINKER=$GNU-gcc"
        echo "export CARGO_TARGET_${TU}_RUSTFLAGS=\"--sysroot=$PREFIX/sysroot/$t/usr${LINK:+ $LINK}\${EXTRA_RUSTFLAGS:+ \$EXTRA_RUSTFLAGS}\""
        echo "export CC_${tl}=$GNU-gcc CXX_${tl}=$GNU-g++ AR_${tl}=$GNU-ar"
    else
        [ -x "$PREFIX/venv/bin/cargo-zigbuild" ] || die "zig not installed - run: $0 install --with-armv6"
        echo "export PATH=$PREFIX/venv/bin:\$PATH"
        echo "export RUSTC_BOOTSTRAP=1"   # needed for -Zbuild-std with a stable rustc
        [ "$t" = arm-unknown-linux-musleabihf ] && \
            echo "export CARGO_TARGET_${TU}_RUSTFLAGS=\"-C link-self-contained=no\${EXTRA_RUSTFLAGS:+ \$EXTRA_RUSTFLAGS}\""
    fi
    [ -n "${RUSTFLAGS:-}" ] && log "WARNING: RUSTFLAGS is set; it overrides CARGO_TARGET_*_RUSTFLAGS (the --sysroot flag). Use EXTRA_RUSTFLAGS instead."
    true
}

cmd_build() {
    local t=${1:?target}; shift; target_info "$t"
    eval "$(cmd_env "$t")"
    [ $# -eq 0 ] && set -- --release
    if [ "$MODE" = debian ]; then
        $NICE cargo build --target "$t" "$@"
    else
        local zt=$t
        [ "$t" = arm-unknown-linux-gnueabihf ] && zt="$t.${RPI_CROSS_GLIBC:-2.28}"
        $NICE cargo zigbuild -Zbuild-std=std,panic_abort --target "$zt" "$@"
    fi
}

cmd_run() {
    local t=${1:?target}; shift
    exec "$PREFIX/bin/qemu-run" "$t" "$@"
}

case "${1:-help}" in
    install) shift; cmd_install "$@" ;;
    env)     shift; cmd_env "$@" ;;
    build)   shift; cmd_build "$@" ;;
    run)     shift; cmd_run "$@" ;;
    *) sed -n '2,/^set -euo pipefail/{/^set/d;p}' "$0"; exit 1 ;;
esac
