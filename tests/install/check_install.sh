#!/usr/bin/env bash
# Installs the built weft into a temporary prefix, then builds and runs a
# small program against it with find_package(weft) and with pkg-config.
set -euo pipefail
build_dir=$1
src_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$src_dir/tests/install/consumer" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer" "$work/a.db" | grep -q '^ok '
"$work/build/consumer_static" "$work/b.db" | grep -q '^ok '
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig:$work/prefix/lib/x86_64-linux-gnu/pkgconfig"
cc -o "$work/pc" "$src_dir/tests/install/consumer/main.c" $(pkg-config --cflags --libs weft) \
   -Wl,-rpath,"$work/prefix/lib" -Wl,-rpath,"$work/prefix/lib/x86_64-linux-gnu"
"$work/pc" "$work/c.db" | grep -q '^ok '
echo "install check: find_package (shared, static) and pkg-config consumers all ok"
