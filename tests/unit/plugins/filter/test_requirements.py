"""The requirement edits that let an operator change single pins of a fork's requirements."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.sdapi.node.plugins.filter import requirements

# The head of A1111 v1.10.1's requirements_versions.txt, as it ships.
A1111 = """setuptools==69.5.1  # temp fix for compatibility with some old packages
GitPython==3.1.32
Pillow==9.5.0
open-clip-torch==2.20.0
torch
transformers==4.30.2
"""


def _lines(text):
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def test_a_pin_is_replaced_and_the_old_line_is_kept_as_a_comment():
    out = requirements.requirements_override(A1111, {"setuptools": "80.9.0"})
    assert _lines(out)[0] == "setuptools==80.9.0"
    assert "override of: setuptools==69.5.1" in out.splitlines()[0]
    assert _lines(out)[1:] == _lines(A1111)[1:]


def test_names_compare_as_pip_compares_them():
    out = requirements.requirements_override(A1111, {"Open_Clip.Torch": ">=2.20,<3", "gitpython": "3.1.43"})
    assert "Open_Clip.Torch>=2.20,<3" in _lines(out)
    assert "gitpython==3.1.43" in _lines(out)
    assert "open-clip-torch==2.20.0" not in _lines(out)


@pytest.mark.parametrize("value", [None, ""])
def test_null_or_empty_drops_the_line(value):
    out = requirements.requirements_override(A1111, {"transformers": value})
    assert not any(line.startswith("transformers") for line in _lines(out))
    assert "# dropped by sdapi.node: transformers==4.30.2" in out


def test_a_name_the_file_lacks_is_added_and_a_missing_drop_is_ignored():
    out = requirements.requirements_override(A1111, {"joblib": "1.4.2", "spandrel": None})
    assert _lines(out) == _lines(A1111) + ["joblib==1.4.2"]


def test_unnamed_lines_and_options_are_kept():
    text = "-r base.txt\n--index-url https://mirror.example/simple\n\n# note\ntorch\n"
    assert requirements.requirements_override(text, {"torch": "2.14.1"}).splitlines()[:4] == text.splitlines()[:4]


def test_no_overrides_keeps_the_text():
    assert requirements.requirements_override(A1111, {}) == A1111
    assert requirements.requirements_override(A1111, None) == A1111


def test_pip_pins_reads_bare_versions_as_exact_and_keeps_specifiers():
    assert requirements.pip_pins({"setuptools": "<81", "numpy": "1.26.2", "x": "~=1.0"}) == [
        "setuptools<81", "numpy==1.26.2", "x~=1.0"]
    assert requirements.pip_pins(None) == []


@pytest.mark.parametrize("name", ["bad name", "-r", "pkg==1"])
def test_a_bad_package_name_fails_naming_it(name):
    with pytest.raises(AnsibleFilterError, match="not a package name"):
        requirements.pip_pins({name: "1.0"})
