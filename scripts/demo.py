#!/usr/bin/env python3
"""`make demo`: converge playbooks/site.yml into a local systemd container.

The container stands in for a GPU host: a Debian 12 image built by
scripts/build-test-images.sh, on its own podman network, with the node's HTTP and HTTPS
ports published on 127.0.0.1 only. Ansible reaches it over the podman connection.

Usage: demo.py up | down
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "sdapi-demo"
NETWORK = "sdapi-demo"
IMAGE = "localhost/sdapi-test:bookworm"
HTTPS_PORT, HTTP_PORT = 8443, 8080
INVENTORY = ROOT / ".cache" / "demo" / "inventory.yml"
KEY_FILE = ROOT / ".cache" / "demo" / "api-key"


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


def write_inventory() -> None:
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
    nginx_proxy_server_names: [localhost]
    nginx_proxy_clients:
      - name: demo
        key: {demo_key()}
"""
    )


def up() -> int:
    started = time.monotonic()
    start_container()
    write_inventory()
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
    rules = podman("exec", NAME, "nft", "list", "chain", "inet", "sdapi_filter", "input").stdout
    accepts = [line.strip() for line in rules.splitlines() if "accept comment" in line]
    say(f"node {NAME} converged in {time.monotonic() - started:.0f}s")
    print(f"   shell:      podman exec -it {NAME} bash")
    print(f"   firewall:   inbound drop, except {'; '.join(accepts)}")
    print(f"   API:        https://127.0.0.1:{HTTPS_PORT}/sdapi/v1/ (self-signed TLS; HTTP on"
          f" 127.0.0.1:{HTTP_PORT} redirects)")
    print(f"   try:        curl -k -H \"Authorization: Bearer $(cat {KEY_FILE})\""
          f" https://127.0.0.1:{HTTPS_PORT}/sdapi/v1/sd-models")
    print("   note:       the webui role is not part of the site yet, so the proxy answers 502")
    print("   remove:     make demo-destroy")
    return 0


def down() -> int:
    podman("rm", "-f", "-t", "5", NAME, check=False)
    podman("network", "rm", NETWORK, check=False)
    say(f"removed {NAME}")
    return 0


if __name__ == "__main__":
    action = sys.argv[1] if len(sys.argv) > 1 else "up"
    sys.exit({"up": up, "down": down}[action]())
