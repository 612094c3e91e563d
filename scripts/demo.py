"""`make demo`: converge playbooks/site.yml into a local systemd container and generate
one image through the proxy.

The container stands in for a GPU host: a Debian 12 image built by
scripts/build-test-images.sh, on its own podman network, with the node's HTTP and HTTPS
ports published on 127.0.0.1 only. Ansible reaches it over the podman connection.
The backend is the webui TEST DOUBLE (tests/webui_double, published into the container as
a git repository) on the CPU with a small random checkpoint: it speaks A1111's API and
returns real PNGs, but they are patterns, not pictures. Point the same inventory at a GPU
host with the webui_* variables left at their defaults to deploy the real A1111.

Usage: demo.py up | down
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "lib"))
from sdapi_testlib import double  # noqa: E402  pylint: disable=wrong-import-position
NAME = "sdapi-demo"
NETWORK = "sdapi-demo"
IMAGE = "localhost/sdapi-test:bookworm"
HTTPS_PORT, HTTP_PORT = 8443, 8080
INVENTORY = ROOT / ".cache" / "demo" / "inventory.yml"
DEMO = ROOT / ".cache" / "demo"
KEY_FILE = DEMO / "api-key"
DOUBLE_REPO = DEMO / "webui-double.git"
MODEL = DEMO / "demo.safetensors"


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], check=check, capture_output=True, text=True)


def say(msg: str) -> None:
    print(f"== {msg}", flush=True)


def container_running() -> bool:
    out = podman("container", "inspect", "-f", "{{.State.Running}}", NAME, check=False)
    return out.returncode == 0 and out.stdout.strip() == "true"


def start_container() -> None:
    if podman("network", "exists", NETWORK, check=False).returncode != 0:
        podman("network", "create", NETWORK)
    if container_running():
        say(f"container {NAME} already running")
        return
    podman("rm", "-f", NAME, check=False)
    say(f"starting container {NAME} from {IMAGE}")
    podman(
        "run", "-d", "--name", NAME, "--hostname", NAME, "--network", NETWORK,
        "--systemd=always", "--cap-add", "NET_ADMIN",
        "-p", f"127.0.0.1:{HTTPS_PORT}:443", "-p", f"127.0.0.1:{HTTP_PORT}:80",
        IMAGE, "/sbin/init",
    )
    state = podman("exec", NAME, "systemctl", "is-system-running", "--wait", check=False)
    say(f"systemd in {NAME}: {state.stdout.strip()}")


def demo_key() -> str:
    """A random API key for the demo client, kept (0600) so re-runs reuse it."""
    KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    if not KEY_FILE.exists():
        KEY_FILE.touch(mode=0o600)
        KEY_FILE.write_text(secrets.token_urlsafe(32))
    return KEY_FILE.read_text().strip()


def publish_double() -> str:
    """The test double as a bare git repository in the container; returns the model's sha256."""
    DEMO.mkdir(parents=True, exist_ok=True)
    double.publish_repo(DOUBLE_REPO, [])
    double.publish_hub(DEMO / "hf-mirror")
    sha256 = double.make_checkpoint(MODEL, seed=42, size=256)
    podman("exec", NAME, "mkdir", "-p", "/srv/models")
    podman("cp", str(DOUBLE_REPO), f"{NAME}:/srv/")
    podman("cp", str(DEMO / "hf-mirror"), f"{NAME}:/srv/")
    podman("cp", str(MODEL), f"{NAME}:/srv/models/")
    return sha256


