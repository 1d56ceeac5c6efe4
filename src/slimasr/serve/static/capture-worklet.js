// AudioWorklet of the slimasr page: mixes the microphone down to mono, resamples it to the server's rate and
// posts it to the page in pieces of `chunkSeconds`.
//
// The resampler is a windowed-sinc interpolator (Blackman window, 12 zero crossings each side, cut-off at 0.92
// of the output Nyquist frequency, weights normalised to unit DC gain): every output sample n at input position
// t = n * inRate / outRate is the low-pass filtered input evaluated at t, so nothing above the output band
// aliases into it. The same class is used whatever the capture rate (44.1 kHz, 48 kHz, ...).

class SincResampler {
  constructor(inRate, outRate) {
    this.step = inRate / outRate;                               // input samples per output sample
    this.cutoff = 0.5 * Math.min(1, outRate / inRate) * 0.92;  // cycles per input sample
    this.half = Math.ceil(12 / (2 * this.cutoff));             // taps each side
    this.buf = new Float32Array(0);
    this.base = 0;        // input index of buf[0]
    this.n = 0;           // next output sample
    this.total = 0;       // input samples received
  }

  kernel(u) {
    const x = u / this.half;
    if (x <= -1 || x >= 1) return 0;
    const a = 2 * Math.PI * this.cutoff * u;
    const sinc = a === 0 ? 1 : Math.sin(a) / a;
    return sinc * (0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x));
  }

  append(x) {
    const merged = new Float32Array(this.buf.length + x.length);
    merged.set(this.buf);
    merged.set(x, this.buf.length);
    this.buf = merged;
    this.total += x.length;
  }

  produce(limit) {
    const out = [];
    const end = this.base + this.buf.length;
    while (this.n < limit) {
      const t = this.n * this.step;
      const c = Math.floor(t);
      if (c + this.half >= end) break;                       // needs input not received yet
      let acc = 0, wsum = 0;
      for (let k = c - this.half + 1; k <= c + this.half; k++) {
        const h = this.kernel(t - k);
        const i = k - this.base;
        acc += h * (i >= 0 && i < this.buf.length ? this.buf[i] : 0);
        wsum += h;
      }
      out.push(wsum !== 0 ? acc / wsum : 0);
      this.n++;
    }
    const keep = Math.floor(this.n * this.step) - this.half;   // inputs no later output needs
    if (keep > this.base) {
      this.buf = this.buf.slice(Math.min(keep - this.base, this.buf.length));
      this.base = keep;
    }
    return Float32Array.from(out);
  }

  push(x) {
    this.append(x);
    return this.produce(Infinity);
  }

  flush() {
    const want = Math.ceil(this.total / this.step);           // outputs whose position lies in the input
    this.append(new Float32Array(this.half + 1));            // the right-hand taps of the last outputs
    return this.produce(want);
  }
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.resampler = new SincResampler(sampleRate, o.targetRate);
    this.chunk = Math.max(1, Math.round(o.targetRate * o.chunkSeconds));
    this.pieces = [];
    this.length = 0;
    this.peak = 0;
    this.stopped = false;
    this.port.onmessage = (e) => {
      if (e.data === "flush" && !this.stopped) {
        this.stopped = true;
        this.queue(this.resampler.flush());
        this.post(true);
      }
    };
  }

  queue(y) {
    if (y.length) {
      this.pieces.push(y);
      this.length += y.length;
    }
  }

  post(final) {
    const samples = new Float32Array(this.length);
    let k = 0;
    for (const p of this.pieces) {
      samples.set(p, k);
      k += p.length;
    }
    this.pieces = [];
    this.length = 0;
    this.port.postMessage({samples, peak: this.peak, final}, [samples.buffer]);
    this.peak = 0;
  }

  process(inputs) {
    if (this.stopped) return false;
    const channels = inputs[0];
    if (channels && channels.length) {
      const n = channels[0].length;
      const mono = new Float32Array(n);
      for (const ch of channels) for (let i = 0; i < n; i++) mono[i] += ch[i] / channels.length;
      for (let i = 0; i < n; i++) this.peak = Math.max(this.peak, Math.abs(mono[i]));
      this.queue(this.resampler.push(mono));
      if (this.length >= this.chunk) this.post(false);
    }
    return true;
  }
}

registerProcessor("slimasr-capture", CaptureProcessor);
