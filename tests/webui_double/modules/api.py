"""The /sdapi/v1 HTTP API of the double: A1111's routes and JSON shapes on the stdlib server."""

import base64
import binascii
import datetime
import json
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from modules import checkpoints, generate, png

SAMPLERS = ["DPM++ 2M", "Euler a", "Euler", "DDIM"]


class FifoLock:
    """Jobs run one at a time in arrival order, like A1111's queue_lock."""

    def __init__(self):
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self):
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving:
                self._cond.wait()

    def __exit__(self, *exc):
        with self._cond:
            self._serving += 1
            self._cond.notify_all()

    @property
    def waiting(self):
        return self._next_ticket - self._serving


class State:
    def __init__(self):
        self.job = ""
        self.job_count = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.interrupted = False
        self.skipped = False
        self.job_timestamp = "0"


class Node:
    """Everything the API serves: options, checkpoints, the loaded model, the job state."""

    def __init__(self, args, log):
        self.args = args
        self.log = log
        self.queue = FifoLock()
        self.state = State()
        self.model = None
        self.model_lock = threading.Lock()
        self.load_error = None
        self.cache = checkpoints.HashCache(args.data_dir)
        self.checkpoints = {}
        self.settings_file = args.ui_settings_file or os.path.join(args.data_dir, "config.json")
        self.options = {"sd_model_checkpoint": None, "samples_save": True, "outdir_samples": "",
                        "CLIP_stop_at_last_layers": 1}
        try:
            with open(self.settings_file, encoding="utf-8") as fh:
                self.options.update(json.load(fh))
        except (OSError, ValueError):
            pass
        self.step_seconds = float(os.environ.get("SDAPI_DOUBLE_STEP_SECONDS", "0.02"))
        self.refresh_checkpoints()

    def checkpoint_dirs(self):
        return [self.args.ckpt_dir, os.path.join(self.args.models_dir, "Stable-diffusion")]

    def refresh_checkpoints(self):
        self.checkpoints = checkpoints.discover(self.checkpoint_dirs(), self.cache)

    def pick_checkpoint(self, title=None):
        wanted = title or self.options.get("sd_model_checkpoint")
        if self.args.ckpt and not wanted:
            wanted = next((t for t, c in self.checkpoints.items() if c.filename == self.args.ckpt), None)
        for key, ckpt in self.checkpoints.items():
            if wanted in (key, ckpt.model_name, os.path.basename(ckpt.filename)):
                return ckpt
        loadable = [c for c in self.checkpoints.values() if c.filename.endswith(".safetensors")]
        return loadable[0] if loadable else None

    def ensure_model(self, title=None):
        with self.model_lock:
            ckpt = self.pick_checkpoint(title)
            if ckpt is None:
                raise RuntimeError("No checkpoints found. Put a .safetensors file into "
                                   f"{' or '.join(d for d in self.checkpoint_dirs() if d)}")
            if self.model is None or self.model.checkpoint.filename != ckpt.filename:
                # Like A1111, only the first load creates the model; a switch swaps weights.
                self.model = checkpoints.load(ckpt, self.log, create=self.model is None)
                self.options["sd_model_checkpoint"] = ckpt.title
            return self.model

    def load_in_background(self):
        def run():
            try:
                self.ensure_model()
            except Exception as exc:  # noqa: BLE001 - reported the way A1111 prints it
                self.load_error = str(exc)
                if not getattr(exc, "already_reported", False):
                    self.log(f"Failed to load checkpoint, restoring previous: {exc}")

        threading.Thread(target=run, name="model-loader", daemon=True).start()

    def save_options(self):
        tmp = self.settings_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.options, fh, indent=4)
        os.replace(tmp, self.settings_file)

    # --- routes -----------------------------------------------------------------------
    def progress(self, _body):
        s = self.state
        frac = (s.sampling_step / s.sampling_steps) if s.job_count and s.sampling_steps else 0.0
        return {"progress": frac, "eta_relative": 0.0,
                "state": {"skipped": s.skipped, "interrupted": s.interrupted,
                          "stopping_generation": False, "job": s.job, "job_count": s.job_count,
                          "job_timestamp": s.job_timestamp, "job_no": 0,
                          "sampling_step": s.sampling_step, "sampling_steps": s.sampling_steps},
                "current_image": None, "textinfo": None, "current_task": None}

    def sd_models(self, _body):
        return [c.as_api() for c in self.checkpoints.values()]

    def get_options(self, _body):
        return dict(self.options)

    def set_options(self, body):
        if self.args.freeze_settings:
            raise RuntimeError("changing settings is disabled")
        title = body.get("sd_model_checkpoint")
        if title is not None:
            if self.pick_checkpoint(title) is None or title not in {
                    k for c in self.checkpoints.values() for k in (c.title, c.model_name)}:
                raise RuntimeError(f"model {title!r} not found")
            with self.queue:
                self.ensure_model(title)
        self.options.update(body)
        self.save_options()
        return None

    def cmd_flags(self, _body):
        return vars(self.args)

    def samplers(self, _body):
        return [{"name": n, "aliases": [], "options": {}} for n in SAMPLERS]

    def memory(self, _body):
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"ram": {"used": rss}, "cuda": {"error": "CUDA not available"}}

    def interrupt(self, _body):
        self.state.interrupted = True
        return {}

    def skip(self, _body):
        self.state.skipped = True
        return {}

    def refresh(self, _body):
        self.refresh_checkpoints()
        return None

    def txt2img(self, body):
        return self._generate(body, salt=0)

    def img2img(self, body):
        images = body.get("init_images") or []
        if not images:
            raise ValueError("init_images is required")
        try:
            raw = base64.b64decode(images[0].split(",", 1)[-1], validate=False)
            width, height = png.read_header(raw)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"init_images[0] is not a base64 PNG: {exc}") from exc
        body.setdefault("width", width)
        body.setdefault("height", height)
        return self._generate(body, salt=int.from_bytes(raw[-16:], "big") % 1000003)

    def _generate(self, body, salt):
        width = _dim(body.get("width", 512), "width")
        height = _dim(body.get("height", 512), "height")
        steps = int(body.get("steps", 20))
        if not 1 <= steps <= 150:
            raise ValueError("steps must lie in 1..150")
        count = max(1, int(body.get("batch_size", 1))) * max(1, int(body.get("n_iter", 1)))
        seed = int(body.get("seed", -1))
        if seed == -1:
            seed = random.randrange(2**32)
        with self.queue:
            model = self.ensure_model()
            s = self.state
            s.job, s.job_count, s.interrupted, s.skipped = "txt2img", count, False, False
            s.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
            try:
                images = [
                    generate.render(model, seed + i, width, height, steps, s, self.step_seconds, salt)
                    for i in range(count)
                ]
            finally:
                s.job, s.job_count, s.sampling_step = "", 0, 0
            if body.get("save_images"):
                self._save(images, seed)
        info = {"prompt": body.get("prompt", ""), "negative_prompt": body.get("negative_prompt", ""),
                "seed": seed, "all_seeds": [seed + i for i in range(count)], "width": width,
                "height": height, "steps": steps, "sampler_name": body.get("sampler_name", SAMPLERS[0]),
                "sd_model_name": model.checkpoint.model_name, "sd_model_hash": model.checkpoint.shorthash}
        encoded = [base64.b64encode(i).decode() for i in images] if body.get("send_images", True) else []
        return {"images": encoded, "parameters": body, "info": json.dumps(info)}

    def _save(self, images, seed):
        outdir = os.path.join(self.args.data_dir, "outputs", "txt2img-images",
                              datetime.date.today().isoformat())
        os.makedirs(outdir, exist_ok=True)
        start = len(os.listdir(outdir))
        for i, data in enumerate(images):
            with open(os.path.join(outdir, f"{start + i:05d}-{seed + i}.png"), "wb") as fh:
                fh.write(data)

    def routes(self):
        table = {
            ("GET", "progress"): self.progress, ("GET", "sd-models"): self.sd_models,
            ("GET", "options"): self.get_options, ("POST", "options"): self.set_options,
            ("GET", "cmd-flags"): self.cmd_flags, ("GET", "samplers"): self.samplers,
            ("GET", "memory"): self.memory, ("POST", "interrupt"): self.interrupt,
            ("POST", "skip"): self.skip, ("POST", "refresh-checkpoints"): self.refresh,
            ("POST", "txt2img"): self.txt2img, ("POST", "img2img"): self.img2img,
        }
        if self.args.api_server_stop:
            table[("POST", "server-kill")] = lambda _b: os._exit(0)
        return table


