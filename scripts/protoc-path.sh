#!/usr/bin/env bash
# Prints the absolute path of a working `protoc` on stdout (and nothing else).
#
# Why: our own build.rs takes protoc from the `protoc-bin-vendored` crate, but
# the dev-dependency `etcd-client` compiles its protos in its build script and
# needs `PROTOC` (or a protoc on PATH). The Makefile exports what this prints.
#
# Order of preference:
#   1. $PROTOC, if it is already set and runs;
#   2. the binary shipped in the `protoc-bin-vendored-<platform>` crate in the
#      cargo registry (the version in Cargo.lock first), after `cargo fetch`
#      if it is not there yet;
#   3. `protoc` on PATH;
#   4. `apt-get install protobuf-compiler` (as root, or through sudo).
# All diagnostics go to stderr. Exits non-zero if no protoc can be had.
set -euo pipefail

log() { echo "protoc-path: $*" >&2; }

runs() { [ -n "${1:-}" ] && [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# 1. Caller's choice.
if runs "${PROTOC:-}"; then
    echo "$PROTOC"
    exit 0
fi

# 2. The vendored binary in the cargo registry.
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) platform=linux-x86_64 ;;
    Linux-aarch64 | Linux-arm64) platform=linux-aarch_64 ;;
    Linux-i?86) platform=linux-x86_32 ;;
    Darwin-x86_64) platform=macos-x86_64 ;;
    Darwin-arm64) platform=macos-aarch_64 ;;
    *) platform= ;;
esac

find_vendored() {
    local registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
    [ -n "$platform" ] && [ -d "$registry" ] || return 1
    local crate="protoc-bin-vendored-$platform"
    local locked=""
    if [ -f "$root_dir/Cargo.lock" ]; then
        locked="$(grep -A1 "^name = \"$crate\"\$" "$root_dir/Cargo.lock" |
            sed -n 's/^version = "\(.*\)"$/\1/p' | sed -n 1p)"
    fi
    local candidates
    candidates="$(find "$registry" -maxdepth 4 -path "*/$crate-*/bin/protoc" 2>/dev/null | sort -V -r)"
    local path
    # The version Cargo.lock asks for first, then the newest of the others.
    for path in $(printf '%s\n' "$candidates" | grep -F "/$crate-$locked/" || true) $candidates; do
        if runs "$path"; then
            echo "$path"
            return 0
        fi
    done
    return 1
}

if path="$(find_vendored)"; then
    echo "$path"
    exit 0
fi

if [ -n "$platform" ] && command -v cargo >/dev/null 2>&1; then
    log "protoc-bin-vendored-$platform is not in the cargo registry yet; running cargo fetch"
    host="$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')"
    # --locked: never rewrite Cargo.lock from here (make verify must not write).
    if (cd "$root_dir" && cargo fetch --locked ${host:+--target "$host"} >&2); then
        if path="$(find_vendored)"; then
            echo "$path"
            exit 0
        fi
    else
        log "cargo fetch failed"
    fi
fi

# 3. PATH.
if path="$(command -v protoc 2>/dev/null)" && runs "$path"; then
    echo "$path"
    exit 0
fi

# 4. Debian's package.
if command -v apt-get >/dev/null 2>&1; then
    sudo=()
    can_install=yes
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo=(sudo -n); else can_install=no; fi
    fi
    if [ "$can_install" = yes ]; then
        log "installing protobuf-compiler with apt-get"
        apt_opts=(-q -y --no-install-recommends -o DPkg::Lock::Timeout=120 -o Acquire::Retries=3)
        if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" protobuf-compiler >&2; then
            "${sudo[@]}" apt-get update -q -o Acquire::Retries=3 >&2 ||
                { sleep 5; "${sudo[@]}" apt-get update -q -o Acquire::Retries=3 >&2; } || true
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" protobuf-compiler >&2 || true
        fi
        if path="$(command -v protoc 2>/dev/null)" && runs "$path"; then
            echo "$path"
            exit 0
        fi
    fi
fi

log "no protoc found: not in the cargo registry (protoc-bin-vendored-${platform:-?}), not on PATH, and apt-get could not install protobuf-compiler"
exit 1
