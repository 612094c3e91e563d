"""Unit tests import the collection the way Ansible does: as ansible_collections.sdapi.node."""

import os
import sys
from pathlib import Path

_COLLECTIONS = Path(__file__).resolve().parents[2] / ".cache" / "collections"
if not (_COLLECTIONS / "ansible_collections" / "sdapi" / "node").exists():
    raise RuntimeError(f"{_COLLECTIONS} lacks the sdapi.node link: run `make setup` first")
sys.path.insert(0, str(_COLLECTIONS))
# The tests call ansible-inventory, ansible-doc and friends by name: the project's pinned
# ones, also when pytest is started without the virtualenv activated.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
