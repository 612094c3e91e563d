"""Start the webui's launch.py in this process, with its credentials masked in the log.

A1111 appends COMMANDLINE_ARGS to its arguments and prints them at start ("Launching ...
with arguments: ..."), so --api-auth and --gradio-auth would reach the journal at every
start. systemd can drop such lines only from 253 on (LogFilterPatterns=), and Debian 12
has 252. This wrapper replaces every credential it can find in the arguments and in
COMMANDLINE_ARGS with '********' in what the process writes to stdout and stderr, then runs
launch.py from the working directory exactly as `python launch.py ARGS` would.

Usage (systemd ExecStart, working directory = the release): sdapi_launch.py ARGS...
"""

import os
import runpy
import shlex
import sys

SECRET_FLAGS = ("--api-auth", "--gradio-auth")
MASK = "********"
# A password shorter than this is masked only as part of its "user:password" pair:
# masking every occurrence of, say, "ab" would garble the log.
MIN_BARE = 6


def secrets_in(args):
    """Every credential string in args: whole flag values, each pair, each password."""
    found = set()
    for index, arg in enumerate(args):
        flag, sep, value = arg.partition("=")
        if flag not in SECRET_FLAGS:
            continue
        if not sep:
            value = args[index + 1] if index + 1 < len(args) else ""
        for pair in filter(None, value.split(",")):
            found.add(pair)
            password = pair.partition(":")[2]
            if len(password) >= MIN_BARE:
                found.add(password)
        if value:
            found.add(value)
    # Longest first, so that a pair is masked whole before its password alone.
    return sorted(found, key=len, reverse=True)


class MaskedStream:
    """A text stream that masks the given strings in every write and passes the rest on.

    Python's print() and logging hand each message to one write(), so a credential is
    never split across two calls by them."""

    def __init__(self, stream, secrets):
        self._stream = stream
        self._secrets = secrets

    def write(self, text):
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return self._stream.write(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main():
    args = sys.argv[1:] + shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))
    secrets = secrets_in(args)
    if secrets:
        sys.stdout = MaskedStream(sys.stdout, secrets)
        sys.stderr = MaskedStream(sys.stderr, secrets)
    release = os.getcwd()
    sys.argv[0] = os.path.join(release, "launch.py")
    # As when Python runs launch.py itself: its directory first on the import path.
    sys.path[0] = release
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
