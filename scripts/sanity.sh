#!/usr/bin/env bash
# Runs `ansible-test sanity` on the working tree, committed or not, the way Galaxy's import
# and the Ansible community's checks see the collection. Extra arguments go to
# ansible-test (e.g. `scripts/sanity.sh --test pylint`). Prints the elapsed seconds and
# exits with ansible-test's status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
started=$SECONDS

# ansible-test makes a venv per sanity test and seeds pip in each with a get-pip script it
# downloads from a host this network cannot reach; a copy cached at this path is used
# instead of the download. The version in the name is the pip that ansible-core pins.
get_pip="$HOME/.ansible/test/cache/get_pip_24_2.py"
if [ ! -f "$get_pip" ]; then
  mkdir -p "$(dirname "$get_pip")"
  cat > "$get_pip.new" <<'PY'
"""Offline stand-in for get-pip.py, written by sdapi.node's scripts/sanity.sh.

The real script is not reachable from here. The interpreter's bundled pip does the
bootstrap, then that pip fetches the version ansible-test asked for from the package index.
"""
import ensurepip
import ssl
import subprocess
import sys

ensurepip.bootstrap()
# ansible-test runs pip with PIP_CONFIG_FILE=/dev/null and a trimmed environment, so the CA
# bundle that trusts the HTTPS proxy has to be named on the command line.
ca_bundle = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
# These two flags belong to get-pip.py itself; `pip install` would reject them.
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--cert", ca_bundle, *args]))
PY
  mv "$get_pip.new" "$get_pip"
  echo "installed the offline get-pip stand-in at $get_pip"
fi

# ansible-test only accepts a collection at .../ansible_collections/<namespace>/<name>. The
# copy lives under .cache/ rather than a fresh temp dir so that its tests/output/ (which
# holds the --venv virtualenv ansible-test builds) survives and later runs start warm;
# everything else in it is laid anew from the working tree on every run.
dest="$root/.cache/sanity/ansible_collections/sdapi/node"
mkdir -p "$dest/tests"
find "$dest" -mindepth 1 -maxdepth 1 ! -name tests ! -name .git -exec rm -rf {} +
find "$dest/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} +
# Tracked and untracked-but-not-ignored files, less tracked ones deleted in the work tree.
comm -z -23 <(git ls-files -z -co --exclude-standard | sort -z) <(git ls-files -z --deleted | sort -z) \
  | tar --null -T - -cf - | tar -C "$dest" -xf -

# The copy sits inside this checkout, and ansible-test lists a collection's files with the
# nearest enclosing git work tree; .cache/ is ignored there, so the outer repository would
# report no files at all. A repository of its own (nothing committed: ansible-test takes
# untracked files too) makes the copy its own root and applies the copied .gitignore.
[ -d "$dest/.git" ] || git -C "$dest" init --quiet

cd "$dest"
# The collections link that the unit tests use points at the checkout itself; it must not
# compete with the copy under test.
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS
rc=0
"$root/.venv/bin/ansible-test" sanity --venv --python 3.11 "$@" || rc=$?
echo "sanity: exit $rc after $((SECONDS - started))s"
exit "$rc"