def write_inventory(model_sha256: str) -> None:
    INVENTORY.parent.mkdir(parents=True, exist_ok=True)
    INVENTORY.touch(mode=0o600)
    INVENTORY.write_text(
        f"""---
# Written by scripts/demo.py: one container that is GPU host and proxy at once.
sdapi_nodes:
  children:
    sdapi_webui:
      hosts:
        {NAME}:
    sdapi_proxy:
      hosts:
        {NAME}:
  vars:
    ansible_connection: containers.podman.podman
    ansible_python_interpreter: /usr/bin/python3
    # The controller's trust store, so HTTPS through an inspecting proxy works in the node.
    base_extra_ca_certificates:
      - name: controller-bundle
        src: /etc/ssl/certs/ca-certificates.crt
    # CPU profile from a controller-built wheelhouse: the one CPU torch build this
    # controller's pip can reach (2.13.0); the demo backend needs no torchvision.
    torch_env_profile: cpu
    torch_env_torch_version: "2.13.0"
    torch_env_install_torchvision: false
    torch_env_install_mode: wheelhouse
    torch_env_wheelhouse_dir: {ROOT}/.cache/wheelhouse
    torch_env_wheelhouse_index_url: ""
    # The webui TEST DOUBLE on the CPU, with one small checkpoint.
    webui_repo_url: /srv/webui-double.git
    webui_version: v1
    webui_repositories: []
    webui_prepare_packages: []
    webui_hf_endpoint: file:///srv/hf-mirror
    webui_cpu_mode: true
    webui_models:
      - name: demo.safetensors
        url: file:///srv/models/demo.safetensors
        sha256: {model_sha256}
    webui_default_model: demo.safetensors
    nginx_proxy_server_names: [localhost]
    nginx_proxy_clients:
      - name: demo
        key: {demo_key()}
"""
    )


def up() -> int:
    started = time.monotonic()
    start_container()
    write_inventory(publish_double())
    say("converging playbooks/site.yml")
    venv_bin = ROOT / ".venv" / "bin"
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
               PATH=f"{venv_bin}:{os.environ['PATH']}")
    rc = subprocess.run(
        ["ansible-playbook", "-i", str(INVENTORY), str(ROOT / "playbooks" / "site.yml")],
        cwd=ROOT, env=env, check=False,
    ).returncode
    if rc != 0:
        say(f"site playbook failed (rc={rc})")
        return rc
    say(f"node {NAME} converged in {time.monotonic() - started:.0f}s; generating one image")
    image, seconds = smoke(env)
    say(f"demo done in {time.monotonic() - started:.0f}s")
    print(f"   image:      {image} (smoke playbook, {seconds:.1f}s; the backend is the")
    print("               webui test double, so the PNG is a pattern, not a picture)")
    print(f"   API:        https://localhost:{HTTPS_PORT}/sdapi/v1/ (self-signed TLS: {DEMO / 'tls.crt'})")
    print(f"   try:        curl --cacert {DEMO / 'tls.crt'} -H \"Authorization: Bearer $(cat {KEY_FILE})\""
          f" https://localhost:{HTTPS_PORT}/sdapi/v1/sd-models")
    print(f"   shell:      podman exec -it {NAME} bash")
    print("   remove:     make demo-destroy")
    return 0


def smoke(env: dict) -> tuple[Path, float]:
    """playbooks/smoke.yml: one txt2img through nginx with the demo key, checked against
    the node's certificate."""
    cert = podman("exec", NAME, "cat", "/etc/nginx/sdapi-tls/server.crt").stdout
    (DEMO / "tls.crt").write_text(cert)
    smoke_vars = DEMO / "smoke-vars.yml"
    smoke_vars.touch(mode=0o600)
    smoke_vars.write_text(json.dumps({
        "smoke_url": f"https://localhost:{HTTPS_PORT}", "smoke_api_key": demo_key(),
        "smoke_ca_path": str(DEMO / "tls.crt"), "smoke_output_dir": str(DEMO),
    }))
    started = time.monotonic()
    subprocess.run(["ansible-playbook", str(ROOT / "playbooks" / "smoke.yml"), "-e", f"@{smoke_vars}"],
                   cwd=ROOT, env=env, check=True)
    seconds = time.monotonic() - started
    image = max(DEMO.glob("txt2img-*.png"), key=lambda p: p.stat().st_mtime)
    return image, seconds


def down() -> int:
    podman("rm", "-f", "-t", "5", NAME, check=False)
    podman("network", "rm", NETWORK, check=False)
    say(f"removed {NAME}")
    return 0


if __name__ == "__main__":
    action = sys.argv[1] if len(sys.argv) > 1 else "up"
    sys.exit({"up": up, "down": down}[action]())
