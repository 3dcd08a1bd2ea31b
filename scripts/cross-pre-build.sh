#!/bin/sh
# Runs inside a `cross` image while cross builds it (pre-build in cross.toml; cross passes the
# target triple as $1 and sets CROSS_DEB_ARCH). rdkafka's cmake build #includes <curl/curl.h>
# even without the curl feature (librdkafka#5135); nothing from curl is linked. The headers come
# from the target architecture's package because Ubuntu 16.04's curlbuild.h differs between
# 32- and 64-bit, and go to /opt/curl-include, which CFLAGS_<target> in cross.toml names: the
# images' cross gcc does not search /usr/include/<multiarch>.
set -eu
dpkg --add-architecture "$CROSS_DEB_ARCH"
apt-get update
apt-get install --assume-yes --no-install-recommends "libcurl4-openssl-dev:$CROSS_DEB_ARCH"
mkdir -p /opt/curl-include
cp -r "$(dirname "$(find /usr/include -path '*/curl/curl.h' | head -n1)")" /opt/curl-include/
