#!/usr/bin/env bash
# Prepares a Debian 12 controller (run as root) for the demo and the tests: the host
# packages podman needs, the pinned controller virtualenv, the collection link and the
# test images. Each step is skipped when already done, so a re-run takes seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/tests/podman/containers.conf}"

step() { printf '\n== %s\n' "$*"; }

step "host packages"
need=()
for pair in podman:podman runc:runc debootstrap:debootstrap nft:nftables openssl:openssl git:git shellcheck:shellcheck; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
python="${SDAPI_PYTHON:-python3}"
"$python" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${need[*]}: run as root (or install them) first" >&2; exit 1
  fi
  echo "installing ${need[*]}"
  apt-get update -qq
  # With recommends: podman then brings netavark, iptables and catatonit, the network stack
  # its port publishing and scenario networks use.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "podman, runc, debootstrap, nft, openssl, git, shellcheck and python venv present"
fi

step "controller virtualenv (.venv)"
"$python" - <<'PY'
import sys
if not ((3, 11) <= sys.version_info[:2] < (3, 14)):
    sys.exit(f"Python 3.11-3.13 is needed for ansible 12; {sys.executable} is {sys.version.split()[0]}")
PY
stamp=".venv/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "up to date with requirements.txt"
else
  rm -rf .venv
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip 2> >(grep -v "^WARNING: Location" >&2)
  .venv/bin/python -m pip install --quiet -r requirements.txt 2> >(grep -v "^WARNING: Location" >&2)
  echo "$want" > "$stamp"
  echo "installed: $(.venv/bin/ansible --version | head -1)"
fi

step "collection link (.cache/collections/ansible_collections/sdapi/node)"
mkdir -p .cache/collections/ansible_collections/sdapi
ln -sfn ../../../.. .cache/collections/ansible_collections/sdapi/node
echo "sdapi.node -> $root"

step "webui test double's virtualenv (.cache/double-venv)"
# The double loads checkpoints with torch like the real webui; its unit tests run it with
# the 190 MB CPU build of torch, not the multi-GB CUDA one. The same virtualenv makes the
# random-weight SD1.5 checkpoint for the real webui (sdapi_testlib/sd15_checkpoint.py), whose
# ldm modules need a little more: tests/lib/checkpoint-requirements.txt. The stamp covers both
# files, so a change to either rebuilds the virtualenv.
stamp=".cache/double-venv/.requirements.sha256"
want="$(cat tests/webui_double/requirements_versions.txt tests/lib/checkpoint-requirements.txt \
  | sha256sum | cut -d' ' -f1)"
if [ -x .cache/double-venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "up to date"
else
  rm -rf .cache/double-venv
  "$python" -m venv .cache/double-venv
  .cache/double-venv/bin/python -m pip install --quiet torch==2.13.0 \
    -r tests/webui_double/requirements_versions.txt -r tests/lib/checkpoint-requirements.txt \
    2> >(grep -v "^WARNING: Location" >&2)
  echo "$want" > "$stamp"
  echo "installed: $(.cache/double-venv/bin/pip list 2>/dev/null | grep -E '^(torch|safetensors) ' | tr -s ' ' | paste -sd, -)"
fi

step "test images"
scripts/build-test-images.sh "$@"
