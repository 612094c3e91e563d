"""TEST STAND-IN for AUTOMATIC1111's API (A1111 `--api --nowebui`), test-only.

Used by the sdapi.node Molecule scenario `nginx_proxy` so the proxy is tested against a
real backend behind it (limit_req and auth are skipped for `return 200` locations). It is
not A1111, generates nothing, and is never the default of any role variable.

It answers the /sdapi/v1 routes the tests use with A1111-shaped JSON and appends one JSON
line per request to a log file (method, path with its query string, whether an
Authorization header arrived and its scheme, body size and sha256), so tests can count
what reached the backend and whether a body arrived whole.

A POST body containing one of the TRIGGERS answers the way A1111 fails: an exception
(500 with its text and traceback in the body), a validation error of its own (400
"Sampler not found") or a refused --api-auth credential (401).
"""

import base64
import hashlib
import json
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _png_1px():
    """A valid 1x1 grey PNG: the smallest thing shaped like A1111's txt2img output."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


PNG_1PX = base64.b64encode(_png_1px()).decode()

# cmd-flags on a real A1111 returns --api-auth in clear; this value must never reach a client.
SECRET_FLAGS = {"api": True, "nowebui": True, "api_auth": "standin-admin:LEAKED-CMD-FLAGS-SECRET"}

GET_ROUTES = {
    "/sdapi/v1/progress": {"progress": 0.0, "eta_relative": 0.0, "state": {"job_count": 0},
                           "current_image": None, "textinfo": None},
    "/sdapi/v1/sd-models": [{"title": "standin.safetensors [0000000000]", "model_name": "standin",
                             "hash": "0000000000", "filename": "/models/standin.safetensors"}],
    "/sdapi/v1/samplers": [{"name": "Euler a", "aliases": ["k_euler_a"], "options": {}}],
    "/sdapi/v1/options": {"sd_model_checkpoint": "standin.safetensors [0000000000]"},
    "/sdapi/v1/cmd-flags": SECRET_FLAGS,
    "/sdapi/v1/extensions": [],
    "/docs": {"docs": "standin"},
    "/openapi.json": {"openapi": "3.0.2"},
}


TRACEBACK = ("Traceback (most recent call last):\n  File \"/opt/sdapi/webui/modules/api/api.py\", "
             "line 1, in txt2imgapi\nRuntimeError: STANDIN-TRACEBACK CUDA out of memory")
TRIGGERS = {
    b"__standin_raise__": (500, {"error": "RuntimeError", "detail": "", "body": "", "errors": TRACEBACK}),
    b"__standin_bad_sampler__": (400, {"detail": "Sampler not found"}),
    b"__standin_refuse__": (401, {"detail": "Incorrect username or password"}),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    log_lock = threading.Lock()

    body = b""

    def _record(self, status):
        auth = self.headers.get("Authorization")
        line = {"time": time.time(), "method": self.command, "path": self.path, "status": status,
                "authorization": auth.split(" ", 1)[0] if auth else None,
                "authorization_value": auth, "body_bytes": len(self.body),
                "body_sha256": hashlib.sha256(self.body).hexdigest()}
        with self.log_lock, open(self.server.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status == 401:
            self.send_header("WWW-Authenticate", "Basic")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self._record(status)

    def _drain_body(self):
        # Read any body, even on GET: a body left unread would be taken for the next
        # request on the proxy's keep-alive connection.
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._drain_body()
        path = self.path.split("?", 1)[0]
        if path in GET_ROUTES:
            self._send(200, GET_ROUTES[path])
        else:
            self._send(404, {"detail": "Not Found"})

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        self._drain_body()
        path = self.path.split("?", 1)[0]
        trigger = next((t for t in TRIGGERS if t in self.body), None)
        if trigger:
            self._send(*TRIGGERS[trigger])
        elif path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"):
            self._send(200, {"images": [PNG_1PX], "parameters": {}, "info": "{}"})
        elif path in ("/sdapi/v1/extra-single-image",):
            self._send(200, {"html_info": "", "image": PNG_1PX})
        elif path.startswith("/sdapi/v1/"):
            # Every other POST route (options, refresh-*, create/*, server-*, ...) "succeeds":
            # if the proxy let one through, the test would see 200 and the log line.
            self._send(200, {})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_DELETE(self):  # noqa: N802
        self._drain_body()
        self._send(405, {"detail": "Method Not Allowed"})

    def log_message(self, *args):
        pass


def main():
    host, port, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.log_path = log_path
    server.serve_forever()


if __name__ == "__main__":
    main()