def _dim(value, name):
    value = int(value)
    if not 64 <= value <= 2048:
        raise ValueError(f"{name} must lie in 64..2048")
    return value - value % 8


def _credentials(spec):
    pairs = {}
    for item in (spec or "").split(","):
        if ":" in item:
            user, password = item.split(":", 1)
            pairs[user.strip()] = password.strip()
    return pairs


def make_handler(node):
    routes = node.routes()
    credentials = _credentials(node.args.api_auth)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # As uvicorn does (TCP_NODELAY): without it every keep-alive answer waits ~40 ms
        # for the client's delayed ACK, and the proxy benchmark measures Nagle, not nginx.
        disable_nagle_algorithm = True
        timeout = node.args.timeout_keep_alive
        server_version = "uvicorn"
        sys_version = ""

        def log_message(self, *_args):  # the access log is --api-log's job
            pass

        def _send(self, status, payload, headers=None):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            return status

        def _authorised(self):
            if not credentials:
                return True
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return False
            try:
                user, _sep, password = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return credentials.get(user) == password

        def _handle(self, method):
            started = time.perf_counter()
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            status = self._dispatch(method, raw)
            if node.args.api_log and self.path.startswith("/sdapi/"):
                node.log(f"API {datetime.datetime.now():%Y-%m-%d %H:%M:%S} {status} HTTP/1.1 "
                         f"{method} {self.path} {self.client_address[0]} "
                         f"{time.perf_counter() - started:.4f}")

        def _dispatch(self, method, raw):
            path = self.path.split("?", 1)[0]
            if not path.startswith("/sdapi/v1/"):
                return self._send(404, {"detail": "Not Found"})
            name = path[len("/sdapi/v1/"):]
            handler = routes.get((method, name))
            if handler is None:
                allowed = any(route == name for _verb, route in routes)
                return self._send(405 if allowed else 404,
                                  {"detail": "Method Not Allowed" if allowed else "Not Found"})
            if not self._authorised():
                return self._send(401, {"detail": "Incorrect username or password"},
                                  {"WWW-Authenticate": "Basic"})
            try:
                body = json.loads(raw or b"{}") if method == "POST" else {}
                if not isinstance(body, dict):
                    raise ValueError("the request body must be a JSON object")
            except ValueError as exc:
                return self._send(422, {"detail": [{"loc": ["body"], "msg": str(exc)}]})
            try:
                return self._send(200, handler(body))
            except ValueError as exc:
                return self._send(422, {"detail": [{"loc": ["body"], "msg": str(exc)}]})
            except Exception as exc:  # noqa: BLE001 - A1111's API answers every error as JSON
                return self._send(500, {"error": type(exc).__name__, "detail": "", "body": "",
                                        "errors": str(exc)})

        def do_GET(self):  # noqa: N802 - http.server's naming
            self._handle("GET")

        def do_POST(self):  # noqa: N802
            self._handle("POST")

    return Handler


def serve(node, host, port):
    server = ThreadingHTTPServer((host, port), make_handler(node))
    server.daemon_threads = True
    node.log(f"INFO:     Uvicorn running on http://{host}:{port} (Press CTRL+C to quit)")
    server.serve_forever()
