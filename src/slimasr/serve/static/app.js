// The slimasr page: streams the microphone (or an audio file) to the server that served this page, over its
// websocket protocol (sherpa-onnx: float32 samples and "Done"; WeNet: a start signal, int16 PCM and an end
// signal), and shows partial and final results as they come. A token in this page's URL (?token=...) is
// passed on to the websocket (browsers cannot set an Authorization header there).

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const CHUNK_SECONDS = 0.1;          // audio per message
const MAX_BUFFERED = 1 << 20;       // bytes queued in the socket before a file upload waits

let config = {sample_rate: 16000, protocol: "sherpa", token_required: false};
let session = null;                  // the websocket session in progress
let capture = null;                  // the microphone capture in progress
let maxPeak = 0;

function setState(state, text) {
  const el = $("state");
  el.dataset.state = state;
  el.textContent = text || state;
}

function showError(message) {
  $("error").textContent = message;
}

function websocketUrl() {
  const u = new URL(".", location.href);                     // the page's directory (works behind a proxy path)
  u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  u.search = token ? "?token=" + encodeURIComponent(token) : "";
  u.hash = "";
  return u.href;
}

// ---------------------------------------------------------------------------------------------- results
function addFinal(text) {
  if (!text) return;
  const p = document.createElement("p");
  p.className = "final";
  p.textContent = text;
  $("finals").appendChild(p);
}

function setPartial(text) {
  $("partial").textContent = text || "";
}

function clearTranscript() {
  $("finals").replaceChildren();
  setPartial("");
  showError("");
}

// ---------------------------------------------------------------------------------------------- session
class Session {
  constructor(label, onClosed) {
    this.label = label;
    this.protocol = config.protocol;
    this.ready = false;
    this.queue = [];
    this.finished = false;
    this.onClosed = onClosed;
    this.ws = new WebSocket(websocketUrl());
    this.ws.binaryType = "arraybuffer";
    setState("connecting", "connecting");
    this.ws.onopen = () => {
      if (this.protocol === "wenet") {
        this.ws.send(JSON.stringify({signal: "start", nbest: 1, continuous_decoding: true}));
      } else {
        this.markReady();
      }
    };
    this.ws.onmessage = (e) => this.onMessage(e.data);
    this.ws.onerror = () => showError("the connection to the server failed" +
                                       (config.token_required && !token ? " (this server needs ?token=... in the page URL)" : ""));
    this.ws.onclose = (e) => this.onClose(e);
  }

  markReady() {
    this.ready = true;
    setState("streaming", this.label);
    for (const m of this.queue) this.ws.send(m);
    this.queue = [];
    if (this.finished) this.sendEnd();
  }

  encode(samples) {
    if (this.protocol === "wenet") {
      const pcm = new Int16Array(samples.length);
      for (let i = 0; i < samples.length; i++) {
        pcm[i] = Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32768)));
      }
      return pcm.buffer;
    }
    return new Float32Array(samples).buffer;    // float32, little-endian on every platform browsers run on
  }

  send(samples) {
    if (this.finished || !samples.length) return;
    const m = this.encode(samples);
    if (this.ready) this.ws.send(m); else this.queue.push(m);
  }

  finish() {
    if (this.finished) return;
    this.finished = true;
    if (this.ready) this.sendEnd();
  }

  sendEnd() {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(this.protocol === "wenet" ? JSON.stringify({signal: "end"}) : "Done");
    setState("finishing", "finishing");
  }

  onMessage(data) {
    if (data === "Done!") return;
    let r;
    try {
      r = JSON.parse(data);
    } catch (err) {
      showError("unexpected reply from the server");
      return;
    }
    if (this.protocol === "wenet") {
      if (r.status === "failed") { showError(r.message); return; }
      if (r.type === "server_ready") { this.markReady(); return; }
      if (r.type === "speech_end") return;
      let sentence = "";
      try { sentence = JSON.parse(r.nbest)[0].sentence; } catch (err) { sentence = ""; }
      if (r.type === "final_result") { addFinal(sentence); setPartial(""); } else { setPartial(sentence); }
      return;
    }
    if (r.is_final) { addFinal(r.text); setPartial(""); } else { setPartial(r.text); }
  }

  onClose(e) {
    const normal = e.code === 1000 || e.code === 1001;
    setState(normal ? "closed" : "closed-error",
             `closed (${e.code}${e.reason ? ": " + e.reason : ""})`);
    if (!normal) {
      const why = e.code === 1006 && config.token_required ? " - was a valid ?token= given?" : "";
      showError(`the server closed the connection: ${e.code} ${e.reason || ""}${why}`);
    }
    if (session === this) session = null;
    if (this.onClosed) this.onClosed();
  }
}

