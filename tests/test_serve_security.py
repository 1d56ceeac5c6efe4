"""``slimasr serve`` exposed: TLS (wss:// and https://, the page included) with a certificate made at test time
and clients that verify it; bearer tokens (header or query, 401 before any audio, counted in /metrics, never
logged); allowed browser origins (403); a wrong token closes only its own connection.
"""
import asyncio
import json
import ssl
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("websockets")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
trustme = pytest.importorskip("trustme", reason="trustme makes the test certificates (pip install -e '.[test]')")

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402

from serve_helpers import Server, export_tiny_streaming, make_wave  # noqa: E402
from slimasr.runtime import Recognizer  # noqa: E402
from slimasr.serve.access import AccessPolicy, read_tokens_file, redact  # noqa: E402

pytestmark = pytest.mark.slow  # exports a model and starts TLS servers

TOKENS = ("tok-Alpha-0123456789", "tok-Beta-9876543210")
ORIGIN = "https://app.example.org"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_emitting_model):
    return export_tiny_streaming(tmp_path_factory.mktemp("security"), tiny_emitting_model)


@pytest.fixture(scope="module")
def rec(exported):
    return Recognizer.from_onnx(exported)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A certificate authority and a certificate for 127.0.0.1 that it signed (PEM files)."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(d / "ca.pem")
    cert.cert_chain_pems[0].write_to_path(d / "cert.pem")
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(d / "cert.pem", append=True)
    cert.private_key_pem.write_to_path(d / "key.pem")
    (d / "tokens.txt").write_text(f"# clients\n{TOKENS[0]}\n\n{TOKENS[1]}\n")
    return d


@pytest.fixture(scope="module")
def server(exported, pki, tmp_path_factory):
    s = Server(exported, "--no-endpoint", "--certfile", str(pki / "cert.pem"), "--keyfile", str(pki / "key.pem"),
               "--tokens-file", str(pki / "tokens.txt"), "--allow-origin", ORIGIN, log_dir=tmp_path_factory.mktemp(
                   "log"), cafile=pki / "ca.pem", verbose=True)
    yield s
    s.stop()


async def session(server, x, headers=None, query=""):
    """Stream ``x`` over wss:// (verifying the server against the test CA); (final text, close code)."""
    async with connect(server.url + "/" + query, ssl=server.context, additional_headers=headers) as ws:
        await ws.send(x.astype("<f4").tobytes())
        await ws.send("Done")
        replies = [m async for m in ws]
        return json.loads(replies[-2])["text"], ws.close_code


async def refused(server, headers=None, query=""):
    """The HTTP status of a handshake the server refuses."""
    with pytest.raises(InvalidStatus) as e:
        async with connect(server.url + "/" + query, ssl=server.context, additional_headers=headers):
            pass
    return e.value.response.status_code, e.value.response.headers.get("WWW-Authenticate")


def test_tls_page_and_websocket_with_a_verified_certificate(server, rec):
    status, body, ctype = server.http("/")                              # https://, verified against the CA
    assert status == 200 and ctype.startswith("text/html") and "app.js" in body
    status, js, ctype = server.http("/app.js")
    assert status == 200 and "javascript" in ctype and "getUserMedia" in js and "audioWorklet" in js
    status, js, _ = server.http("/capture-worklet.js")
    assert status == 200 and "registerProcessor" in js
    assert json.loads(server.http("/config.json")[1]) == {"sample_rate": 16000, "protocol": "sherpa",
                                                          "token_required": True}
    assert server.http("/nothing-here")[0] == 404
    x = make_wave(1.5, seed=1)
    text, code = asyncio.run(session(server, x, headers={"Authorization": f"Bearer {TOKENS[0]}"}))
    assert code == 1000 and text == rec.transcribe(x).text and text
    with pytest.raises(ssl.SSLCertVerificationError):                   # a client that does not trust the CA
        asyncio.run(connect(server.url, ssl=ssl.create_default_context()).__aenter__())


def test_tokens_are_required_checked_and_counted(server, rec):
    before = server.metric('slimasr_rejected_connections_total{reason="unauthorized"}') or 0
    x = make_wave(1.2, seed=2)
    wrong = [None, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Basic {TOKENS[0]}"},
             {"Authorization": f"Bearer {TOKENS[0][:-1]}"}]

    async def scenario():
        ok = asyncio.create_task(session(server, x, query=f"?token={TOKENS[1]}"))    # a browser-style client
        bad = [await refused(server, headers=h) for h in wrong]
        bad.append(await refused(server, query="?token=" + TOKENS[1].upper()))
        return bad, await ok

    bad, (text, code) = asyncio.run(scenario())
    assert bad == [(401, 'Bearer realm="slimasr"')] * 5
    assert code == 1000 and text == rec.transcribe(x).text            # the connection alongside is unaffected
    assert server.metric('slimasr_rejected_connections_total{reason="unauthorized"}') == before + 5
    log = server.log.read_text()
    assert "<redacted>" in log                                          # -vv logs requests, with tokens hidden
    assert not any(t in log for t in TOKENS) and TOKENS[1].upper() not in log


