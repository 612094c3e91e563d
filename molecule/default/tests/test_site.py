"""The whole node as a client and an operator see it: one txt2img through HTTPS from the
controller with a key (playbooks/smoke.yml), refused without one, every service enabled
and running, the webui port private to the host."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import time
from pathlib import Path

import pytest
import requests
from sdapi_testlib import site

KEY = site.clients()["site-test"]


def test_smoke_playbook_saves_a_png_from_the_https_api(https_url, node_ca, tmp_path):
    started = time.monotonic()
    proc = subprocess.run(
        ["ansible-playbook", str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "smoke.yml"),
         "-e", f"smoke_url={https_url}", "-e", f"smoke_api_key={KEY}",
         "-e", f"smoke_ca_path={node_ca}", "-e", f"smoke_output_dir={tmp_path}"],
        capture_output=True, text=True, check=False, timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert KEY not in output
    images = list(tmp_path.glob("txt2img-*.png"))
    assert len(images) == 1, output[-3000:]
    data = images[0].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (256, 256)
    reported = re.search(r"txt2img answered 200 in ([0-9.]+) s", output)
    assert reported, output[-3000:]
    print(f"smoke: txt2img {float(reported.group(1)):.2f} s, playbook {time.monotonic() - started:.1f} s, "
          f"{len(data)} bytes")


def test_api_refuses_a_client_without_a_key(https_url, node_ca):
    response = requests.get(f"{https_url}/sdapi/v1/sd-models", verify=str(node_ca), timeout=20)
    assert response.status_code == 401


def test_api_refuses_a_wrong_key(https_url, node_ca):
    response = requests.get(f"{https_url}/sdapi/v1/sd-models", verify=str(node_ca), timeout=20,
                            headers={"Authorization": "Bearer not-a-key-of-this-node-0123456789"})
    assert response.status_code == 401


def test_api_lists_the_deployed_checkpoint(https_url, node_ca):
    response = requests.get(f"{https_url}/sdapi/v1/sd-models", verify=str(node_ca), timeout=20,
                            headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    assert [m["filename"].rsplit("/", 1)[-1] for m in response.json()] == ["double.safetensors"]


def test_https_port_refuses_plain_http(https_url):
    response = requests.get("http://localhost:22443/", timeout=20, allow_redirects=False)
    # The HTTPS port answers plain HTTP with nginx's 400, never with the API.
    assert response.status_code == 400


@pytest.mark.parametrize("unit", ["sdapi-webui@0.service", "nginx.service", "nftables.service"])
def test_service_is_enabled_and_running(node, unit):
    service = node.service(unit)
    assert service.is_enabled
    assert service.is_running


def test_webui_listens_on_loopback_only(node):
    sockets = [s for s in node.socket.get_listening_sockets() if s.endswith(":7861")]
    assert sockets == ["tcp://127.0.0.1:7861"]


def test_proxy_listens_on_the_public_ports(node):
    listening = node.socket.get_listening_sockets()
    for port in (80, 443):
        assert any(s.endswith(f":{port}") for s in listening), listening
