"""Shared helpers of the benchmarks: containers, SSH access, the webui test double,
inventories, timed ansible-playbook runs, the machine description and the results table.

Everything here only touches what the benchmarks own: containers named sdapi-bench-*,
the podman network sdapi-bench, ports 127.0.0.1:23xxx and the work directory
.cache/bench. Other engineers run Molecule scenarios on the same machine at the same time
(site-bookworm, mn-*, sdapi-molecule-* networks): nothing here lists, stops or removes
anything by a pattern, only by the exact names this run created.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
WORK = ROOT / ".cache" / "bench"
VENV_BIN = ROOT / ".venv" / "bin"
IMAGE = "localhost/sdapi-test:bookworm"
NETWORK = "sdapi-bench"
PREFIX = "sdapi-bench-"
MITOGEN_STRATEGIES = (ROOT / ".venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                      / "site-packages" / "ansible_mitogen" / "plugins" / "strategy")
CONTAINERS_CONF = ROOT / "tests" / "podman" / "containers.conf"
sys.path.insert(0, str(ROOT / "tests" / "lib"))
from sdapi_testlib import double  # noqa: E402  pylint: disable=wrong-import-position
# The wheelhouse scripts/setup-host.sh's users already have: the CPU torch 2.13.0 set.
WHEELHOUSE = ROOT / ".cache" / "wheelhouse"


def quick() -> bool:
    """SDAPI_BENCH_QUICK=1: reduced sizes (fewer floor tasks, shorter load runs, a smaller
    model, a smaller fleet) for development on a shared 2-core machine."""
    return os.environ.get("SDAPI_BENCH_QUICK", "") not in ("", "0")


def say(msg: str) -> None:
    print(f"== {msg}", flush=True)


def run(cmd: list[str], check: bool = True, env: dict | None = None, timeout: float | None = None,
        input_text: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          input=input_text, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed (rc={proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def podman(*args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    return run(["podman", *args], check=check, timeout=timeout)


def pexec(name: str, *cmd: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    return podman("exec", name, *cmd, check=check, timeout=timeout)


# --------------------------------------------------------------------------- containers
class Containers:
    """The containers and the network this run made, removed by exact name at the end,
    whatever happened in between (run.py calls close() from a finally and on signals)."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.names: list[str] = []
        self.network = False

    def ensure_network(self) -> None:
        if podman("network", "exists", NETWORK, check=False).returncode != 0:
            podman("network", "create", NETWORK)
        self.network = True

    def start(self, name: str, ssh_port: int | None) -> None:
        """A systemd container from the test image, like a freshly installed host.
        NET_ADMIN as in the Molecule scenarios: base's nftables firewall needs it."""
        assert name.startswith(PREFIX)
        self.ensure_network()
        # A container of ours left by an interrupted earlier run: same name, same owner.
        podman("rm", "-f", "-t", "0", name, check=False)
        args = ["run", "-d", "--name", name, "--hostname", name, "--network", NETWORK,
                "--systemd=always", "--cap-add", "NET_ADMIN"]
        if ssh_port is not None:
            args += ["-p", f"127.0.0.1:{ssh_port}:22"]
        podman(*args, IMAGE, "/sbin/init")
        self.names.append(name)
        # Right after `podman run`, systemctl may find no bus yet and answer nothing at all:
        # ask again until systemd itself says how the boot went.
        deadline = time.monotonic() + 180
        while True:
            state = pexec(name, "systemctl", "is-system-running", "--wait", check=False, timeout=180)
            if state.stdout.strip() in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"systemd in {name} did not come up: {state.stdout.strip()} {state.stderr.strip()}")
            time.sleep(0.5)

    def remove(self, name: str) -> None:
        podman("rm", "-f", "-t", "5", name, check=False)
        if name in self.names:
            self.names.remove(name)

    def close(self) -> None:
        if self.keep:
            if self.names:
                say(f"kept (--keep): {', '.join(self.names)} on network {NETWORK}")
            return
        for name in list(self.names):
            self.remove(name)
        if self.network:
            podman("network", "rm", NETWORK, check=False)
            self.network = False


