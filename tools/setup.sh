#!/usr/bin/env bash
# Sets up everything slimasr needs on a Debian machine, idempotently:
#   1. system packages (TTS engines, real test recordings, text corpus, KenLM build tools) when apt-get is usable,
#   2. a virtual environment in .venv with the package and its test extras,
#   3. KenLM's lmplz and build_binary, compiled once from the kenlm source distribution on PyPI
#      and cached outside the clone (in $SLIMASR_CACHE, default ~/.cache/slimasr).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
CACHE=${SLIMASR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slimasr}
KENLM_VERSION=0.3.0

log() { printf '[setup] %s\n' "$*"; }

# ---- 1. system packages ---------------------------------------------------------------------------
APT_PKGS=(espeak-ng flite festival festvox-kallpc16k pocketsphinx-testdata fortunes fortunes-min libsndfile1
          cmake g++ make
          libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev
          zlib1g-dev libbz2-dev liblzma-dev libeigen3-dev
          chromium chromium-driver)        # the browser test of the server's page (headless, system binaries)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || log "apt-get update failed; trying with the current lists"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
      # the browser is optional (only its test needs it; some distributions ship it as a snap only)
      log "WARNING: apt-get could not install all of: ${missing[*]}; retrying without chromium"
      rest=()
      for p in "${missing[@]}"; do case "$p" in chromium|chromium-driver) ;; *) rest+=("$p") ;; esac; done
      [ ${#rest[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${rest[@]}" >/dev/null
    }
  else
    log "WARNING: missing system packages (${missing[*]}) and no root apt-get to install them;"
    log "         speech synthesis, lmplz or audio I/O may be unavailable (the tests that need them skip)."
  fi
fi

# ---- 2. virtual environment -----------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip wheel "setuptools<82"
log "installing slimasr and its dependencies (first time: a few minutes; torch is large)"
.venv/bin/python -m pip install -q -e '.[test,voices]'
# piper-tts pulls the CPU onnxruntime wheel, which overwrites onnxruntime-gpu's files (both install `onnxruntime`):
# keep only onnxruntime-gpu (it runs on the CPU as well)
if .venv/bin/python -m pip show -q onnxruntime >/dev/null 2>&1; then
  log "replacing the CPU onnxruntime wheel (a piper-tts dependency) by onnxruntime-gpu"
  gpu=$(.venv/bin/python -m pip show onnxruntime-gpu 2>/dev/null | sed -n 's/^Version: //p')
  .venv/bin/python -m pip uninstall -q -y onnxruntime
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "onnxruntime-gpu${gpu:+==$gpu}"
fi

# ---- 3. KenLM lmplz / build_binary ----------------------------------------------------------------
BIN="$CACHE/kenlm-$KENLM_VERSION/bin"
if [ ! -x "$BIN/lmplz" ] || [ ! -x "$BIN/build_binary" ]; then
  if command -v cmake >/dev/null 2>&1; then
    log "building KenLM lmplz from the kenlm $KENLM_VERSION source distribution (once; cached in $CACHE)"
    work=$(mktemp -d)
    # The sdist holds the whole KenLM tree (lm/builder = lmplz). Fetch it directly: `pip download --no-binary`
    # would first build its build-dependencies (cmake) from source.
    .venv/bin/python - "$KENLM_VERSION" "$work" <<'PY'
import json, sys, urllib.request
version, dest = sys.argv[1], sys.argv[2]
with urllib.request.urlopen("https://pypi.org/pypi/kenlm/json", timeout=60) as r:
    files = json.load(r)["releases"][version]
sdist = next(f for f in files if f["packagetype"] == "sdist")
urllib.request.urlretrieve(sdist["url"], f"{dest}/{sdist['filename']}")
PY
    tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
    src=$(find "$work" -maxdepth 1 -type d -name 'kenlm-*' | head -1)
    mkdir -p "$src/build"
    (cd "$src/build" && cmake .. -DCMAKE_BUILD_TYPE=Release >/dev/null && make -j"$(nproc)" lmplz build_binary >/dev/null)
    mkdir -p "$BIN"
    cp "$src/build/bin/lmplz" "$src/build/bin/build_binary" "$BIN/"
    rm -rf "$work"
  else
    log "WARNING: cmake not found; 'slimasr lm build' will be unavailable"
  fi
fi
for tool in lmplz build_binary; do
  [ -x "$BIN/$tool" ] && ln -sf "$BIN/$tool" ".venv/bin/$tool"
done
log "done"
