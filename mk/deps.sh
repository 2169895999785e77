#!/bin/sh
# Installs the Debian packages the build needs, only when one is missing.
set -eu
pkgs="gcc make pkg-config autoconf automake libevent-dev libjansson-dev node-llhttp libssl-dev libnghttp2-dev nghttp2-client clang libclang-rt-14-dev openssl curl"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing Debian packages:$missing; run as root or: sudo apt-get install -y$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q $missing
