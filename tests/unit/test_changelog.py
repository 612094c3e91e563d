"""The release notes Galaxy shows stay consistent with what is released.

changelogs/changelog.yaml is the source antsibull-changelog builds CHANGELOG.md from, and
galaxy.yml's version is what `ansible-galaxy collection build` stamps on the artifact. A
version bump without a release entry, a hand-edited CHANGELOG.md or a malformed fragment
would each publish notes that do not match the artifact. None of these tests needs a
fragment to exist: between releases the fragments directory may be empty.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / ".venv" / "bin" / "antsibull-changelog"

if not TOOL.exists():
    raise RuntimeError(f"{TOOL} is missing: run `make setup` first")


def _tool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOOL), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def _releases() -> dict:
    return yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text())["releases"]


def _galaxy_version() -> str:
    return str(yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"])


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("-")[0].split("."))


def test_fragments_and_config_pass_lint():
    out = _tool("lint")
    # lint reports problems on stdout and still exits 0 for some of them.
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_changelog_yaml_passes_strict_lint():
    out = _tool("lint-changelog-yaml", "--strict", "changelogs/changelog.yaml")
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_first_release_is_recorded_with_its_date_and_notes():
    release = _releases()["0.1.0"]
    assert release["release_date"] == "2026-11-26"
    assert release["changes"]["release_summary"].strip()
    subjects = {entry.split(" - ", 1)[0] for entry in release["changes"]["major_changes"]}
    assert subjects == {"base", "kernel_tuning", "torch_env", "webui", "nginx_proxy",
                        "site playbook", "smoke playbook", "example inventories"}
    filters = {p["name"] for p in release["plugins"]["filter"]}
    assert filters == {"invalid_networks", "networks_of_family", "address_in_networks"}


def test_newest_release_is_the_version_galaxy_builds():
    newest = max(_releases(), key=_version_key)
    assert newest == _galaxy_version(), "galaxy.yml's version has no release in the changelog"


def test_changelog_md_is_what_the_tool_generates(tmp_path):
    # generate rewrites the output in place, so it runs on a copy of the inputs.
    shutil.copytree(ROOT / "changelogs", tmp_path / "changelogs")
    shutil.copy(ROOT / "galaxy.yml", tmp_path / "galaxy.yml")
    out = _tool("generate", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    generated = (tmp_path / "CHANGELOG.md").read_text()
    assert generated == (ROOT / "CHANGELOG.md").read_text(), "run `antsibull-changelog generate`"
