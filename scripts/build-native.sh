#!/usr/bin/env bash
# Build hdsvault's one compiled module, the journal verifier's inner loop
# (src/hdsvault/journal/_leafwalk.c), next to its sources for the project's Python.
#
# Needs gcc, the Python headers, and the SQLite and OpenSSL headers (libsqlite3-dev,
# libssl-dev: scripts/setup-system.sh installs them). Without them hdsvault still works:
# `journal verify` falls back to its pure-Python walk (about ten times slower) and says so.
# Under CI (CI set) a failed build is an error: the tests of the compiled path must run.
#
# Usage: scripts/build-native.sh PYTHON
set -uo pipefail
python="${1:?usage: build-native.sh PYTHON}"
src=src/hdsvault/journal/_leafwalk.c
read -r include suffix < <("$python" -c 'import sysconfig as s; print(s.get_paths()["include"], s.get_config_var("EXT_SUFFIX"))')
out="src/hdsvault/journal/_leafwalk${suffix}"
if [[ -f "$out" && "$out" -nt "$src" && "$out" -nt "$0" ]]; then
    exit 0
fi
if gcc -O2 -fPIC -shared -Wall -Wextra -Werror -Wno-deprecated-declarations \
    -I"$include" "$src" -o "$out.tmp" -lsqlite3 -lcrypto; then
    mv "$out.tmp" "$out"
    echo "build-native: built $out"
else
    rm -f "$out.tmp"
    echo "build-native: could not build $out; journal verify will use its Python walk" >&2
    [[ -z "${CI:-}" ]] || exit 1
fi