def test_sighup_rotates_the_tokens_file(exported, tmp_path, rec):
    """Tokens are rotated without a restart: after SIGHUP the file's new token is accepted, the removed one is
    refused, and a stream open during the reload goes on; an unusable file keeps the current tokens."""
    import signal
    import time

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("old-token-1234567890\n")
    s = Server(exported, "--no-endpoint", "--tokens-file", str(tokens), log_dir=tmp_path)
    x = make_wave(1.5, seed=5)

    def reload(text):
        def reloads():
            log = s.log.read_text()
            return log.count("tokens reloaded") + log.count("keeping the current tokens")

        before = reloads()
        tokens.write_text(text)
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while reloads() == before and time.monotonic() < deadline:
            time.sleep(0.05)

    async def stream_during_reload():
        async with connect(s.url, additional_headers={"Authorization": "Bearer old-token-1234567890"}) as ws:
            await ws.send(x[:8000].astype("<f4").tobytes())
            await asyncio.to_thread(reload, "# rotated\nnew-token-0987654321\n")
            await ws.send(x[8000:].astype("<f4").tobytes())
            await ws.send("Done")
            return json.loads([m async for m in ws][-2])["text"], ws.close_code

    try:
        assert asyncio.run(stream_during_reload()) == (rec.transcribe(x).text, 1000)
        old = {"Authorization": "Bearer old-token-1234567890"}
        new = {"Authorization": "Bearer new-token-0987654321"}
        assert asyncio.run(refused(s, headers=old))[0] == 401
        assert asyncio.run(session(s, x, headers=new)) == (rec.transcribe(x).text, 1000)
        reload("")                                                       # no token in it: kept as it was
        assert asyncio.run(session(s, x, headers=new))[1] == 1000
        assert "keeping the current tokens" in s.log.read_text() and s.proc.poll() is None
        assert "token-" not in s.log.read_text()
    finally:
        s.stop()


def test_allowed_origins(server, rec):
    auth = {"Authorization": f"Bearer {TOKENS[1]}"}
    assert asyncio.run(refused(server, headers={**auth, "Origin": "https://evil.example.com"}))[0] == 403
    x = make_wave(1.0, seed=3)
    for origin in (ORIGIN, f"https://127.0.0.1:{server.port}"):       # allowed, and the server's own page
        assert asyncio.run(session(server, x, headers={**auth, "Origin": origin})) == (rec.transcribe(x).text, 1000)
    assert server.metric('slimasr_rejected_connections_total{reason="origin"}') == 1


def test_access_policy_unit():
    p = AccessPolicy(tokens=TOKENS, allow_origins=(ORIGIN,))
    assert p.token_valid(TOKENS[1]) and not p.token_valid(None) and not p.token_valid("")
    assert not p.token_valid(TOKENS[1] + "x") and not p.token_valid("\udcff")
    assert AccessPolicy().token_valid(None)                             # no tokens configured: open
    assert "tok-" not in repr(p)
    assert p.check({"Authorization": f"bearer {TOKENS[0]}"}, "/") is None
    assert p.check({}, f"/?a=1&token={TOKENS[0]}") is None
    assert p.check({}, "/")[0] == 401
    assert p.check({"Origin": "https://x.org", "Authorization": f"Bearer {TOKENS[0]}"}, "/")[0] == 403
    assert redact(f"GET /?x=1&token={TOKENS[0]}&y=2 HTTP/1.1") == "GET /?x=1&token=<redacted>&y=2 HTTP/1.1"
    assert redact(f"< Authorization: Basic {TOKENS[1]}") == "< Authorization: <redacted>"
    assert redact(f"sent bearer {TOKENS[1]} once") == "sent bearer <redacted> once"
    with pytest.raises(ValueError, match="scheme://host"):
        AccessPolicy(allow_origins=("app.example.org",))


def test_cli_errors(tmp_path, exported, pki):
    (tmp_path / "empty.txt").write_text("# nobody\n")
    (tmp_path / "bad.txt").write_text("two words\n")
    assert read_tokens_file(pki / "tokens.txt") == TOKENS
    cases = [(["--certfile", str(tmp_path / "missing.pem")], "missing.pem does not exist"),
             (["--keyfile", str(pki / "key.pem")], "--keyfile needs --certfile"),
             (["--certfile", str(pki / "cert.pem")], "holds no private key: give --keyfile"),
             (["--certfile", str(pki / "ca.pem"), "--keyfile", str(pki / "key.pem")], "not a matching PEM"),
             (["--tokens-file", str(tmp_path / "empty.txt")], "has no token"),
             (["--tokens-file", str(tmp_path / "bad.txt")], "line 1"),
             (["--allow-origin", "example.org"], "scheme://host")]
    for args, words in cases:
        p = subprocess.run([sys.executable, "-m", "slimasr.cli", "serve", "--model", str(exported), *args],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 1 and words in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)


def test_bench_server_with_tls_and_token(server, pki, tmp_path):
    import soundfile as sf

    f = tmp_path / "u.wav"
    sf.write(f, make_wave(1.0, seed=4), 16000)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": str(f), "duration": 1.0, "text": "x"}) + "\n")
    out = tmp_path / "r.json"
    base = [sys.executable, "-m", "slimasr.cli", "bench-server", "--url", server.url, "--data",
            str(tmp_path / "m.jsonl"), "--cafile", str(pki / "ca.pem"), "--json", str(out)]
    p = subprocess.run(base + ["--token", TOKENS[0]], capture_output=True, text=True, timeout=120)
    r = json.loads(out.read_text())
    assert p.returncode == 0 and r["errors"] == 0 and r["final_latency"]["count"] == 1 and r["server_rtf"] > 0
    p = subprocess.run(base, capture_output=True, text=True, timeout=120)    # no token: an error, not a refusal
    r = json.loads(out.read_text())
    assert r["errors"] == 1 and r["refused"] == 0 and "401" in r["error_messages"][0]
    assert np.isfinite(r["wall_seconds"])
