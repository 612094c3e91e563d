"""`ansible-doc` documents the collection the way Galaxy and an operator read it.

Role pages come from each role's meta/argument_specs.yml and filter pages from the YAML
files beside each plugins/filter module; both go stale silently, since nothing else reads
them. The expected names are read from those sources here, so a renamed option or a new
filter without a page fails this test instead of shipping an empty or wrong page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_collections.sdapi.node.plugins.filter import network, requirements

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DOC = ROOT / ".venv" / "bin" / "ansible-doc"
# The link in .cache/collections points at this checkout, so the pages reflect the working
# tree, not an installed copy of the collection.
ENV = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
           ANSIBLE_NOCOLOR="1", NO_COLOR="1")
ROLES = ["base", "kernel_tuning", "torch_env", "webui", "nginx_proxy"]
FILTERS = sorted([*network.FilterModule().filters(), *requirements.FilterModule().filters()])
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _doc(*args: str) -> str:
    out = subprocess.run([str(ANSIBLE_DOC), *args], env=ENV, cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    # ansible-doc reports a plugin it cannot document on stderr and still exits 0.
    assert "[WARNING]" not in out.stderr and "[ERROR]" not in out.stderr, out.stderr
    return ANSI.sub("", out.stdout)


def _entry_point(role: str, name: str = "main") -> dict:
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"][name]


def test_every_role_of_the_collection_is_covered():
    found = {p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml")}
    assert found == set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_role_page_shows_the_main_entry_point_and_its_options(role):
    spec = _entry_point(role)
    page = _doc("-t", "role", f"sdapi.node.{role}")

    assert re.search(rf"^> ROLE: \W*sdapi\.node\.{role}\W", page, re.M), page[:300]
    headings = re.findall(r"^ENTRY POINT: \W*(\w+)\W* - (.*)$", page, re.M)
    # validate: the same options, checked by the site's first play before any host changes.
    assert headings == [("main", spec["short_description"]),
                        ("validate", _entry_point(role, "validate")["short_description"])]

    # Top-level options are the items at the left margin (suboptions are indented), marked
    # `=` when required and `-` otherwise.
    listed = {name: mark for mark, name in re.findall(r"^([=-]) (\w+)\s", page, re.M)}
    expected = {name: "=" if opt.get("required") else "-" for name, opt in spec["options"].items()}
    assert listed == expected


def test_role_pages_as_json_carry_exactly_the_specified_options():
    docs = json.loads(_doc("-t", "role", "--json", *(f"sdapi.node.{r}" for r in ROLES)))
    assert set(docs) == {f"sdapi.node.{r}" for r in ROLES}
    for role in ROLES:
        entry_points = docs[f"sdapi.node.{role}"]["entry_points"]
        assert list(entry_points) == ["main", "validate"]
        assert set(entry_points["main"]["options"]) == set(_entry_point(role)["options"]), role
        assert entry_points["validate"]["options"] == entry_points["main"]["options"], role


def test_every_filter_is_listed_with_a_summary():
    listing = json.loads(_doc("-t", "filter", "-l", "--json", "sdapi.node"))
    assert sorted(listing) == [f"sdapi.node.{f}" for f in FILTERS]
    source = ROOT / "plugins" / "filter"
    for name in FILTERS:
        documented = yaml.safe_load((source / f"{name}.yml").read_text())["DOCUMENTATION"]
        assert listing[f"sdapi.node.{name}"] == documented["short_description"]


@pytest.mark.parametrize("name", FILTERS)
def test_filter_page_renders_with_options_examples_and_return(name):
    page = _doc("-t", "filter", f"sdapi.node.{name}")
    assert re.search(rf"^> FILTER \W*sdapi\.node\.{name}\W", page, re.M), page[:300]

    doc = json.loads(_doc("-t", "filter", "--json", f"sdapi.node.{name}"))[f"sdapi.node.{name}"]
    assert doc["doc"]["name"] == name
    assert "_input" in doc["doc"]["options"]
    # Every option the filter takes after its input is positional, in the order documented.
    positional = [p.strip() for p in doc["doc"]["positional"].split(",")]
    assert positional[0] == "_input" and set(positional) == set(doc["doc"]["options"])
    for option in positional:
        assert re.search(rf"^[=-] {option}\s", page, re.M), f"{option} is not on the page"
    assert f"sdapi.node.{name}" in doc["examples"]
    assert "_value" in doc["return"]
