"""Unit tests import the collection the way Ansible does: as ansible_collections.sdapi.node."""

import sys
from pathlib import Path

_COLLECTIONS = Path(__file__).resolve().parents[2] / ".cache" / "collections"
if not (_COLLECTIONS / "ansible_collections" / "sdapi" / "node").exists():
    raise RuntimeError(f"{_COLLECTIONS} lacks the sdapi.node link: run `make setup` first")
sys.path.insert(0, str(_COLLECTIONS))
