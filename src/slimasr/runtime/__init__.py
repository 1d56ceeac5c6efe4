"""Torch-free inference on ONNX exports, shaped like sherpa-onnx: an :class:`OnlineRecognizer` (streaming graph)
and an :class:`OfflineRecognizer` (offline graph) hold the session; a :class:`Stream` / :class:`OfflineStream`
holds one utterance. Chunking and the end of a stream follow :mod:`slimasr.chunking`.

Imports numpy, onnxruntime, kaldi-native-fbank, sentencepiece (and pyctcdecode/kenlm for beam search) — never
torch. See :mod:`slimasr.runtime.recognizer` for the streaming semantics (sherpa-onnx's loop, the paper's
chunk 64 / hop 32 / left 128 configuration, and the end of a stream), :mod:`slimasr.runtime.session` for
execution providers.

Example::

    from slimasr.runtime import OnlineRecognizer, RecognizerConfig, StreamingConfig
    rec = OnlineRecognizer.from_onnx("exp/onnx-streaming", RecognizerConfig(num_threads=2,
                                                                            streaming=StreamingConfig.paper()))
    stream = rec.create_stream()
    stream.accept_waveform(16000, samples)
    stream.input_finished()
    print(rec.decode(stream).text)
"""
from ..chunking import EndOfStream
from .decoders import BeamSearchDecoder, Decoder, DecodingConfig, GreedyDecoder, Hypothesis, Vocabulary
from .recognizer import OfflineRecognizer, OnlineRecognizer, Recognizer, RecognizerConfig, StreamingConfig
from .stream import NonFiniteStateError, OfflineStream, RecognitionResult, Stream

__all__ = ["BeamSearchDecoder", "Decoder", "DecodingConfig", "EndOfStream", "GreedyDecoder", "Hypothesis",
           "NonFiniteStateError", "OfflineRecognizer", "OfflineStream", "OnlineRecognizer", "RecognitionResult",
           "Recognizer", "RecognizerConfig", "Stream", "StreamingConfig", "Vocabulary"]
