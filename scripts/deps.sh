#!/bin/sh
# deps.sh: installs the Debian 12 packages obsd needs to build, test and fuzz.
# Idempotent: does nothing when everything is already installed.
# liblttng-ust-dev and lttng-tools are only for bench/producer_cost, which
# measures an LTTng-UST tracepoint in the same run as obsd_span(). chromium,
# python3-html5lib and python3-prometheus-client let the obsctl report and
# metrics tests render and parse what obsctl writes (they skip without them).
set -eu

PACKAGES="build-essential cmake pkg-config git
liblmdb-dev lmdb-utils liburing-dev check libpcre2-dev libutf8proc-dev libjansson-dev
libinih-dev libncurses-dev zlib1g-dev libmicrohttpd-dev
clang libclang-rt-14-dev tmux procps python3
liblttng-ust-dev lttng-tools
chromium python3-html5lib python3-prometheus-client"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "deps.sh: installing:$missing" >&2
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
