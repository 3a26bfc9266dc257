#!/usr/bin/env bash
# Builds corral's container image (deploy/Dockerfile) around a statically linked binary.
#
#   scripts/image.sh                  build, tag corral:<version> and corral:latest
#   scripts/image.sh --tag NAME:TAG   tag with these instead (repeatable)
#   scripts/image.sh --quiet          print only the image id (docker build -q)
#   scripts/image.sh --dev            unoptimized binary (cargo's dev profile, no debug
#                                     info): builds in a quarter of the time; for tests
#   scripts/image.sh --binary-only    build the static binary only; print its path
#   scripts/image.sh --prebuild       --dev --binary-only, but only when a Docker engine
#                                     answers (`make test` runs this before the docker tests,
#                                     which must not spend their time limit compiling)
#
# The binary is glibc with +crt-static: the only Rust target installed here is
# x86_64-unknown-linux-gnu, and no base image can be pulled, so the image is FROM scratch
# with nothing but the binary and three files in /etc. Static glibc resolves host names
# itself (its files and dns sources are built in since 2.34), which peer URLs with DNS names
# need; deploy/rootfs/etc/nsswitch.conf pins the lookup to those two sources.
#
# The build gets its own target directory (target/image): the static flags change every
# target crate's fingerprint, so sharing target/ would rebuild them back and forth with the
# ordinary builds. --target keeps RUSTFLAGS off build scripts and proc macros, which must stay
# dynamic to run on the host. Profile: release without debug info (faster to build, and a
# smaller image); symbols stay, so backtraces still name functions. Cold, on 2 busy cores,
# the release build takes ~8.5 min and --dev ~2 min (release at opt-level 1: ~5.5 min),
# which is why the tests use --dev: they check the image and the deployment, not speed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGET=x86_64-unknown-linux-gnu
TARGET_DIR="${CORRAL_IMAGE_TARGET_DIR:-target/image}"
CARGO="${CARGO:-cargo}"

tags=()
quiet=0
mode=image
profile=release
while [ $# -gt 0 ]; do
    case "$1" in
    --tag) [ $# -ge 2 ] || { echo "image.sh: --tag needs a value" >&2; exit 2; }
        tags+=("$2"); shift 2 ;;
    --quiet | -q) quiet=1; shift ;;
    --dev) profile=dev; shift ;;
    --binary-only) mode=binary; shift ;;
    --prebuild) mode=prebuild; profile=dev; shift ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "image.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "image.sh: $*" >&2; }

if [ "$profile" = dev ]; then
    BINARY="$TARGET_DIR/$TARGET/debug/corral"
else
    BINARY="$TARGET_DIR/$TARGET/release/corral"
fi

if [ "$mode" = prebuild ] && ! docker info >/dev/null 2>&1; then
    log "docker engine not available: not building the static binary (the docker tests skip)"
    exit 0
fi

build_binary() {
    log "building the static corral binary ($BINARY)"
    # stdout is the caller's (an image id or a path); cargo's progress goes to stderr anyway.
    RUSTFLAGS="-C target-feature=+crt-static" \
        CARGO_TARGET_DIR="$TARGET_DIR" \
        CARGO_PROFILE_RELEASE_DEBUG=false \
        CARGO_PROFILE_DEV_DEBUG=false \
        "$CARGO" build --locked --profile "$profile" --target "$TARGET" --bin corral >&2
    # A dynamic binary would build an image that cannot start (no loader, no libc in it).
    # readelf's output is read whole first: `readelf | grep -q` under pipefail fails with
    # SIGPIPE when grep stops at the first match, which would hide a dynamic binary.
    local headers
    headers="$(readelf -l -d "$BINARY")"
    if grep -q -e 'INTERP' -e '(NEEDED)' <<<"$headers"; then
        log "$BINARY is not statically linked"
        readelf -d "$BINARY" | grep '(NEEDED)' >&2 || true
        exit 1
    fi
}

build_binary
if [ "$mode" != image ]; then
    echo "$BINARY"
    exit 0
fi

if [ "${#tags[@]}" -eq 0 ]; then
    version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | sed -n 1p)"
    tags=("corral:${version:-dev}" "corral:latest")
fi

# The build context: only what the Dockerfile copies (a few MB), not the repository.
ctx="$(mktemp -d "${TMPDIR:-/tmp}/corral-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
cp deploy/Dockerfile "$ctx/Dockerfile"
cp -R deploy/rootfs "$ctx/rootfs"
chmod -R u=rwX,go=rX "$ctx/rootfs"
install -m 0755 "$BINARY" "$ctx/corral"
mkdir -m 0755 "$ctx/data"

tag_args=()
for t in "${tags[@]}"; do tag_args+=(--tag "$t"); done
if [ "$quiet" -eq 1 ]; then
    docker build --quiet "${tag_args[@]}" "$ctx"
else
    docker build "${tag_args[@]}" "$ctx" >&2
    log "built ${tags[*]}"
    printf '%s\n' "${tags[@]}"
fi
