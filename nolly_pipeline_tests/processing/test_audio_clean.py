import numpy as np
import pyloudnorm
import pytest
from scipy.signal import butter, sosfilt

from nolly_pipeline.errors import InputError
from nolly_pipeline.errors import CanceledError
from nolly_pipeline.processing.audio_clean import AudioCleanSettings, audio_clean
from nolly_pipeline.processing.media import probe
from nolly_pipeline.processing.validation import parse_settings
from nolly_pipeline_tests.processing.reference import (
    encode_audio,
    ffmpeg,
    mix_at_snr,
    packet_payloads,
    pink_noise,
    read_audio,
    tone_bursts,
    true_peak_db,
)


def _si_snr(reference, estimate, max_lag=2000):
    """Scale-invariant SNR after aligning the estimate (the pipeline may shift by resampling)."""
    n = len(reference) - max_lag
    lags = range(-max_lag, max_lag + 1, 1)
    scores = [np.dot(reference[max_lag:n], estimate[max_lag + k : n + k]) for k in lags]
    lag = list(lags)[int(np.argmax(scores))]
    ref, est = reference[max_lag:n], estimate[max_lag + lag : n + lag]
    scale = np.dot(ref, est) / np.dot(ref, ref)
    return 10 * np.log10(np.sum((scale * ref) ** 2) / np.sum((est - scale * ref) ** 2)), lag


# nsnet2 keeps dialogue intelligible under other voices (STOI, issue 10 and
# test_denoise_quality.py), but its per-bin gains leave more of pink noise's low end and
# touch more of the speech than RNNoise + the Wiener post-filter these SI-SNR thresholds
# were set on. Kept as the goal, not lowered: a strict xfail until a denoiser meets both.
_NSNET2_PINK_SI_SNR = pytest.mark.xfail(
    strict=True,
    reason="known gap: nsnet2 improves SI-SNR on pink noise by 6.0 dB (high-pass off) / "
    "6.5 dB (80 Hz), not 7; +5.0 dB over the high-pass alone, not 5.8",
)


@pytest.mark.parametrize("denoise", ["dfn3", "rnnoise", "nsnet2"])
@pytest.mark.parametrize("highpass_hz", [0, 80])
@pytest.mark.parametrize("noise", ["white", "pink"])
def test_denoise_improves_speech_snr_by_7_db(speech_48k, tmp_path, noise, highpass_hz, denoise, request):
    """Speech plus noise mixed at 5 dB SNR comes out at least 7 dB cleaner.

    With the high-pass off, this is the denoiser alone. With the default 80 Hz high-pass,
    the output is judged against equally filtered speech: the high-pass is a requested EQ,
    and taking the speech's lows away must not count as noise.
    """
    if (noise, denoise) == ("pink", "nsnet2"):
        request.applymarker(_NSNET2_PINK_SI_SNR)
    rng = np.random.default_rng(7)
    noise_signal = rng.standard_normal(len(speech_48k)) if noise == "white" else pink_noise(len(speech_48k), rng)
    noisy = mix_at_snr(speech_48k, noise_signal, 5.0)
    src = encode_audio(tmp_path / "noisy.wav", noisy[None, :], 48_000, "-c:a", "pcm_s16le")
    # A quiet loudness target keeps the limiter idle (pure gain), isolating the denoiser.
    settings = AudioCleanSettings(loudness_lufs=-30, highpass_hz=highpass_hz, denoise=denoise)
    out = audio_clean(src, tmp_path / "out", settings).files[0].path
    cleaned, rate = read_audio(out)
    reference = speech_48k
    if highpass_hz:
        reference = sosfilt(butter(2, highpass_hz, "highpass", fs=rate, output="sos"), speech_48k)
    before, _ = _si_snr(speech_48k, noisy)
    after, lag = _si_snr(reference, cleaned[0])
    assert before == pytest.approx(5.0, abs=0.1)
    assert abs(lag) <= 8, "denoiser latency must be compensated (A/V sync)"
    assert after - before >= 7.0, (before, after)


