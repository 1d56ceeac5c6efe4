"""Audio too short for one output frame: the shortest length that decodes is derived from the front-end
(features.min_num_samples) and the refusal names the input, its duration and that minimum."""
import math
import re

import pytest

from slimasr.chunking import min_frames
from slimasr.features import FbankConfig, FrontendConfig, check_audio_length, min_num_samples, num_frames
from slimasr.frontends import StftMelConfig

FRONTENDS = {
    "kaldi fbank": FrontendConfig(),
    "kaldi fbank, snip_edges": FrontendConfig(fbank=FbankConfig(snip_edges=True)),
    "kaldi fbank, 8 kHz": FrontendConfig(fbank=FbankConfig(sample_rate=8000)),
    "stft mel, centred": FrontendConfig(kind="stft_mel", stft=StftMelConfig()),
    "stft mel, not centred": FrontendConfig(kind="stft_mel", stft=StftMelConfig(center=False)),
}


@pytest.mark.parametrize("frontend", FRONTENDS.values(), ids=FRONTENDS.keys())
@pytest.mark.parametrize("frames", [1, 2, 7, 11])
def test_min_num_samples_is_the_inverse_of_num_frames(frontend, frames):
    n = min_num_samples(frames, frontend)
    assert num_frames(n, frontend) >= frames and (n == 0 or num_frames(n - 1, frontend) < frames)


@pytest.mark.parametrize("frontend", FRONTENDS.values(), ids=FRONTENDS.keys())
@pytest.mark.parametrize("right_context", [0, 6, 14])    # no subsampling, 4x and 8x convolutional subsampling
def test_the_stated_minimum_is_exact(frontend, right_context):
    need = min_frames(right_context)
    for samples in (0, 1, min_num_samples(need, frontend) - 1):
        if samples < 0 or num_frames(samples, frontend) >= need:
            continue
        with pytest.raises(ValueError) as e:
            check_audio_length(samples, frontend, need, "clip.wav")
        msg = str(e.value)
        m = re.fullmatch(r"clip\.wav: audio too short \(([0-9.]+) ms\); at least ([0-9.]+) ms is needed "
                         rf"\({need} feature frames for one output frame\)", msg)
        assert m, msg
        rate = frontend.sample_rate
        assert float(m.group(1)) == pytest.approx(1000 * samples / rate, rel=0.05)
        stated = float(m.group(2))
        assert num_frames(math.ceil(stated * rate / 1000), frontend) >= need          # that much decodes
        assert num_frames(math.floor((stated - 1) * rate / 1000), frontend) < need    # and 1 ms less does not
    check_audio_length(min_num_samples(need, frontend), frontend, need, "clip.wav")       # no error


def test_one_sample_is_not_zero_ms():
    with pytest.raises(ValueError, match=r"^x\.wav: audio too short \(0\.062 ms\); at least 65 ms is needed"):
        check_audio_length(1, FrontendConfig(), 7, "x.wav")
    with pytest.raises(ValueError, match=r"^audio too short \(0 ms\)"):
        check_audio_length(0, FrontendConfig(), 7)
