#!/usr/bin/env bash
# Installs everything bupo's build, tests and analysis need on Debian 12: the packages in
# env/debian-packages.txt and a Python venv (.venv) with env/python-requirements.txt.
# Idempotent and quiet when everything is present; fails loudly, naming what could not be installed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'env/setup.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# ---- Debian packages
mapfile -t pkgs < <(grep -vE '^\s*(#|$)' "$root/env/debian-packages.txt")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "not root and no sudo: install these packages first: ${missing[*]}"
    sudo=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null || die "apt-get update failed"
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/bupo-apt.log 2>&1 ||
    { tail -20 /tmp/bupo-apt.log >&2; die "apt-get install failed for: ${missing[*]} (log: /tmp/bupo-apt.log)"; }
  for p in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || die "package $p is still not installed"
  done
fi

# ---- Python venv for analysis and the h5py test
venv="$root/.venv"
py=${BUPO_PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  "$py" -m venv "$venv" || die "could not create a venv with $py (install python3-venv)"
fi
if ! "$venv/bin/python" -c 'import numpy, h5py, matplotlib' 2>/dev/null; then
  say "installing Python packages into .venv: $(grep -vE '^\s*(#|$)' "$root/env/python-requirements.txt" | tr '\n' ' ')"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/env/python-requirements.txt" ||
    die "pip install -r env/python-requirements.txt failed"
  "$venv/bin/python" -c 'import numpy, h5py, matplotlib' || die "Python packages installed but not importable"
fi