@pytest.mark.parametrize("denoise", ["dfn3", "rnnoise", pytest.param("nsnet2", marks=_NSNET2_PINK_SI_SNR)])
def test_denoiser_beats_highpass_alone_on_pink_noise(speech_48k, tmp_path, denoise):
    """Most of pink noise's energy is low: the denoiser must do far more than the high-pass.

    Both sides high-passed, so only what the denoiser adds counts. Measured +6.05 dB
    (rnnoise); an oracle Wiener mask (true speech and noise spectra, same STFT) reaches
    +8.0 dB here.
    """
    noisy = mix_at_snr(speech_48k, pink_noise(len(speech_48k), np.random.default_rng(7)), 5.0)
    src = encode_audio(tmp_path / "noisy.wav", noisy[None, :], 48_000, "-c:a", "pcm_s16le")
    settings = AudioCleanSettings(loudness_lufs=-30, denoise=denoise)
    out = audio_clean(src, tmp_path / "out", settings).files[0].path
    cleaned, rate = read_audio(out)
    highpass = butter(2, 80, "highpass", fs=rate, output="sos")
    reference = sosfilt(highpass, speech_48k)
    before, _ = _si_snr(reference, sosfilt(highpass, noisy))
    after, _ = _si_snr(reference, cleaned[0])
    assert after - before >= 5.8, (before, after)


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory):
    """6 s stereo speech-like tones with pauses and a loud transient, at 44.1 kHz."""
    rate = 44_100
    voice = tone_bursts(6, rate)
    stereo = np.stack([voice, 0.7 * voice]) + 0.003 * np.random.default_rng(3).standard_normal((2, len(voice)))
    path = tmp_path_factory.mktemp("dialogue") / "dialogue.wav"
    return encode_audio(path, stereo, rate, "-c:a", "pcm_s16le")


@pytest.mark.parametrize(
    "suffix,codec",
    [
        (".wav", "pcm_s16le"),
        (".flac", "flac"),
        (".mp3", "mp3"),
        # Was a strict xfail under RNNoise, which kept little of the AAC-coded tones but one
        # 100 ms burst (peak-to-loudness 22 dB); nsnet2, then dfn3, keep the tones.
        (".m4a", "aac"),
    ],
)
def test_formats_loudness_and_true_peak(dialogue, tmp_path, suffix, codec):
    src = dialogue if suffix == ".wav" else tmp_path / f"dialogue{suffix}"
    if suffix != ".wav":
        ffmpeg("-i", str(dialogue), str(src))
    settings = AudioCleanSettings(loudness_lufs=-18, true_peak_db=-2)
    result = audio_clean(src, tmp_path / "out", settings)
    out = result.files[0].path
    info_in, info_out = probe(src), probe(out)
    assert out.suffix == suffix and info_out.audio_codec == codec
    assert (info_out.sample_rate, info_out.channels) == (44_100, 2)
    assert info_out.duration == pytest.approx(info_in.duration, abs=0.06)
    samples, rate = read_audio(out)
    loudness = pyloudnorm.Meter(rate).integrated_loudness(samples.T)
    assert loudness == pytest.approx(-18, abs=1.0)
    assert true_peak_db(samples) <= -2.0


@pytest.mark.parametrize("suffix", [".mp3", ".m4a"])
def test_lossy_speech_meets_loudness_and_true_peak_at_defaults(speech_48k, tmp_path, suffix):
    """Speech is what the product is for: lossy output in range at the default settings.

    espeak-ng's speech peaks ~20 dB over its loudness, so at -16 LUFS under -1.5 dBTP the
    limiter works hard and the codec's ringing on top must still stay under the limit.
    """
    noisy = mix_at_snr(speech_48k, pink_noise(len(speech_48k), np.random.default_rng(5)), 15.0)
    wav = encode_audio(tmp_path / "speech.wav", noisy[None, :], 48_000, "-c:a", "pcm_s16le")
    src = tmp_path / f"speech{suffix}"
    ffmpeg("-i", str(wav), str(src))  # FFmpeg's defaults: 64 kbit/s MP3, ~69 kbit/s AAC
    result = audio_clean(src, tmp_path / "out", AudioCleanSettings())
    samples, rate = read_audio(result.files[0].path)
    assert pyloudnorm.Meter(rate).integrated_loudness(samples.T) == pytest.approx(-16, abs=1.0)
    assert true_peak_db(samples) <= -1.5


@pytest.mark.parametrize(
    "name,encode,suffix,codec",
    [
        ("vorbis.ogg", ["-c:a", "libvorbis"], ".ogg", "flac"),  # no Vorbis encoder: FLAC in Ogg
        ("voice.opus", ["-c:a", "libopus"], ".opus", "opus"),
        ("voice.aiff", ["-c:a", "pcm_s16be"], ".wav", "pcm_s16le"),  # a container we don't write
    ],
)
def test_other_containers_keep_their_family_rate_and_channels(tmp_path, name, encode, suffix, codec):
    src = tmp_path / name
    rate = 48_000 if suffix == ".opus" else 44_100
    ffmpeg("-f", "lavfi", "-i", f"sine=f=440:d=2:sample_rate={rate}", "-ac", "2", *encode, str(src))
    result = audio_clean(src, tmp_path / "out", AudioCleanSettings(denoise="off"))
    out = result.files[0].path
    info = probe(out)
    assert (out.suffix, info.audio_codec, info.sample_rate, info.channels) == (suffix, codec, rate, 2)
    samples, _ = read_audio(out)
    assert pyloudnorm.Meter(rate).integrated_loudness(samples.T) == pytest.approx(-16, abs=1.0)
    assert true_peak_db(samples) <= -1.5


