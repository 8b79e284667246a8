from pathlib import Path

import numpy as np
import pytest

from nolly_pipeline.processing.lossy_encode import Encoded, measure_file, output_bit_rate, ringing_margin_db
from nolly_pipeline_tests.processing.reference import ffmpeg


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_window_peaks_of_late_starting_audio_line_up(tmp_path, suffix):
    """MP4/MOV keep the AAC priming before audio that starts late; windows must not shift."""
    rate, window = 16_000, 320
    clicks = tmp_path / "clicks.wav"
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc='if(eq(mod(n,4800),2400),0.95,0)':s={rate}:d=3", str(clicks))
    src = tmp_path / f"late{suffix}"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x64:r=25:d=3.5", "-itsoffset", "0.5", "-i", str(clicks),
           "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-c:a", "aac", str(src))
    _, peak_db, peaks = measure_file(src, window, -20.0, start=0.5)
    hot = np.flatnonzero(peaks > 10 ** (-20 / 20))
    expected = (2400 + 4800 * np.arange(10)) // window
    assert set(expected) <= set(hot) and set(hot) <= set(expected) | set(expected + 1) | set(expected - 1)
    assert -3.0 < peak_db < 3.0, "the clicks' peak (0.95, AAC rings over it)"


def test_the_kept_encode_is_under_the_limit_first_then_least_over_then_nearest():
    limit, target = -1.5, -16.0

    def encode(loudness: float, peak: float) -> Encoded:
        return Encoded(Path("x.mp3"), loudness, peak, clipped=False)

    under_but_quiet, over_a_little, over_more = encode(-16.8, -2.0), encode(-16.0, -1.3), encode(-16.0, -0.5)
    near_and_under = encode(-16.1, -1.6)
    ranked = sorted([over_more, under_but_quiet, over_a_little, near_and_under], key=lambda e: e.rank(limit, target))
    assert ranked == [near_and_under, under_but_quiet, over_a_little, over_more]
    # Too quiet to normalise (no target): only the peak counts.
    assert encode(-40.0, -2.0).rank(limit, None) == encode(-30.0, -3.0).rank(limit, None)


def test_the_first_encode_leaves_more_room_at_low_bit_rates():
    assert output_bit_rate(None, 1) == 64_000 and output_bit_rate(3_000, 2) == 128_000
    assert output_bit_rate(320_000, 2) == 320_000  # the editor's choice is kept
    assert ringing_margin_db(64_000, 1) == 2.0 and ringing_margin_db(256_000, 2) == 1.0
    assert ringing_margin_db(96_000, 1) == pytest.approx(1.5)
