"""The page of ``slimasr serve`` in a real browser: Debian's headless Chromium (system binary, driven by selenium
through the system chromedriver; nothing is downloaded) captures a WAV file through its fake audio device, the
page resamples it to 16 kHz in an AudioWorklet and streams it over the websocket, and shows the final text.

The embedded default model serves espeak-ng speech. It is small and its output moves with a shift of a few ms
(the fake device may drop 10-30 ms at the start), so the page's final text is checked against the runtime's
decoding of exactly the audio the page sent (recorded in the page by the test), that audio against the WAV
(windowed correlation), and the text against the sentence spoken (character error rate).

Skips with the reason when Chromium, chromedriver, selenium or espeak-ng is missing (``make setup`` installs them
where apt-get can).
"""
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip("no Chromium/chromedriver installed (Debian: apt-get install chromium chromium-driver)",
                allow_module_level=True)
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (it speaks the test sentence)", allow_module_level=True)
pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")        # the default model is exported once, in another process

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from serve_helpers import Server  # noqa: E402

pytestmark = pytest.mark.slow      # a real browser, real-time capture, the default model exported: about 60 s

SENTENCE = "open the door and let the cat out"
TOKEN = "s3cret-Browser-Token"
# test instrumentation, injected before the page's own script: keep every binary websocket message
RECORD_SENT = """
window.__sent = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (m) {
  if (m instanceof ArrayBuffer) window.__sent.push(btoa(String.fromCharCode.apply(null, new Uint8Array(m))));
  return send.call(this, m);
};
"""


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
    """espeak-ng speaking SENTENCE, with 0.6 s of silence either side, as 16-bit PCM (the fake capture device
    reads 8/16/32-bit WAV; 24-bit gives silence)."""
    import soundfile as sf

    d = tmp_path_factory.mktemp("speech")
    raw = d / "raw.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), SENTENCE], check=True, capture_output=True)
    x, sr = sf.read(raw, dtype="float32")
    pad = np.zeros(int(0.6 * sr), np.float32)
    out = d / "speech.wav"
    sf.write(out, np.concatenate([pad, x, pad]), sr, subtype="PCM_16")
    return out, (x.size + 2 * pad.size) / sr


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The embedded default model (exported once into a temporary cache), with a token required."""
    tmp = tmp_path_factory.mktemp("browser-server")
    s = Server(None, "--workers", "1", "--token", TOKEN, log_dir=tmp, env={"SLIMASR_CACHE": str(tmp / "cache")},
               timeout=300)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tls_server(server, tmp_path_factory):
    """The same model over TLS (a certificate from a CA made here), speaking only the WeNet protocol; returns
    (server, the certificate's SPKI pin)."""
    import base64
    import hashlib

    trustme = pytest.importorskip("trustme", reason="trustme makes the test certificate")
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    tmp = tmp_path_factory.mktemp("browser-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(tmp / "server.pem")
    ca.cert_pem.write_to_path(tmp / "ca.pem")
    key = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    s = Server(None, "--workers", "1", "--certfile", str(tmp / "server.pem"), "--protocol", "wenet", log_dir=tmp,
               cafile=tmp / "ca.pem", env={"SLIMASR_CACHE": str(Path(server.log).parent / "cache")})
    yield s, base64.b64encode(hashlib.sha256(spki).digest()).decode()
    s.stop()


def _browser(tmp_path, wav, *flags):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*flags, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-audio-capture={wav}%noloop", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(flag)
    home = tmp_path / "chromium-home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_CACHE_HOME": str(home / "cache")}
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER, env=env))
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_SENT})
    return driver


def _sent_audio(driver, dtype="<f4"):
    """The samples the page sent over its websocket(s), concatenated, as float32 (``<i2``: WeNet's int16 PCM)."""
    import base64

    raw = b"".join(base64.b64decode(p) for p in driver.execute_script("return window.__sent"))
    x = np.frombuffer(raw, dtype)
    return x.astype(np.float32) if dtype == "<f4" else x.astype(np.float32) / 32768


@pytest.fixture(scope="module")
def rec(server):
    from slimasr.runtime import Recognizer

    # the server's default export, in the export cache it was pointed at (slimasr.export.cache layout)
    (export,) = (Path(server.log).parent / "cache" / "exports").glob("streaming-*")
    return Recognizer.from_onnx(export)


def _check_text(page_text, sent, rec):
    """The page shows what the runtime makes of the audio the page sent, and that is the sentence spoken,
    give or take the small model's spelling."""
    import jiwer

    assert page_text == rec.transcribe(sent, 16000).text
    assert jiwer.cer(SENTENCE, page_text) <= 0.15, page_text


