"""Audio in: reading files, mono mix-down, the sample-range check and resampling (torch-free).

Every path that turns audio into features goes through this module: training (feature cache and on-the-fly
items), ``slimasr decode``, the runtime (files, arrays and streams), the server, bench and the demo. So the same
file gives the same samples everywhere.

Resampling is libsoxr's (python-soxr, "HQ" quality: a linear-phase low-pass with a passband to 0.913 of the
lower Nyquist frequency and 100+ dB stop-band attenuation). :func:`resample` converts a whole array and
:class:`StreamResampler` converts audio that arrives in pieces; both run the same libsoxr resampler, so a
stream and the whole file give bit-identical samples (``tests/test_audio.py`` checks this for several rates
and piece sizes).

Float audio is expected in [-1, 1]. Samples far outside it (more than :data:`MAX_ABS_SAMPLE` in magnitude, e.g.
int16 values sent as float, or 1e20) and NaN/inf are refused by :func:`check_samples` with a
:class:`AudioError` (a ``ValueError``) naming the input and the problem.

>>> from slimasr.audio import load_audio
>>> wave = load_audio("clip.flac")          # float32 (S,), mono, 16 kHz  # doctest: +SKIP
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .fileutil import exception_line

__all__ = ["AudioError", "MAX_ABS_SAMPLE", "SAMPLE_RATE", "StreamResampler", "check_samples", "load_audio",
           "open_audio", "read_audio", "resample", "to_float_mono"]

SAMPLE_RATE = 16000        # Hz; the models' rate (the front-end config of a model is the authority)
MAX_ABS_SAMPLE = 10.0      # float samples beyond +-10 (20 dB over full scale) are refused as not audio in [-1, 1]
_QUALITY = "HQ"            # libsoxr quality recipe, one for whole arrays and streams


class AudioError(ValueError):
    """Audio that cannot be used: a missing, unreadable or empty file, NaN/inf samples, or samples far outside
    [-1, 1]. The message names the input."""


def check_samples(x: np.ndarray, name: str = "audio", max_abs: float = MAX_ABS_SAMPLE) -> np.ndarray:
    """Refuse empty audio, NaN/inf samples and samples far outside [-1, 1]; returns ``x`` unchanged.

    Args:
        x: float samples, any shape.
        name: what to call the input in the error (a file name, ``"accept_waveform"``, ...).
        max_abs: the largest magnitude accepted (default :data:`MAX_ABS_SAMPLE`).

    Raises:
        AudioError: naming ``name`` and the problem.
    """
    if x.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    peak = float(np.max(np.abs(x)))          # NaN propagates, inf stays inf
    if not np.isfinite(peak):
        bad = "NaN" if np.isnan(x).any() else "infinite"
        raise AudioError(f"{name}: audio contains {bad} samples")
    if peak > max_abs:
        hint = " (it looks like unscaled 16-bit PCM: divide by 32768)" if peak <= 32768 else ""
        raise AudioError(f"{name}: samples reach {peak:.3g}, far outside [-1, 1]{hint}")
    return x


def to_float_mono(samples, name: str = "audio") -> np.ndarray:
    """``(S,)`` or ``(S, channels)`` samples of any numeric dtype -> float32 ``(S,)`` (channels averaged).

    Integer PCM is scaled by its type's range (int16 / 32768, uint8 offset by 128, ...); floats are taken as they
    are and must lie in [-1, 1] (see :func:`check_samples`).

    Raises:
        AudioError: not numeric, not 1-D / 2-D, empty, NaN/inf, or far outside [-1, 1].
    """
    x = np.asarray(samples)
    if x.dtype.kind in "iu":
        scale = 2.0 ** (np.iinfo(x.dtype).bits - 1)
        x = (x.astype(np.float64) - (scale if x.dtype.kind == "u" else 0.0)) / scale
    elif x.dtype.kind != "f":
        raise AudioError(f"{name}: expected numeric audio samples, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float64) if x.shape[1] > 1 else x[:, 0]
    elif x.ndim != 1:
        raise AudioError(f"{name}: expected (samples,) or (samples, channels) audio, got shape {x.shape}")
    check_samples(x, name)
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_rates(rate_in: int, rate_out: int) -> tuple[int, int]:
    rate_in, rate_out = int(rate_in), int(rate_out)
    if rate_in <= 0 or rate_out <= 0:
        raise AudioError(f"sample rates must be positive, got {rate_in} Hz -> {rate_out} Hz")
    return rate_in, rate_out


def resample(x: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a whole mono signal with libsoxr: float32 ``(S,)`` -> float32 ``(round(S * rate_out / rate_in),)``.

    A no-op (the input, as float32) when the rates are equal. Bit-identical to :class:`StreamResampler` fed the
    same samples in any pieces.
    """
    rate_in, rate_out = _check_rates(rate_in, rate_out)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"resample expects mono (samples,) audio, got shape {x.shape}")
    if rate_in == rate_out or x.size == 0:
        return x
    import soxr

    return soxr.resample(x, rate_in, rate_out, quality=_QUALITY)


