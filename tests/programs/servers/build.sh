#!/bin/sh
# Compile the C servers of this folder: build.sh [OUTDIR]   (default: ./build beside this script)
#   CC and CFLAGS may be overridden; the tests use plain `cc -O2`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build}
mkdir -p "$out"
for src in "$here"/*.c; do
    name=$(basename "$src" .c)
    ${CC:-cc} ${CFLAGS:--O2 -Wall -Wextra} -o "$out/$name" "$src"
    echo "$out/$name"
done
