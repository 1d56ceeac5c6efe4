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


TEXTS = ["the cat sat on the mat", "a dog barked at the moon all night", "she sells sea shells by the sea shore",
         "peter piper picked a peck of pickled peppers", "how much wood would a woodchuck chuck"] * 20


def export_tiny_streaming(root, tiny_emitting_model, chunk_size=4, left_chunks=2):
    """A tiny untrained model whose tokenizer emits tokens (conftest's factory), exported for streaming into
    ``root/stream``."""
    from slimasr.export.onnx import export_onnx

    m, _ = tiny_emitting_model(TEXTS, root / "tok")
    export_onnx(m, root / "stream", streaming=True, chunk_size=chunk_size, left_chunks=left_chunks)
    return root / "stream"


def make_wave(seconds, seed=0, sr=16000):
    """A deterministic test signal: a chirp with amplitude modulation and a little noise, float32 in [-1, 1]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f = 150 + 100 * seed + 300 * t
    return (0.3 * np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * 1.3 * t))
            + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m slimasr.cli serve ...`` on a free port; ready once /healthz answers.

    ``cafile``: the certificate authority of a server started with --certfile (its URLs are then wss/https)."""

    def __init__(self, model_dir, *args, log_dir, env=None, timeout=120, cafile=None, verbose=False):
        self.port = free_port()
        self.context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
        self.url = f"{'wss' if cafile else 'ws'}://127.0.0.1:{self.port}"
        self.http_url = f"{'https' if cafile else 'http'}://127.0.0.1:{self.port}"
        self.log = Path(log_dir) / f"server-{self.port}.log"
        cmd = [sys.executable, "-m", "slimasr.cli", *(["-vv"] if verbose else []), "serve", "--port", str(self.port),
               *args]
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
