"""Reachability probes run inside test containers (test traffic stays on the scenario network)."""

from __future__ import annotations

import time


# Listens on the given TCP ports for at most 300 s: something must answer behind a port for
# "the firewall lets it through" to be observable.
_LISTENER = """
import socket, sys, threading, time
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
time.sleep(300)
"""

# Prints "open", "refused" or "timeout" for one TCP connect.
_PROBE = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print('open')
except socket.timeout:
    print('timeout')
except ConnectionRefusedError:
    print('refused')
"""


def start_listeners(node, ports, unit="sdapi-test-listeners"):
    """Run a transient unit on the node that accepts on each port (already bound ones skipped)."""
    node.run(f"systemctl stop {unit}.service")
    free = [p for p in ports if not node.socket(f"tcp://0.0.0.0:{p}").is_listening]
    if free:
        node.check_output(
            "systemd-run --unit=%s --collect python3 -c %s" + " %s" * len(free),
            unit,
            _LISTENER,
            *[str(p) for p in free],
        )
        deadline = time.monotonic() + 10
        while not set(free) <= listening_ports(node):
            assert time.monotonic() < deadline, f"listeners on {free} did not come up"
            time.sleep(0.1)
    return free


def listening_ports(node):
    """TCP ports the node listens on."""
    lines = node.check_output("ss -Hltn").splitlines()
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in lines if line.strip()}


def tcp_state(client, address, port, timeout=2.0):
    """What a TCP connect from the client container to address:port meets."""
    return client.check_output(
        "python3 -c %s %s %s %s", _PROBE, address, str(port), str(timeout)
    ).strip()
