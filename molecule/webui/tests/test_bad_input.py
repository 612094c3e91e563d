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


@pytest.mark.parametrize("extra_vars,variable", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_before_any_change(extra_vars, variable):
    target = molecule_env.group_hosts("sdapi_nodes")[0]
    rc, output, recap = molecule_env.ansible_playbook(
        molecule_env.playbook("apply-role.yml"),
        extra_vars={"target": target, "role_under_test": "webui", **extra_vars},
    )
    assert rc != 0, output[-3000:]
    assert recap[target]["failed"] == 1 and recap[target]["changed"] == 0, output[-3000:]
    assert variable in output, output[-3000:]
    # The password of the colon case must not be echoed back.
    assert "b:c" not in output


def test_model_with_a_wrong_checksum_is_refused_and_leaves_nothing(host=None):
    target = molecule_env.group_hosts("sdapi_nodes")[0]
    node = molecule_env.host(target)
    rc, output, _ = molecule_env.ansible_playbook(
        molecule_env.playbook("apply-role.yml"),
        extra_vars={"target": target, "role_under_test": "webui",
                    "webui_models": [dict(GOOD_MODEL, name="bad.safetensors")]},
    )
    assert rc != 0 and "checksum" in output.lower(), output[-3000:]
    assert not node.file("/var/lib/sdapi/models/Stable-diffusion/bad.safetensors").exists
    assert node.check_output("ls -A /var/lib/sdapi/staging") == ""
