"""Shared by the server tests: ``slimasr serve`` as a real process on a free port of 127.0.0.1."""
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m slimasr.cli serve ...`` on a free port; ready once /healthz answers.

    ``cafile``: the certificate authority of a server started with --certfile (its URLs are then wss/https)."""

    def __init__(self, model_dir, *args, log_dir, env=None, timeout=120, cafile=None):
        self.port = free_port()
        self.context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
        self.url = f"{'wss' if cafile else 'ws'}://127.0.0.1:{self.port}"
        self.http_url = f"{'https' if cafile else 'http'}://127.0.0.1:{self.port}"
        self.log = Path(log_dir) / f"server-{self.port}.log"
        cmd = [sys.executable, "-m", "slimasr.cli", "serve", "--port", str(self.port), *args]
        if model_dir is not None:
            cmd += ["--model", str(model_dir)]
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.output()}")
            try:
                if self.http("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready after {timeout} s:\n{self.output()}")
            time.sleep(0.1)

    def http(self, path, headers=None):
        """(status, body, content type) of a GET."""
        req = urllib.request.Request(f"{self.http_url}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.context) as r:
                return r.status, r.read().decode(), r.headers.get("Content-Type")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), e.headers.get("Content-Type")

    def metric(self, name):
        for line in self.http("/metrics")[1].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def output(self):
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
