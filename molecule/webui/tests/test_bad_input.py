"""Bad input to sdapi.node.webui fails before anything changes, naming the variable."""

import pytest

from sdapi_testlib import molecule_env

testinfra_hosts = ["local://"]

GOOD_MODEL = {"name": "x.safetensors", "url": "file:///srv/models/tiny.safetensors", "sha256": "0" * 64}
BAD = [
    ("forbidden flag", {"webui_extra_flags": ["--enable-insecure-extension-access"]}, "webui_extra_flags"),
    ("remote stop flag", {"webui_extra_flags": ["--api-server-stop"]}, "webui_extra_flags"),
    ("flag the role owns", {"webui_extra_flags": ["--port=9000"]}, "webui_extra_flags"),
    ("port clash", {"webui_instances": [{"gpu": "0", "port": 7870}, {"gpu": "1", "port": 7870}]},
     "webui_instances"),
    ("missing checksum", {"webui_models": [{"name": "x.safetensors", "url": "file:///srv/x"}]}, "webui_models"),
    ("checksum not sha256", {"webui_models": [dict(GOOD_MODEL, sha256="abc")]}, "webui_models"),
    ("unknown attention", {"webui_attention": "flash"}, "webui_attention"),
    ("xformers on cpu", {"webui_attention": "xformers"}, "webui_attention"),
    ("colon in password", {"webui_api_auth": [{"user": "a", "password": "b:c"}]}, "webui_api_auth"),
]


@pytest.fixture(scope="module")
def results():
    """Every case applied once, side by side: each must fail before touching the host."""
    target = molecule_env.group_hosts("sdapi_nodes")[0]
    return target, molecule_env.apply_role_cases("webui", target, {b[0]: b[1] for b in BAD})


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_before_any_change(results, case):
    target, by_name = results
    molecule_env.assert_refused_before_change(by_name[case[0]], target, case[2])
    # The password of the colon case must not be echoed back.
    assert "b:c" not in by_name[case[0]][1]


def test_model_with_a_wrong_checksum_is_refused_and_leaves_nothing(host=None):
    target = molecule_env.group_hosts("sdapi_nodes")[0]
    node = molecule_env.host(target)
    rc, output, _recap = molecule_env.apply_role(
        "webui", target, {"webui_models": [dict(GOOD_MODEL, name="bad.safetensors")]}
    )
    assert rc != 0 and "checksum" in output.lower(), output[-3000:]
    assert not node.file("/var/lib/sdapi/models/Stable-diffusion/bad.safetensors").exists
    assert node.check_output("ls -A /var/lib/sdapi/staging") == ""
