"""sdapi_testlib.double publishes the webui test double as the scenarios, demo and
benchmarks expect it: v1 is the double as it is, every other release a child of v1."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sdapi_testlib import double


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def test_releases_are_children_of_v1_and_v1_never_moves(tmp_path):
    repo = tmp_path / "webui-double.git"
    assert double.publish_repo(repo, ["broken"]) == ["v1", "broken"]
    v1 = _git(repo, "rev-parse", "v1^{commit}")
    assert double.publish_repo(repo, ["broken", "v2"]) == ["v2"]
    assert double.publish_repo(repo, ["broken", "v2"]) == []
    assert _git(repo, "rev-parse", "v1^{commit}") == v1
    for release in ("broken", "v2"):
        assert _git(repo, "rev-parse", f"{release}^^{{commit}}") == v1
    assert 'VERSION = "v2-double"' in _git(repo, "show", "v2:launch.py")
    assert "broken on purpose" in _git(repo, "show", "broken:modules/cmd_args.py")
    assert "broken on purpose" not in _git(repo, "show", "v2:modules/cmd_args.py")
    tracked = _git(repo, "ls-tree", "-r", "--name-only", "v1").split()
    assert "launch.py" in tracked and not [p for p in tracked if "__pycache__" in p]