def running(name: str) -> bool:
    out = podman("container", "inspect", "-f", "{{.State.Running}}", name, check=False)
    return out.returncode == 0 and out.stdout.strip() == "true"


# ----------------------------------------------------------------------- access, double
@dataclass
class Assets:
    """What every node of a run gets: this run's SSH key, the double's release and model."""
    ssh_key: Path
    double_repo: Path
    model: Path
    model_sha256: str
    api_key: str


def make_assets() -> Assets:
    """A key pair made for this run (never reused across runs), the webui TEST DOUBLE as a
    bare git repository with tag v1, and a small random .safetensors checkpoint, made by the
    recipe molecule/shared/publish-double.yml and scripts/demo.py use (sdapi_testlib.double)."""
    WORK.mkdir(parents=True, exist_ok=True)
    key = WORK / "ssh_key"
    for old in (key, key.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sdapi-bench", "-f", str(key)])

    repo = WORK / "webui-double.git"
    if repo.exists():
        shutil.rmtree(repo)
    double.publish_repo(repo, [])
    double.publish_hub(WORK / "hf-mirror")
    model = WORK / "double.safetensors"
    sha = double.make_checkpoint(model, seed=7)
    return Assets(key, repo, model, sha, secrets.token_urlsafe(32))


def prepare_node(name: str, assets: Assets, ssh_port: int | None) -> None:
    """What Molecule's prepare does for the site scenarios, done with podman exec and cp
    (seconds, not the minute a playbook over the podman connection costs): the controller's
    CA bundle trusted (pip inside the node goes through the inspecting HTTPS proxy), the
    double's release, hub mirror and model in /srv, and for SSH nodes this run's key and a running sshd."""
    podman("cp", "/etc/ssl/certs/ca-certificates.crt",
           f"{name}:/usr/local/share/ca-certificates/bench-controller-bundle.crt")
    pexec(name, "update-ca-certificates")
    pexec(name, "mkdir", "-p", "/srv/models")
    podman("cp", str(assets.double_repo), f"{name}:/srv/")
    podman("cp", str(WORK / "hf-mirror"), f"{name}:/srv/")
    podman("cp", str(assets.model), f"{name}:/srv/models/double.safetensors")
    if ssh_port is None:
        return
    pexec(name, "install", "-d", "-m", "0700", "/root/.ssh")
    podman("cp", str(assets.ssh_key.with_suffix(".pub")), f"{name}:/root/.ssh/authorized_keys")
    pexec(name, "sh", "-c", "chown root:root /root/.ssh/authorized_keys && chmod 0600 /root/.ssh/authorized_keys")
    pexec(name, "systemctl", "enable", "--now", "ssh")
    deadline = time.monotonic() + 60
    while True:
        probe = run(["ssh", *ssh_options(assets), "-p", str(ssh_port), "root@127.0.0.1", "true"],
                    check=False, timeout=30)
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd of {name} on 127.0.0.1:{ssh_port} does not answer: {probe.stderr}")
        time.sleep(1)


def ssh_options(assets: Assets) -> list[str]:
    return ["-i", str(assets.ssh_key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def wheel_key(name: str) -> str:
    """The wheelhouse key a converged node unpacked (torch_env names it after the pins, the
    Python version and the platform); the controller's <key>.tar is what was pushed."""
    out = pexec(name, "ls", "/var/cache/sdapi-wheelhouse", check=False).stdout.split()
    return out[0] if out else ""


def node_cpu_seconds(names: list[str]) -> float:
    """CPU time the containers' processes have used since they started (their cgroups'
    accounting, as podman stats reads it on cgroup v1 and v2)."""
    total = 0
    for name in names:
        out = podman("stats", "--no-stream", "--format", "{{.CPUNano}}", name, check=False)
        total += int(out.stdout.strip() or 0)
    return total / 1e9


def apt_bytes(name: str) -> int:
    """What apt fetched from the Debian mirror into this node (the .debs it keeps in its
    archive cache): every node downloads its packages itself, the wheelhouse is the only
    shared download."""
    out = pexec(name, "sh", "-c", "cat /var/cache/apt/archives/*.deb 2>/dev/null | wc -c", check=False)
    return int(out.stdout.strip() or 0)


# --------------------------------------------------------------------------- inventory
def ssh_hostvars(assets: Assets, port: int) -> dict:
    """How operators reach a host, and how molecule/default reaches its container."""
    return {
        "ansible_connection": "ssh",
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(assets.ssh_key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        "ansible_ssh_pipelining": True,
        "ansible_python_interpreter": "/usr/bin/python3",
    }


def podman_hostvars(name: str) -> dict:
    """The podman connection by its short name: mitogen redirects `podman` (not the
    containers.podman.podman FQCN) to its own mitogen_podman transport."""
    return {"ansible_connection": "podman", "ansible_host": name,
            "ansible_python_interpreter": "/usr/bin/python3"}


def node_vars(assets: Assets) -> dict:
    """One single-host node (GPU host and proxy at once) with the CPU profile from the
    controller's wheelhouse and the webui TEST DOUBLE, as molecule/default configures it
    (the CA trust comes from prepare_node, as from Molecule's prepare, not from the base
    role: a 220 KB bundle through base_extra_ca_certificates would add a second of
    templating to every run that no real inventory pays).
    webui_prewarm is on so the model benchmark can run the role's own prewarm command."""
    return {
        "torch_env_profile": "cpu",
        "torch_env_torch_version": "2.13.0",
        "torch_env_install_torchvision": False,
        "torch_env_install_mode": "wheelhouse",
        "torch_env_wheelhouse_dir": str(WHEELHOUSE),
        "torch_env_wheelhouse_index_url": "",
        "webui_repo_url": "/srv/webui-double.git",
        "webui_version": "v1",
        "webui_repositories": [],
        "webui_prepare_packages": [],
        "webui_hf_endpoint": "file:///srv/hf-mirror",
        "webui_cpu_mode": True,
        "webui_models": [{"name": "double.safetensors", "url": "file:///srv/models/double.safetensors",
                          "sha256": assets.model_sha256}],
        "webui_default_model": "double.safetensors",
        "webui_prewarm": True,
        "webui_environment": {"SDAPI_DOUBLE_STEP_SECONDS": "0.01"},
        "webui_ready_timeout": 180,
        "nginx_proxy_server_names": ["localhost"],
        # Each node proxies to its own instance only, even when several nodes share an
        # inventory (the fleet benchmark): independent single-host nodes.
        "nginx_proxy_backends": [{"address": "127.0.0.1", "port": 7861}],
        # The load-test client gets a status budget far above what wrk sends in 10 s, so
        # the proxy benchmark measures proxying, not 429s.
        "nginx_proxy_clients": [{"name": "bench", "key": assets.api_key, "status_rate": "100000r/s",
                                 "status_burst": 100000, "connections": 64}],
    }


def write_inventory(path: Path, hosts: dict[str, dict], group_vars: dict) -> Path:
    """Every host in sdapi_webui and sdapi_proxy: each is a whole single-host node."""
    inventory = {"sdapi_nodes": {
        "children": {"sdapi_webui": {"hosts": {h: None for h in hosts}},
                     "sdapi_proxy": {"hosts": {h: None for h in hosts}}},
        "hosts": hosts,
        "vars": group_vars,
    }}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("---\n# Written by benchmarks/lib.py for one benchmark run.\n"
                    + yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False))
    return path


# ------------------------------------------------------------------------ playbook runs
@dataclass
class PlaybookRun:
    label: str
    rc: int
    wall: float
    log: Path
    timing: dict

    @property
    def tasks(self) -> list[dict]:
        return self.timing.get("tasks", [])

    def span(self) -> float:
        """First task start to the end of the run, without ansible-playbook's start-up."""
        if not self.tasks:
            return self.wall
        return self.timing["ended"] - self.tasks[0]["start"]

    def stats(self) -> dict:
        return self.timing.get("stats", {})

    def changed(self) -> int:
        return sum(s.get("changed", 0) for s in self.stats().values())

    def changed_tasks(self) -> list[str]:
        return [f"{t['role'] or '-'}: {t['name']} ({h})" for t in self.tasks
                for h, r in t["hosts"].items() if r["status"] == "changed"]

    def counts(self, host: str | None = None) -> dict:
        """Per host: tasks that ran (ok, changed, failed), skipped ones, and module
        executions (a loop of k items runs its module k times)."""
        out = {"executed": 0, "skipped": 0, "changed": 0, "items": 0, "executions": 0}
        for task in self.tasks:
            for name, res in task["hosts"].items():
                if host is not None and name != host:
                    continue
                if res["status"] == "skipped":
                    out["skipped"] += 1
                else:
                    out["executed"] += 1
                    out["items"] += res["items"]
                    out["executions"] += max(1, res["items"])
                    out["changed"] += res["status"] == "changed"
        return out

    def by_role(self) -> dict[str, float]:
        """Seconds per role; the site's first play (facts and every role's validate entry
        point) is one bucket of its own so the roles' own plays are not mixed with it."""
        out: dict[str, float] = {}
        for task in self.tasks:
            if task["play_index"] == 0 and len(self.timing.get("plays", [])) > 1:
                key = "facts + validate (play 1)"
            else:
                key = task["role"] or f"play: {task['play']}"
            out[key] = out.get(key, 0.0) + (task["end"] - task["start"])
        return out

    def slowest(self, n: int = 8) -> list[tuple[float, str]]:
        rows = [(t["end"] - t["start"], f"{t['role'] or '-'}: {t['name']} [{t['action']}]") for t in self.tasks]
        return sorted(rows, reverse=True)[:n]

    def above_floor(self, floor: float, n: int = 10) -> list[tuple[float, float, int, str]]:
        """Tasks by the time they took beyond floor x module executions: where a run spends
        more than the bare round trips (seconds above, seconds, executions, task)."""
        rows = []
        for t in self.tasks:
            execs = sum(max(1, r["items"]) for r in t["hosts"].values() if r["status"] != "skipped")
            dur = t["end"] - t["start"]
            rows.append((dur - floor * execs, dur, execs, f"{t['role'] or '-'}: {t['name']} [{t['action']}]"))
        return sorted(rows, reverse=True)[:n]

    def task_spans(self, name_part: str) -> list[dict]:
        return [t for t in self.tasks if name_part in t["name"]]


def ansible_env(strategy: str = "linear", timing_file: Path | None = None) -> dict:
    env = dict(os.environ)
    env.update({
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
        "CONTAINERS_CONF": str(CONTAINERS_CONF),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".cache" / "collections"),
        "ANSIBLE_CALLBACK_PLUGINS": str(BENCH / "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "bench_timing",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    })
    if timing_file is not None:
        env["SDAPI_BENCH_TIMING_FILE"] = str(timing_file)
    if strategy == "mitogen":
        # Only for the site runs: mitogen breaks async tasks (Molecule's podman create
        # playbook hangs under it), and nothing else here needs it.
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(MITOGEN_STRATEGIES)
        env["ANSIBLE_STRATEGY"] = "mitogen_linear"
    else:
        env.pop("ANSIBLE_STRATEGY", None)
    return env


def playbook(label: str, book: Path, inventory: Path, strategy: str = "linear",
             extra: list[str] | None = None) -> PlaybookRun:
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{label}.log"
    timing_file = logs / f"{label}.json"
    timing_file.unlink(missing_ok=True)
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(book), *(extra or [])]
    say(f"{label}: ansible-playbook {book.name} ({strategy})  log: {log.relative_to(ROOT)}")
    started = time.monotonic()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("w") as out:
        rc = subprocess.run(cmd, cwd=ROOT, env=ansible_env(strategy, timing_file),
                            stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    # ansible-playbook, its forks and their ssh processes: all reaped by the time it returns.
    timing["controller_cpu"] = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    pb = PlaybookRun(label, rc, wall, log, timing)
    recap = ", ".join(f"{h}: ok={s.get('ok')} changed={s.get('changed')} failed={s.get('failures')}"
                      for h, s in pb.stats().items())
    say(f"{label}: rc={rc} in {wall:.1f}s  {recap}")
    return pb


def floor_playbook(n: int, module: str = "ansible.builtin.ping") -> Path:
    """N separate tasks (not one task with a loop, which skips the per-task strategy and
    worker overhead) of a module that makes the full round trip to the node."""
    path = WORK / f"floor-{n}.yml"
    tasks = [{"name": f"No-op round trip {i + 1}", module: None} for i in range(n)]
    path.write_text("---\n" + yaml.safe_dump([{"name": f"Per-task floor: {n} x {module}", "hosts": "all",
                                               "gather_facts": False, "tasks": tasks}], sort_keys=False))
    return path


# ------------------------------------------------------------------------- description
def machine() -> dict:
    def first(path: str, pattern: str) -> str:
        try:
            text = Path(path).read_text()
        except OSError:
            return "?"
        match = re.search(pattern, text, re.M)
        return match.group(1).strip() if match else "?"

    mem_kb = first("/proc/meminfo", r"^MemTotal:\s+(\d+)")
    ver = podman("--version", check=False).stdout.strip().replace("podman version ", "")
    import ansible.release  # the venv's ansible-core, the one the benchmarks run
    try:
        import importlib.metadata as md
        mitogen = md.version("mitogen")
    except Exception:  # noqa: BLE001 - reported as unknown, not fatal
        mitogen = "?"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": first("/proc/cpuinfo", r"^model name\s*:\s*(.+)$"),
        "cores": str(os.cpu_count()),
        "ram": f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb.isdigit() else "?",
        "kernel": platform.release(),
        "os": first("/etc/os-release", r'^PRETTY_NAME="?([^"\n]+)'),
        "podman": ver,
        "ansible-core": ansible.release.__version__,
        "mitogen": mitogen,
        "python": platform.python_version(),
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def other_containers() -> int:
    """How many containers not of this benchmark ran at the time (noise on 2 cores)."""
    out = podman("ps", "--format", "{{.Names}}", check=False).stdout.split()
    return len([n for n in out if not n.startswith(PREFIX)])


# ---------------------------------------------------------------------------- results
@dataclass
class Row:
    section: str
    measure: str
    value: str
    peer: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None


@dataclass
class Report:
    quick: bool
    rows: list[Row] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def add(self, *args, **kwargs) -> None:
        self.rows.append(Row(*args, **kwargs))

    def note(self, section: str, line: str) -> None:
        self.notes.setdefault(section, []).append(line)

    def fail(self, msg: str) -> None:
        self.failures.append(msg)
        print(f"!! FAILED: {msg}", flush=True)

    def table(self) -> str:
        head = "| # | measurement | result | peer (same run) | ratio | target | met |\n|---|---|---|---|---|---|---|\n"
        body = ""
        # By measurement number; phases run in another order (the fleet reuses the site's
        # converge, mitogen's fresh container comes last) but read best in this one.
        for r in sorted(self.rows, key=lambda row: row.section):
            met = "" if r.met is None else ("yes" if r.met else "**no**")
            body += f"| {r.section} | {r.measure} | {r.value} | {r.peer} | {r.ratio} | {r.target} | {met} |\n"
        return head + body


def secs(x: float) -> str:
    return f"{x:.1f} s"


def ms(x: float) -> str:
    return f"{x:.3f} ms" if x < 10 else f"{x:.1f} ms"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")