// ---------------------------------------------------------------------------------------------- microphone
async function startMicrophone() {
  clearTranscript();
  const media = await navigator.mediaDevices.getUserMedia({
    audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false},
  });
  const track = media.getAudioTracks()[0];
  const rate = track.getSettings().sampleRate;                // run the graph at the device's own rate
  const context = new AudioContext(rate ? {sampleRate: rate} : {});
  await context.audioWorklet.addModule("capture-worklet.js");
  const source = context.createMediaStreamSource(media);
  const node = new AudioWorkletNode(context, "slimasr-capture", {
    numberOfInputs: 1, numberOfOutputs: 0,
    processorOptions: {targetRate: config.sample_rate, chunkSeconds: CHUNK_SECONDS},
  });
  const release = () => {
    source.disconnect();
    for (const t of media.getTracks()) t.stop();
    context.close();
    $("level").value = 0;
  };
  const s = new Session("listening", () => stopMicrophone(false));
  session = s;
  node.port.onmessage = (e) => {
    const {samples, peak, final} = e.data;
    maxPeak = Math.max(maxPeak, peak);
    $("level").value = Math.min(1, peak);
    $("level").dataset.maxPeak = String(maxPeak);
    s.send(samples);
    if (final) {
      s.finish();
      release();
    }
  };
  source.connect(node);
  await context.resume();
  capture = {node, release, session: s};
  setMicButton(true);
}

function stopMicrophone(flush = true) {
  const c = capture;
  if (!c) return;
  capture = null;
  setMicButton(false);
  if (flush && c.session.ws.readyState <= WebSocket.OPEN) {
    c.node.port.postMessage("flush");           // the worklet sends the rest, then the session ends
  } else {
    c.release();
  }
}

function setMicButton(on) {
  const b = $("mic");
  b.setAttribute("aria-pressed", on ? "true" : "false");
  b.textContent = on ? "Stop" : "Start microphone";
  $("file").disabled = on;
}

// ---------------------------------------------------------------------------------------------- files
async function transcribeFile(file) {
  if (capture || session) {
    showError("a stream is in progress; stop it first");
    return;
  }
  clearTranscript();
  setState("decoding", `reading ${file.name}`);
  let audio;
  try {
    // decodeAudioData resamples to the context's rate: the server's
    const ctx = new OfflineAudioContext(1, 1, config.sample_rate);
    audio = await ctx.decodeAudioData(await file.arrayBuffer());
  } catch (err) {
    setState("error", "error");
    showError(`${file.name}: not an audio file the browser can decode`);
    return;
  }
  const n = audio.length;
  const mono = new Float32Array(n);
  for (let c = 0; c < audio.numberOfChannels; c++) {
    const x = audio.getChannelData(c);
    for (let i = 0; i < n; i++) mono[i] += x[i] / audio.numberOfChannels;
  }
  const s = new Session(`sending ${file.name}`, null);
  session = s;
  const step = Math.round(config.sample_rate * CHUNK_SECONDS);
  for (let k = 0; k < n && !s.finished; k += step) {
    s.send(mono.subarray(k, k + step));
    while (s.ws.readyState <= WebSocket.OPEN && s.ws.bufferedAmount > MAX_BUFFERED) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    if (s.ws.readyState > WebSocket.OPEN) return;
  }
  s.finish();
}

// ---------------------------------------------------------------------------------------------- wiring
async function init() {
  try {
    const r = await fetch("config.json", {cache: "no-store"});
    if (r.ok) config = await r.json();
  } catch (err) {
    /* keep the defaults */
  }
  if (config.token_required && !token) {
    showError("this server needs an access token: open this page as ...?token=YOUR_TOKEN");
  }
  if (!navigator.mediaDevices || !window.AudioWorkletNode) {
    showError("microphone capture needs a secure context (https:// or http://localhost) and a current browser");
  } else {
    $("mic").disabled = false;
  }
  setState("idle", "idle");
  $("mic").addEventListener("click", async () => {
    if (capture) {
      stopMicrophone(true);
      return;
    }
    if (session) return;
    $("mic").disabled = true;
    try {
      await startMicrophone();
    } catch (err) {
      setState("error", "error");
      showError(`microphone: ${err.message || err}`);
      if (session) session.ws.close();
    } finally {
      $("mic").disabled = false;
    }
  });
  $("file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    e.target.value = "";
    if (f) transcribeFile(f);
  });
  const drop = $("drop");
  for (const ev of ["dragenter", "dragover"]) {
    document.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    document.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  document.addEventListener("drop", (e) => {
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) transcribeFile(f);
  });
}

init();
