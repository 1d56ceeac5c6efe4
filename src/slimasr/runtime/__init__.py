"""Torch-free inference on ONNX exports: a :class:`Recognizer` holds the sessions, a :class:`Stream` one
utterance's caches and text.

Imports numpy, onnxruntime, kaldi-native-fbank, sentencepiece (and pyctcdecode/kenlm for beam search) — never
torch. See :mod:`slimasr.runtime.recognizer` for the streaming semantics (sherpa-onnx's loop, the paper's
chunk 64 / hop 32 / left 128 configuration, and how the end of a stream is flushed).

Example::

    from slimasr.runtime import Recognizer, StreamingConfig
    rec = Recognizer.from_onnx("exp/onnx-streaming", num_threads=2, streaming=StreamingConfig.paper())
    stream = rec.create_stream()
    stream.accept_waveform(16000, samples)
    stream.input_finished()
    print(rec.decode(stream).text)
"""
from .decoders import BeamSearchDecoder, Decoder, DecodingConfig, GreedyDecoder, Hypothesis, Vocabulary
from .recognizer import Recognizer, RecognizerConfig, StreamingConfig
from .stream import RecognitionResult, Stream

__all__ = ["BeamSearchDecoder", "Decoder", "DecodingConfig", "GreedyDecoder", "Hypothesis", "RecognitionResult",
           "Recognizer", "RecognizerConfig", "Stream", "StreamingConfig", "Vocabulary"]