def test_video_audio_cleaned_and_video_copied(video_clip, tmp_path):
    calls = []
    result = audio_clean(video_clip, tmp_path, AudioCleanSettings(denoise="spectral"),
                         progress=lambda d, t: calls.append((d, t)))
    out = result.files[0].path
    assert out.suffix == ".mp4" and result.files[0].content_type == "video/mp4"
    src_info, out_info = probe(video_clip), probe(out)
    assert packet_payloads(out, "video") == packet_payloads(video_clip, "video")
    assert (out_info.frame_count, out_info.sample_rate, out_info.channels) == (50, 48_000, 2)
    assert out_info.duration == pytest.approx(src_info.duration, abs=0.05)
    assert calls[-1][0] == calls[-1][1]


def test_denoise_off_keeps_signal(dialogue, tmp_path):
    out = audio_clean(dialogue, tmp_path, AudioCleanSettings(denoise="off", highpass_hz=0)).files[0].path
    before, _ = read_audio(dialogue)
    after, _ = read_audio(out)
    snr, lag = _si_snr(before[0], after[0])
    assert lag == 0 and snr > 15  # only gain, plus the true-peak limiter on the clap


def test_strength_zero_leaves_the_signal_and_half_strength_cleans_less(speech_48k, tmp_path):
    """``strength`` scales the denoiser's attenuation in dB: 0 is no denoising at all."""
    noisy = mix_at_snr(speech_48k, pink_noise(len(speech_48k), np.random.default_rng(9)), 5.0)
    src = encode_audio(tmp_path / "noisy.wav", noisy[None, :], 48_000, "-c:a", "pcm_s16le")
    si_snr = {}
    for strength in (0.0, 0.5, 1.0):
        settings = AudioCleanSettings(loudness_lufs=-30, highpass_hz=0, strength=strength)
        cleaned, _ = read_audio(audio_clean(src, tmp_path / f"out{strength}", settings).files[0].path)
        si_snr[strength], _ = _si_snr(speech_48k, cleaned[0])
        if strength == 0.0:
            untouched, lag = _si_snr(noisy, cleaned[0])
            assert lag == 0 and untouched > 30, untouched
    assert si_snr[0.0] + 1.0 < si_snr[0.5] < si_snr[1.0] - 0.5, si_snr


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"denoise": "magic"}, "denoise"),
        ({"strength": 1.5}, "strength"),
        ({"loudness_lufs": -3}, "loudness_lufs"),
        ({"true_peak_db": 1}, "true_peak_db"),
        ({"highpass_hz": 5000}, "highpass_hz"),
        ({"gate": True}, "gate"),
    ],
)
def test_invalid_settings_name_the_field(raw, field):
    with pytest.raises(InputError, match=f"'{field}'"):
        parse_settings(AudioCleanSettings, raw)


@pytest.mark.parametrize("name", ["garbage.mp4", "truncated.mp4", "empty.wav"])
def test_corrupt_input_is_input_error(corrupt_files, tmp_path, name):
    with pytest.raises(InputError, match=f"^could not decode {name}: "):
        audio_clean(corrupt_files[name], tmp_path, AudioCleanSettings())


def test_image_is_rejected(still_png, tmp_path):
    with pytest.raises(InputError, match="no audio"):
        audio_clean(still_png, tmp_path, AudioCleanSettings())


def test_cancelled_lossy_job_leaves_no_hidden_encodes(speech_48k, tmp_path):
    wav = encode_audio(tmp_path / "speech.wav", speech_48k[None, :], 48_000, "-c:a", "pcm_s16le")
    src = tmp_path / "speech.mp3"
    ffmpeg("-i", str(wav), str(src))

    def cancel_during_encode(done: int, total: int) -> None:
        if done > 0.75 * total:
            raise CanceledError()

    with pytest.raises(CanceledError):
        audio_clean(src, tmp_path / "out", AudioCleanSettings(), progress=cancel_during_encode)
    assert list((tmp_path / "out").iterdir()) == []
