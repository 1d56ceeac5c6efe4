"""Does every path give the same tokens at the end of an utterance? Chunk-masked PyTorch vs the streaming paths.

    python benchmarks/end_of_stream_agreement.py --utterances 30 --out benchmarks/results

Synthesises sentences with espeak-ng (22.05 kHz, several voices) and flite (16 kHz), each in two forms: followed by
0.5 s of silence, and cut 120 ms before the end of speech (inside the last word). Each form is decoded at 16 kHz
and at 22.05 kHz (the other rate made with slimasr's resampler) by:

* ``torch_chunked``: ``ASRModel.ctc_log_probs(feats, chunk_size=C, left_chunks=L)`` + greedy CTC (the reference);
* ``torch_stream``: ``ASRModel.stream_log_probs`` (``stream_step`` chunk by chunk, fed 37 frames at a time);
* ``runtime``: slimasr's ``OnlineRecognizer`` on the streaming export, fed 100 ms pieces at the input rate;
* ``runtime_sherpa_setting`` and ``sherpa_onnx``: slimasr's sherpa-onnx end-of-stream setting
  (``StreamingConfig.sherpa_onnx()``) and sherpa-onnx itself fed the same 16 kHz samples plus its 0.66 s tail
  (only where sherpa-onnx is installed).

Counts the inputs whose whole token sequence differs from the reference (the sherpa-onnx pair is compared with
each other). Features for the PyTorch paths are :func:`slimasr.features.compute_features` (the model's front-end)
of the 16 kHz samples the runtime sees (:func:`slimasr.audio.resample`). Writes ``end_of_stream_agreement.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

SENTENCES = [
    "the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore",
    "a journey of a thousand miles begins with a single step", "all that glitters is not gold",
    "the early bird catches the worm", "actions speak louder than words", "better late than never",
    "every cloud has a silver lining", "fortune favours the bold", "knowledge is power",
    "the pen is mightier than the sword", "time flies when you are having fun", "practice makes perfect",
    "where there is smoke there is fire", "two wrongs do not make a right", "honesty is the best policy",
    "laughter is the best medicine", "an apple a day keeps the doctor away", "rome was not built in a day",
    "the grass is always greener on the other side", "curiosity killed the cat", "beauty is in the eye of the beholder",
    "birds of a feather flock together", "a picture is worth a thousand words", "you can not judge a book by its cover",
    "do not count your chickens before they hatch", "good things come to those who wait",
    "a watched pot never boils", "easy come easy go", "there is no place like home",
]
VOICES = [("espeak-ng", "en-us+m3"), ("espeak-ng", "en-gb+f2"), ("espeak-ng", "en-us+klatt2"), ("flite", "kal16"),
          ("flite", "slt")]


def synthesize(text: str, engine: str, voice: str, work: Path) -> tuple[np.ndarray, int]:
    """(float32 samples, native sample rate) from espeak-ng or flite."""
    import soundfile as sf

    out = work / "tts.wav"
    if engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", voice, "-w", str(out), text]
    else:
        cmd = ["flite", "-voice", voice, "-t", text, "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    x, sr = sf.read(str(out), dtype="float32", always_2d=False)
    return x, sr


def speech_end(x: np.ndarray, sr: int) -> int:
    """Index just after the last 10 ms frame whose energy is within 40 dB of the loudest frame."""
    hop = sr // 100
    frames = x[: x.size // hop * hop].reshape(-1, hop)
    e = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    return int((np.nonzero(e > e.max() - 40)[0][-1] + 1) * hop)


def forms(x: np.ndarray, sr: int) -> dict[str, np.ndarray]:
    end = speech_end(x, sr)
    return {"trailing_silence": np.concatenate([x[:end], np.zeros(sr // 2, np.float32)]),
            "cut_in_last_word": x[: end - int(0.12 * sr)].copy()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", type=int, default=30, help="sentences to synthesise (each -> 4 inputs)")
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--left-chunks", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="directory for end_of_stream_agreement.json")
    a = ap.parse_args()

    import torch

    import slimasr
    from slimasr.chunking import SHERPA_ONNX_TAIL_SECONDS
    from slimasr.export import export_onnx
    from slimasr.audio import resample
    from slimasr.features import compute_features
    from slimasr.runtime import Recognizer, StreamingConfig
    from slimasr.runtime.decoders import ctc_greedy

    try:
        import sherpa_onnx
    except ImportError:
        sherpa_onnx = None
    torch.set_num_threads(1)
    c, left = a.chunk_size, a.left_chunks
    model = slimasr.load_model()
    work = Path(tempfile.mkdtemp(prefix="eos-agree-"))
    files = export_onnx(model, work / "streaming", streaming=True, chunk_size=c, left_chunks=left)
    rec = Recognizer.from_onnx(work / "streaming")
    rec_sh = Recognizer.from_onnx(work / "streaming", streaming=StreamingConfig.sherpa_onnx())
    sh = None
    if sherpa_onnx is not None:
        sh = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(model=str(files["model"]), tokens=str(files["tokens"]),
                                                         chunk_size=c, num_left_chunks=left, num_threads=1)

    def greedy(lp) -> tuple[int, ...]:
        return tuple(ctc_greedy(lp.numpy() if hasattr(lp, "numpy") else lp, prev=-1)[0])

    def stream(r, x, sr) -> tuple[int, ...]:
        s = r.create_stream()
        piece = sr // 10
        for k in range(0, x.size, piece):
            s.accept_waveform(sr, x[k:k + piece])
            r.decode(s)
        s.input_finished()
        return r.decode(s).tokens

    def sherpa(x16) -> tuple[str, ...]:
        s = sh.create_stream()
        s.accept_waveform(16000, np.concatenate([x16, np.zeros(int(SHERPA_ONNX_TAIL_SECONDS * 16000), np.float32)]))
        s.input_finished()
        while sh.is_ready(s):
            sh.decode_stream(s)
        return tuple(sh.get_result_all(s).tokens)

    def pieces(tokens) -> tuple[str, ...]:
        return tuple(rec.vocab.symbols[i].replace("\u2581", " ") for i in tokens)

    counts: dict[str, int] = {"inputs": 0, "torch_stream": 0, "runtime": 0, "runtime_sherpa_setting_vs_sherpa": 0,
                              "runtime_sherpa_setting_vs_reference": 0}
    differ: list[dict] = []
    t0 = time.perf_counter()
    for k, text in enumerate(SENTENCES[: a.utterances]):
        engine, voice = VOICES[k % len(VOICES)]
        x, sr = synthesize(text, engine, voice, work)
        for form, wave in forms(x, sr).items():
            for rate in (16000, 22050):
                xin = wave if sr == rate else resample(wave, sr, rate)
                x16 = resample(xin, rate, 16000)
                feats = torch.from_numpy(compute_features(x16, model.frontend))[None]
                with torch.no_grad():
                    ref = greedy(model.ctc_log_probs(feats, chunk_size=c, left_chunks=left)[0][0])
                    st = greedy(model.stream_log_probs(feats, c, left, feed_frames=37)[0])
                got = {"torch_stream": st, "runtime": stream(rec, xin, rate),
                       "runtime_sherpa_setting": stream(rec_sh, x16, 16000)}
                counts["inputs"] += 1
                row = {"text": text, "voice": f"{engine}/{voice}", "form": form, "rate": rate,
                       "reference": rec.vocab.text(ref)}
                for key in ("torch_stream", "runtime"):
                    if got[key] != ref:
                        counts[key] += 1
                        row[key] = rec.vocab.text(got[key])
                if got["runtime_sherpa_setting"] != ref:
                    counts["runtime_sherpa_setting_vs_reference"] += 1
                    row["runtime_sherpa_setting"] = rec.vocab.text(got["runtime_sherpa_setting"])
                if sh is not None and pieces(got["runtime_sherpa_setting"]) != sherpa(x16):
                    counts["runtime_sherpa_setting_vs_sherpa"] += 1
                    row["sherpa_onnx"] = "".join(sherpa(x16))
                if len(row) > 5:
                    differ.append(row)
    result = {"chunk_size": c, "left_chunks": left, "sherpa_onnx": sherpa_onnx is not None, "differ": counts,
              "examples": differ[:20], "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps({k: result[k] for k in ("chunk_size", "left_chunks", "sherpa_onnx", "differ", "seconds")}))
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "end_of_stream_agreement.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
