"""The REAL AUTOMATIC1111 v1.10.1, deployed by sdapi.node.site with the webui role's
defaults plus local mirrors (molecule/real_webui), checked the way an operator would:
a txt2img through the HTTPS proxy with a client key returns a PNG that A1111 made from the
checkpoint the role installed, no key is refused, the journal shows the model load and no
credential, kill -9 comes back ready, and a model added to the inventory is usable without
a restart. Idempotence and check mode run as Molecule steps. Figures (load time and its
breakdown, latency, RSS) are printed past pytest's capture into the verifier's log."""

from __future__ import annotations

import base64
import json
import re
import struct
import time
from pathlib import Path

import requests
from sdapi_testlib import molecule_env, site

KEY = site.clients()["real-test"]
UNIT = "sdapi-webui@0.service"
CACHE = site.ROOT / ".cache" / "real-webui"
MODEL = "sd15-random.safetensors"
VARIANT = "sd15-random-b.safetensors"
# Small enough for a CPU in fp32 (about 10 s on 2 cores), yet a real sampling run.
REQUEST = {"prompt": "a lighthouse at dusk", "steps": 2, "width": 64, "height": 64, "seed": 7,
           "sampler_name": "Euler"}
LOADED = re.compile(r"Model loaded in ([0-9.]+)s \((.*)\)")

site_timer = site.module_timer()


def sha256_of(model: str) -> str:
    return (CACHE / f"{model}.sha256").read_text().split()[0]


def txt2img(url: str, ca: Path, key: str | None = KEY, **extra):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    started = time.monotonic()
    answer = requests.post(f"{url}/sdapi/v1/txt2img", json={**REQUEST, **extra}, headers=headers,
                           verify=str(ca), timeout=600)
    return answer, time.monotonic() - started


def png_size(image_b64: str) -> tuple[int, int]:
    data = base64.b64decode(image_b64)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def journal(node, invocation: str | None = None) -> str:
    selector = f"_SYSTEMD_INVOCATION_ID={invocation}" if invocation else f"-u {UNIT}"
    return node.run(f"journalctl --no-pager -o cat {selector}").stdout


def test_txt2img_through_https_is_made_from_the_installed_checkpoint(https_url, node_ca, request):
    answer, seconds = txt2img(https_url, node_ca)
    assert answer.status_code == 200, answer.text[:2000]
    body = answer.json()
    assert png_size(body["images"][0]) == (64, 64)
    info = json.loads(body["info"])
    # A1111 names the checkpoint that made the image, and its short hash is the file's
    # sha256: the very file the role checked and installed.
    assert info["sd_model_name"] == MODEL.removesuffix(".safetensors")
    assert info["sd_model_hash"] == sha256_of(MODEL)[:10]
    # A1111 names its version with `git describe` as the service user, on root's release:
    # with git refusing it ("dubious ownership") it falls back to CHANGELOG.md's "1.10.1".
    assert info["version"] == "v1.10.1"
    site.report(request.config, f"real A1111 txt2img 64x64, 2 steps, through HTTPS: {seconds:.1f} s")


def test_no_key_is_refused(https_url, node_ca):
    answer = txt2img(https_url, node_ca, key=None)[0]
    assert answer.status_code == 401


def test_the_model_load_is_logged_where_readiness_reads_it(node, request):
    state = site.unit_state(node, UNIT)
    log = journal(node, state["InvocationID"])
    loaded = LOADED.search(log)
    assert loaded, log[-3000:]
    rss = int(node.check_output(f"awk '/^VmRSS/ {{print $2}}' /proc/{state['MainPID']}/status"))
    started = float(node.check_output(f"systemctl show -P ExecMainStartTimestamp --timestamp=unix {UNIT}")
                    .lstrip("@"))
    stamped = node.check_output(f"journalctl --no-pager -o short-unix _SYSTEMD_INVOCATION_ID={state['InvocationID']}"
                                " | grep -m1 'Model loaded in'")
    site.report(request.config, f"real A1111: unit start to 'Model loaded in' {float(stamped.split()[0]) - started:.1f} s; "
                                f"Model loaded in {loaded.group(1)} s ({loaded.group(2)}); RSS {rss / 1048576:.2f} GiB")


def test_no_credential_reaches_the_journal(node):
    log = node.run("journalctl --no-pager -o cat").stdout
    leaked = [name for name, secret in site.secrets().items() if secret in log]
    assert leaked == []
    assert "--api-auth ********" in journal(node)


def test_the_release_stays_read_only_and_a1111_writes_into_the_data_dir(node):
    release = node.check_output("readlink -f /opt/sdapi/webui/current")
    attempt = node.run(f"runuser -u sdapi -- touch {release}/written-by-the-service")
    assert attempt.rc != 0
    # A1111 made config_states at start: through the release's link, in the data dir.
    assert node.file(f"{release}/config_states").linked_to == "/var/lib/sdapi/config_states"
    assert node.file("/var/lib/sdapi/config_states").user == "sdapi"


def test_kill_9_comes_back_ready_and_answers(node, https_url, node_ca, request):
    before = site.unit_state(node, UNIT)
    node.check_output(f"kill -9 {before['MainPID']}")
    port = site.instances(node)[0]

    def back():
        now = site.unit_state(node, UNIT)
        return now.get("InvocationID") not in ("", before["InvocationID"]) and site.instance_ready(node, 0, port)

    seconds = site.wait_for(back, 600, "sdapi-webui@0 ready again after kill -9", interval=2)
    answer, latency = txt2img(https_url, node_ca)
    assert answer.status_code == 200, answer.text[:2000]
    site.report(request.config, f"real A1111 after kill -9: ready in {seconds:.1f} s, txt2img {latency:.1f} s")


def sd_models(url: str, ca: Path) -> dict[str, str]:
    """Checkpoint file name -> A1111's sha256 of it, as a client lists them."""
    answer = requests.get(f"{url}/sdapi/v1/sd-models", headers={"Authorization": f"Bearer {KEY}"},
                          verify=str(ca), timeout=60)
    assert answer.status_code == 200, answer.text[:2000]
    return {Path(m["filename"]).name: m.get("sha256") for m in answer.json()}


# Selecting it per request (override_settings) is refused while the unit runs with
# --freeze-settings, for every setting: issue 23 changes that, and this test then sends a
# txt2img naming the added model. Until then "usable" is what a client can see: listed, by
# the instance that kept running.
def test_a_model_added_to_the_inventory_is_listed_without_a_restart(node, https_url, node_ca, request):
    assert VARIANT not in sd_models(https_url, node_ca)
    models = site.inventory_vars()["webui_models"]
    added = {"name": VARIANT, "url": f"file:///srv/real-webui/{VARIANT}", "sha256": sha256_of(VARIANT)}
    invocation = site.unit_state(node, UNIT)["InvocationID"]
    rc, output, recap, seconds = site.run_site(extra_vars={"webui_models": models + [added]})
    assert rc == 0, output[-4000:]
    assert "refresh-checkpoints" in output
    assert site.unit_state(node, UNIT)["InvocationID"] == invocation
    assert VARIANT in sd_models(https_url, node_ca)
    node.check_output(f"test -f /var/lib/sdapi/models/Stable-diffusion/{VARIANT}")
    answer, latency = txt2img(https_url, node_ca)
    assert answer.status_code == 200, answer.text[:2000]
    site.report(request.config, f"real A1111: model added by a site run in {seconds:.1f} s "
                                f"({recap[molecule_env.group_hosts('sdapi_nodes')[0]]['changed']} changed), "
                                f"listed by the running instance; txt2img after it {latency:.1f} s")
