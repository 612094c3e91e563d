"""One HTTP/2 request with header bytes no ordinary client sends (test-only).

curl and the h2 libraries lower-case header names and refuse CR or LF in values, which is
exactly what these tests need to send. The script below speaks just enough HTTP/2 over
TLS (ALPN h2) to send one HEADERS frame, its fields as HPACK literals without Huffman
coding, and to report how the server answered: the :status of a HEADERS frame, or the
error code of RST_STREAM or GOAWAY. It runs inside the test container with its stdlib.
"""

from __future__ import annotations

import json

# argv: host port headers-json (a list of [name, value], pseudo-headers included).
# Prints {"status": int|null, "rst_stream": int|null, "goaway": int|null}.
_SCRIPT = r"""
import json, socket, ssl, struct, sys

host, port, fields = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])

def integer(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = [first | limit], value - limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    return bytes(out + [value])

def literal(name, value):
    name, value = name.encode(), value.encode()
    # Literal header field without indexing, new name; H bit 0 (no Huffman).
    return b"\x00" + integer(len(name), 7) + name + integer(len(value), 7) + value

def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

ctx = ssl._create_unverified_context()
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname="localhost")
assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
block = b"".join(literal(n, v) for n, v in fields)
sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
             + frame(1, 0x4 | 0x1, 1, block))  # HEADERS, END_HEADERS | END_STREAM
result, buf = {"status": None, "rst_stream": None, "goaway": None}, b""
while result == {"status": None, "rst_stream": None, "goaway": None}:
    try:
        data = sock.recv(65536)
    except (socket.timeout, ConnectionError, ssl.SSLError):
        break
    if not data:
        break
    buf += data
    while len(buf) >= 9:
        length = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + length:
            break
        kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        payload, buf = buf[9:9 + length], buf[9 + length:]
        if kind == 4 and not flags & 1:
            sock.sendall(frame(4, 1, 0, b""))  # SETTINGS ACK
        elif kind == 3 and stream == 1:
            result["rst_stream"] = int.from_bytes(payload[:4], "big")
        elif kind == 7:
            result["goaway"] = int.from_bytes(payload[4:8], "big")
        elif kind == 1 and stream == 1:
            # nginx sends :status first, as a static-table index (8: 200 ... 14: 500) or a
            # literal with an indexed name; enough to read the code of a short answer.
            first = payload[0]
            table = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}
            if first & 0x80:
                result["status"] = table.get(first & 0x7F)
            else:
                size = payload[1] & 0x7F
                result["status"] = int(payload[2:2 + size]) if not payload[1] & 0x80 else -1
sock.close()
print(json.dumps(result))
"""


def request(node, fields, port=443):
    """Send one HTTP/2 request with exactly these header fields from inside the node."""
    out = node.check_output("timeout 30 python3 -c %s %s %s %s", _SCRIPT, "127.0.0.1", str(port),
                            json.dumps(fields))
    return json.loads(out)