def _check_audio(sent, wav):
    """The page's 16 kHz audio is the WAV's: after aligning the starts, 0.25 s windows of speech correlate above
    0.99 (median) with the WAV at a lag within 10 ms of that, found to a quarter sample (the fake device drifts
    by some ppm, may drop a few ms, and its clock is not in phase with the 16 kHz grid)."""
    import soundfile as sf
    from scipy.signal import correlate, resample_poly

    x, sr = sf.read(wav, dtype="float32")
    ref = resample_poly(x, 16000, sr).astype(np.float32)
    n = min(sent.size, ref.size, 3 * 16000)
    lag = int(np.argmax(correlate(sent[:n], ref[:n], mode="full"))) - (n - 1)
    a, b = (sent[lag:], ref) if lag >= 0 else (sent, ref[-lag:])
    w, slack, up = 4000, 160, 4          # window, lag searched either side, upsampling (quarter-sample lags)
    corr = []
    for k in range(slack, min(a.size, b.size) - w - slack, w):
        if b[k:k + w].std() < 0.01:
            continue                                          # silence: nothing to compare
        y = resample_poly(b[k:k + w], up, 1)
        z = resample_poly(a[k - slack:k + w + slack], up, 1)
        j = int(np.argmax(correlate(z, y, mode="valid")))
        corr.append(float(np.corrcoef(z[j:j + y.size], y)[0, 1]))
    assert len(corr) >= 3 and np.median(corr) > 0.99, corr


def _state(driver):
    return driver.find_element(By.ID, "state").get_attribute("data-state")


def _open_page(driver, server, query=f"?token={TOKEN}"):
    """Load the page and wait until it is ready; returns the waiter."""
    wait = WebDriverWait(driver, 30)
    driver.get(f"{server.http_url}/{query}")
    wait.until(lambda d: _state(d) == "idle")
    return wait


def _finals(driver):
    return " ".join(p.text for p in driver.find_elements(By.CSS_SELECTOR, "#finals p.final")).strip()


def test_page_streams_the_microphone_and_shows_the_final_text(server, speech_wav, rec, tmp_path):
    wav, seconds = speech_wav
    driver = _browser(tmp_path, wav)
    try:
        wait = _open_page(driver, server)
        driver.find_element(By.ID, "mic").click()
        wait.until(lambda d: _state(d) == "streaming")
        partials = set()
        t_end = time.monotonic() + seconds + 0.3        # the fake device plays the file in real time
        while time.monotonic() < t_end:
            partials.add(driver.find_element(By.ID, "partial").text)
            time.sleep(0.1)
        driver.find_element(By.ID, "mic").click()        # stop: the rest is flushed, then Done
        wait.until(lambda d: _state(d).startswith("closed"))
        state_text = driver.find_element(By.ID, "state").text
        finals = _finals(driver)
        peak = float(driver.find_element(By.ID, "level").get_attribute("data-max-peak") or 0)
        error = driver.find_element(By.ID, "error").text
        sent = _sent_audio(driver)
    finally:
        driver.quit()
    assert peak > 0.05, "the fake capture device delivered silence"
    assert state_text.startswith("closed (1000"), (state_text, error)
    assert seconds - 0.1 < sent.size / 16000 < seconds + 1.5
    _check_audio(sent, wav)
    _check_text(finals, sent, rec)
    assert any(p and finals.startswith(p) and p != finals for p in partials), partials   # live partial results


def test_page_transcribes_a_chosen_file_and_needs_the_token(server, speech_wav, rec, tmp_path):
    wav, seconds = speech_wav
    driver = _browser(tmp_path, wav)
    try:
        wait = _open_page(driver, server)
        driver.find_element(By.ID, "file").send_keys(str(wav))
        wait.until(lambda d: _state(d).startswith("closed"))
        assert driver.find_element(By.ID, "state").text.startswith("closed (1000"), driver.find_element(
            By.ID, "error").text
        sent = _sent_audio(driver)
        assert abs(sent.size / 16000 - seconds) < 0.01                   # the whole file, resampled by the browser
        _check_text(_finals(driver), sent, rec)
        refused = server.metric('slimasr_rejected_connections_total{reason="unauthorized"}') or 0
        _open_page(driver, server, query="")                               # no token in the page's URL
        assert "token" in driver.find_element(By.ID, "error").text
        driver.find_element(By.ID, "file").send_keys(str(wav))
        wait.until(lambda d: _state(d).startswith("closed"))
        assert _finals(driver) == ""
        assert server.metric('slimasr_rejected_connections_total{reason="unauthorized"}') == refused + 1
    finally:
        driver.quit()
    assert TOKEN not in Path(server.log).read_text()


def test_page_over_https_uses_wss_and_the_wenet_protocol(tls_server, speech_wav, rec, tmp_path):
    """Served with --certfile, the page is loaded over https:// (Chromium trusts exactly that certificate's key,
    pinned by its SPKI hash) and streams over wss://; a server forced to the WeNet protocol gets int16 PCM
    between start and end signals."""
    server, pin = tls_server
    wav, _ = speech_wav
    driver = _browser(tmp_path, wav, f"--ignore-certificate-errors-spki-list={pin}",
                      f"--user-data-dir={tmp_path / 'profile'}")
    try:
        wait = _open_page(driver, server, query="")
        assert driver.execute_script("return window.isSecureContext && location.protocol") == "https:"
        driver.find_element(By.ID, "file").send_keys(str(wav))
        wait.until(lambda d: _state(d).startswith("closed"))
        assert driver.find_element(By.ID, "state").text.startswith("closed (1000")
        _check_text(_finals(driver), _sent_audio(driver, "<i2"), rec)
    finally:
        driver.quit()
    assert server.metric('slimasr_connections_total{protocol="wenet"}') == 1