class StreamResampler:
    """Resampling of audio that arrives in pieces: :meth:`accept` each piece, :meth:`flush` at the end.

    The concatenated outputs equal :func:`resample` of the concatenated inputs, bit for bit (the same libsoxr
    resampler; it holds back the few samples its filter still needs until more input or :meth:`flush`).
    """

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE) -> None:
        import soxr

        self.rate_in, self.rate_out = _check_rates(rate_in, rate_out)
        self._soxr = soxr.ResampleStream(self.rate_in, self.rate_out, 1, dtype="float32", quality=_QUALITY)
        self._flushed = False

    def accept(self, x: np.ndarray) -> np.ndarray:
        """Feed mono float32 samples ``(S,)``; returns the output samples now complete (float32, maybe none)."""
        if self._flushed:
            raise AudioError("StreamResampler.accept after flush(); create a new resampler")
        return self._soxr.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=False)

    def flush(self) -> np.ndarray:
        """The remaining output samples; the resampler takes no input afterwards."""
        if self._flushed:
            return np.zeros(0, np.float32)
        self._flushed = True
        return self._soxr.resample_chunk(np.zeros(0, np.float32), last=True)


def _unreadable(name: str, e: BaseException) -> AudioError:
    # libsndfile's own words ("Format not recognised."), without soundfile's "Error opening <object repr>: "
    detail = getattr(e, "error_string", None) or exception_line(e)
    return AudioError(f"{name} is unreadable ({detail}); expected a format libsndfile reads (wav, flac, ogg, mp3, "
                      "...)")


def open_audio(source, name: str | None = None):
    """Open audio for reading: a ``soundfile.SoundFile`` (seek, read, blocks) of any format libsndfile reads.

    The one place where a file becomes audio (:func:`read_audio`, :func:`load_audio`, manifest segments and
    ``slimasr transcribe``'s block reader), so a missing, unreadable or empty input is refused in the same words
    everywhere.

    Args:
        source: a path, or a binary file-like object (e.g. standard input read into memory).
        name: what the errors call it [default: ``audio file PATH``].
    Returns:
        the open ``soundfile.SoundFile`` (use it in a ``with`` block).
    Raises:
        AudioError: naming the input: missing, unreadable (not a format libsndfile knows), an empty file
            (0 bytes), or no samples.
    """
    import soundfile as sf

    is_path = isinstance(source, (str, os.PathLike))
    name = name or f"audio file {source}"
    if is_path and not Path(source).is_file():
        raise AudioError(f"{name} is a directory, expected an audio file" if Path(source).is_dir()
                         else f"{name} does not exist")
    size = os.path.getsize(source) if is_path else source.getbuffer().nbytes if hasattr(source, "getbuffer") else None
    if size == 0:                                        # libsndfile would say "Format not recognised."
        raise AudioError(f"{name} is an empty file (0 bytes)")
    try:
        f = sf.SoundFile(str(source) if is_path else source)
    except Exception as e:  # LibsndfileError, RuntimeError, TypeError depending on the damage
        err = _unreadable(name, e)
        if is_path and Path(source).suffix in (".jsonl", ".json"):
            err = AudioError(f"{err}; a manifest (JSON lines) is decoded with `slimasr decode --data {source}`")
        raise err from None
    if f.frames == 0:
        f.close()
        raise AudioError(f"{name} is empty (0 samples)")
    return f


def read_audio(source, name: str | None = None, offset: float = 0.0,
               duration: float | None = None) -> tuple[np.ndarray, int]:
    """The samples of ``source`` (see :func:`open_audio`) as the file holds them: float32 ``(S, C)`` and the file's
    sample rate; only ``[offset, offset + duration)`` seconds when given (found by seeking: a long recording cut
    into segments is never read whole).

    Raises:
        AudioError: as :func:`open_audio`; a stretch that starts after the end of the file; a read error.
    """
    name = name or f"audio file {source}"
    with open_audio(source, name) as f:
        start = int(round(offset * f.samplerate))
        if start >= f.frames:
            raise AudioError(f"{name}: starts after the end of the file ({f.frames / f.samplerate:.3f} s)")
        frames = -1 if duration is None else int(round(duration * f.samplerate))
        try:
            f.seek(start)
            return f.read(frames, dtype="float32", always_2d=True), f.samplerate
        except Exception as e:  # a damaged file can fail after its header was read
            raise _unreadable(name, e) from None


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any file soundfile (libsndfile) reads: float32 ``(S,)`` in [-1, 1], mono, at ``sample_rate`` Hz.

    Channels are averaged; the file's own rate is converted with :func:`resample`.

    Raises:
        AudioError: naming the file: missing, unreadable (not an audio format libsndfile knows), empty, NaN/inf
            samples, or samples far outside [-1, 1].
    """
    name = f"audio file {path}"
    x, sr = read_audio(path, name)                                 # (S, C)
    return resample(to_float_mono(x, name), sr, sample_rate)
