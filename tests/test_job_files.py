"""The video job on files shaped like the ones people have: each made with ffmpeg, each
output checked by decoding it (frame count, timestamps, A/V offset by content, tags)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from media_files import (
    FFMPEG,
    NOISE,
    VIDEO,
    audio_track,
    av_offset,
    environment_without_venv,
    ffmpeg,
    job,
    stream_facts,
    tiny_model,
    video_times,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny x2 network: these tests are about files, not speed."""
    return tiny_model(tmp_path_factory.mktemp("model"))


def _audio_led(directory: Path, suffix: str) -> Path:
    """Audio from 0 s, video from 0.5 s (a remux or recording started mid-stream)."""
    source = directory / f"audio-first{suffix}"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=2", "-f", "lavfi", "-i",
           f"{NOISE}:duration=2.5", "-filter_complex", "[0:v]setpts=PTS+0.5/TB[v]",
           "-map", "[v]", "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "96k", source)
    return source


def _cut_mid_gop(directory: Path) -> Path:
    """A transport stream cut in the middle of a group of pictures: its first packets
    are frames a decoder cannot show, so the video starts after the audio."""
    whole = directory / "whole.ts"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=4", "-f", "lavfi", "-i",
           f"{NOISE}:duration=4", "-c:v", "libx264", "-g", "15", "-bf", "2",
           "-pix_fmt", "yuv420p", "-c:a", "mp2", whole)
    source = directory / "cut.ts"
    ffmpeg("-ss", "0.75", "-i", whole, "-c", "copy", "-t", "2.5", source)
    return source


def _late_start(directory: Path) -> Path:
    """A file whose timestamps start at 10 s, the audio 21 ms before the video."""
    source = directory / "late.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=2", "-f", "lavfi", "-i",
           f"{NOISE}:duration=2.1", "-filter_complex",
           "[0:v]settb=1/1000,setpts=PTS+10.021/TB[v];[1:a]asetpts=PTS+10*SR[a]", "-map", "[v]",
           "-map", "[a]", "-c:v", "libx264", "-enc_time_base:v", "1/1000", "-pix_fmt",
           "yuv420p", "-c:a", "flac", source)
    return source


@pytest.mark.parametrize(("make", "suffix", "extra"), [
    (lambda d: _audio_led(d, ".mkv"), ".mkv", ()),
    (lambda d: _audio_led(d, ".mkv"), ".mp4", ("--source", "builtin")),
    (_cut_mid_gop, ".mkv", ()),
    (_late_start, ".mkv", ("--chunks", "2")),
])
def test_audio_keeps_its_offset_to_the_video(model, tmp_path, make, suffix, extra):
    source = make(tmp_path)
    out = tmp_path / f"out{suffix}"
    result = job(source, out, "--model", model, "--encoder", "ffv1" if suffix == ".mkv"
                 else "x264", *extra)
    assert result.returncode == 0, result.stderr
    reference = audio_track(source)
    expected = av_offset(source, reference)
    assert abs(expected) > 0.015  # the files really are offset
    assert av_offset(out, reference) == pytest.approx(expected, abs=0.002)
    assert len(video_times(out)) == len(video_times(source))


def test_frame_range_keeps_the_offset(model, tmp_path):
    source = _audio_led(tmp_path, ".mkv")
    out = tmp_path / "part.mkv"
    result = job(source, out, "--model", model, "--encoder", "ffv1", "--start", "5",
                 "--end", "14")
    assert result.returncode == 0, result.stderr
    reference = audio_track(source)
    assert av_offset(out, reference) == pytest.approx(av_offset(source, reference, 5),
                                                      abs=0.002)
    assert len(video_times(out)) == 10


@pytest.mark.parametrize(("codec", "suffix", "pix_fmt"), [
    ("qtrle", ".mov", "rgb24"), ("png", ".mov", "rgba"), ("gif", ".gif", "pal8")])
def test_rgb_sources(model, tmp_path, codec, suffix, pix_fmt):
    source = tmp_path / f"rgb{suffix}"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.5", "-c:v", codec, "-pix_fmt",
           pix_fmt, source)
    out = tmp_path / "out.mkv"
    result = job(source, out, "--model", model)
    assert result.returncode == 0, result.stderr
    assert ("alpha channel (rgba)" in result.stderr) == (pix_fmt == "rgba")
    video = stream_facts(out)[0]
    assert video["pix_fmt"] == "yuv444p" and video["width"] == 128
    assert video["colorspace"] == 6 and video["range"] == 1  # SD: BT.601, limited
    assert len(video_times(out)) == 5


def test_pal_transfer_and_untagged_sd_matrix(model, tmp_path):
    pal = tmp_path / "pal.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-vf", "setparams=color_trc=bt470bg"
           ":color_primaries=bt470bg:colorspace=bt470bg", "-c:v", "libx264", "-pix_fmt",
           "yuv420p", pal)
    out = tmp_path / "pal-out.mkv"
    assert job(pal, out, "--model", model).returncode == 0
    video = stream_facts(out)[0]
    assert (video["colorspace"], video["primaries"], video["transfer"]) == (5, 5, 5)

    untagged = tmp_path / "untagged.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-c:v", "libx264", "-pix_fmt",
           "yuv420p", untagged)
    assert stream_facts(untagged)[0]["colorspace"] == 2
    printed = job(untagged, tmp_path / "u.mkv", "--model", model, "--print").stdout
    assert "SetFrameProps(clip, _Matrix=6)" in printed  # the filter converts as BT.601
    out = tmp_path / "untagged-out.mkv"
    assert job(untagged, out, "--model", model).returncode == 0
    assert stream_facts(out)[0]["colorspace"] == 6  # what players assume for SD


@pytest.mark.parametrize(("source_suffix", "audio", "out_suffix"), [
    (".mov", "pcm_s16le", ".mov"), (".mkv", "mp2", ".mp4")])
def test_audio_the_container_holds_is_kept(model, tmp_path, source_suffix, audio,
                                           out_suffix):
    source = tmp_path / f"in{source_suffix}"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.5", "-f", "lavfi", "-i",
           f"{NOISE}:duration=0.5", "-c:v", "prores_ks" if source_suffix == ".mov"
           else "libx264", "-c:a", audio, source)
    out = tmp_path / f"out{out_suffix}"
    result = job(source, out, "--model", model,
                 *(["--encoder", "prores"] if out_suffix == ".mov" else []))
    assert result.returncode == 0, result.stderr
    kept = stream_facts(out)[1]
    # mp4 names MPEG-1 audio layers 2 and 3 with one object type: it reads back as mp3
    assert kept["type"] == "audio" and kept["codec"] in {audio, "mp3"}


def test_relative_model_and_apostrophes_in_chunked_output(model, tmp_path):
    (tmp_path / "x2.pth").write_bytes(model.read_bytes())
    out = tmp_path / "Kiki's Delivery Service.mkv"
    source = tmp_path / "It's a source.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.6", "-c:v", "libx264", source)
    result = job(source.name, out.name, "--model", "x2.pth", "--chunks", "2",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(video_times(out)) == 6
    assert not (tmp_path / f".{out.name}.parts").exists()


def test_runs_from_full_path_without_venv_on_path(model, tmp_path):
    env = environment_without_venv()
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # VapourSynth not configured yet
    source = tmp_path / "in.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-c:v", "libx264", source)
    out = tmp_path / "out.mkv"
    result = job(source, out, "--model", model, env=env)
    assert result.returncode == 0, result.stderr
    assert len(video_times(out)) == 3


def test_chroma_layout_and_depth_kept(model, tmp_path):
    source = tmp_path / "444-10.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-c:v", "ffv1", "-pix_fmt",
           "yuv444p10le", source)
    out = tmp_path / "out.mkv"
    assert job(source, out, "--model", model, "--encoder", "x265").returncode == 0
    assert stream_facts(out)[0]["pix_fmt"] == "yuv444p10le"
    gray = tmp_path / "gray.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-c:v", "ffv1", "-pix_fmt",
           "gray", gray)
    out = tmp_path / "gray-out.mkv"
    result = job(gray, out, "--model", model, "--encoder", "ffv1")
    assert result.returncode == 0, result.stderr
    assert stream_facts(out)[0]["pix_fmt"] == "gray"


def test_webm_with_opus_and_track_tags(model, tmp_path):
    source = tmp_path / "tagged.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.5", "-f", "lavfi", "-i",
           f"{NOISE}:duration=0.5", "-c:v", "libx264", "-c:a", "aac",
           "-metadata:s:v:0", "language=jpn", "-metadata:s:v:0", "title=Main feature",
           "-metadata:s:a:0", "language=fra", "-metadata:s:a:0", "title=Commentary", source)
    for suffix in (".webm", ".mkv"):
        out = tmp_path / f"out{suffix}"
        result = job(source, out, "--model", model)
        assert result.returncode == 0, result.stderr
        video, audio = stream_facts(out)[:2]
        assert video["codec"] == ("vp9" if suffix == ".webm" else "h264")
        assert audio["codec"] == ("opus" if suffix == ".webm" else "aac")
        assert video["metadata"]["language"] == "jpn"
        assert video["metadata"]["title"] == "Main feature"
        assert audio["metadata"]["title"] == "Commentary"


MASTER_DISPLAY = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"


def _hdr_side_data(path: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The mastering display (22 ints) and content light (2) of the first frame."""
    import struct

    import av
    from av.sidedata.sidedata import Type

    with av.open(str(path)) as container:
        frame = next(container.decode(container.streams.video[0]))
        mastering = bytes(memoryview(frame.side_data[Type.MASTERING_DISPLAY_METADATA]))
        light = bytes(memoryview(frame.side_data[Type.CONTENT_LIGHT_LEVEL]))
    return struct.unpack("<22i", mastering), struct.unpack("<2I", light)


def test_hdr_gets_ten_bits_or_a_clear_refusal(model, tmp_path):
    source = tmp_path / "hdr.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-vf", "setparams=color_trc="
           "smpte2084:color_primaries=bt2020:colorspace=bt2020nc", "-c:v", "libx265",
           "-pix_fmt", "yuv420p10le", "-x265-params",
           f"log-level=error:master-display={MASTER_DISPLAY}:max-cll=1000,400", source)
    refused = job(source, tmp_path / "8.mkv", "--model", model, "--bit-depth", "8")
    assert refused.returncode == 1 and "HDR (PQ" in refused.stderr
    out = tmp_path / "out.mkv"
    result = job(source, out, "--model", model, "--encoder", "x265")
    assert result.returncode == 0, result.stderr
    video = stream_facts(out)[0]
    assert video["pix_fmt"] == "yuv420p10le"
    assert (video["primaries"], video["transfer"], video["colorspace"]) == (9, 16, 9)
    # HDR10 static metadata survives the pipe, as the source has it.
    mastering, light = _hdr_side_data(out)
    assert light == (1000, 400)
    assert mastering == _hdr_side_data(source)[0]
    assert mastering[:4] == (34000, 50000, 16000, 50000)  # red x, y as x265 was told
    # An encoder that cannot take it says so.
    vp9 = job(source, tmp_path / "out.webm", "--model", model)
    assert vp9.returncode == 0 and "does not carry the input's HDR10" in vp9.stderr


def _interlaced(directory: Path) -> Path:
    """A DVD-like MPEG-2 file, top field first, whose two fields are 20 ms apart in time
    (made from 50 fps motion), so weaving them shows combing."""
    source = directory / "dvd.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=50:duration=0.4,"
           "scroll=horizontal=0.02", "-vf", "tinterlace=mode=interleave_top,setfield=tff",
           "-c:v", "mpeg2video", "-q:v", "2", "-flags", "+ilme+ildct", "-field_order", "tt",
           source)
    return source


def _starts_progressive(directory: Path) -> Path:
    """A recording whose first 10 frames are progressive and the rest interlaced."""
    parts = []
    for name, flags in (("p.ts", ()), ("i.ts", ("-flags", "+ilme+ildct", "-field_order",
                                                "tt"))):
        parts.append(directory / name)
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=0.4", "-vf",
               "setfield=tff", "-c:v", "mpeg2video", "-q:v", "2", *flags, parts[-1])
    source = directory / "recording.mkv"
    ffmpeg("-i", f"concat:{parts[0]}|{parts[1]}", "-c", "copy", source)
    return source


@pytest.mark.parametrize(("make", "shown"), [
    (_interlaced, "interlaced (top field first; 10 of 10 frames)"),
    (_starts_progressive, "interlaced (top field first; 10 of 1")])  # 19 or 20 frames
def test_interlaced_input_is_refused_before_work(model, tmp_path, make, shown):
    source = make(tmp_path)
    result = job(source, tmp_path / "out.mkv", "--model", model)
    assert result.returncode == 1
    assert shown in result.stderr and "--deinterlace" in result.stderr and "bwdif" in \
        result.stderr
    assert "vspipe" not in result.stderr
    assert not (tmp_path / "out.mkv").exists()


def test_deinterlace_equals_ffmpegs_bwdif_then_upscale(model, tmp_path):
    source = _interlaced(tmp_path)
    ours = tmp_path / "ours.mkv"
    result = job(source, ours, "--model", model, "--encoder", "ffv1", "--deinterlace")
    assert result.returncode == 0, result.stderr
    # The reference deinterlaces with ffmpeg's own bwdif (which the plugin ports), keeping
    # the first field, into a lossless progressive file that the job then upscales.
    progressive = tmp_path / "progressive.mkv"
    ffmpeg("-i", source, "-vf", "bwdif=mode=send_frame:parity=tff:deint=all,setfield=prog",
           "-c:v", "ffv1", progressive)
    reference = tmp_path / "reference.mkv"
    assert job(progressive, reference, "--model", model, "--encoder", "ffv1").returncode == 0
    assert len(video_times(ours)) == len(video_times(source)) == 10
    # ffmpeg treats the very first frame's missing predecessor its own way
    assert _frame_hashes(ours)[1:] == _frame_hashes(reference)[1:]
    assert _field_order(ours) == 1  # AV_FIELD_PROGRESSIVE


def _frame_hashes(path: Path) -> list[str]:
    import hashlib

    import av

    with av.open(str(path)) as container:
        return [hashlib.md5(frame.to_ndarray().tobytes()).hexdigest()
                for frame in container.decode(video=0)]


def _field_order(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return int(container.streams.video[0].codec_context.field_order)


def test_sar_kept(model, tmp_path):
    source = tmp_path / "anamorphic.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-vf", "setsar=32/27",
           "-c:v", "libx264", source)
    out = tmp_path / "out.mp4"
    assert job(source, out, "--model", model, "--source", "builtin").returncode == 0
    assert str(stream_facts(out)[0]["sar"]) == "32/27"


def test_output_cannot_go_to_a_read_only_place(model, tmp_path):
    source = tmp_path / "in.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.2", "-c:v", "libx264", source)
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc (a directory nobody can create files in)")
    result = job(source, "/proc/out.mkv", "--model", model)
    assert result.returncode == 1
    assert "cannot write into the output's directory /proc" in result.stderr


def _variable_rate(directory: Path) -> Path:
    """30 fps for 10 frames, then 15 fps (a phone or screen recording), in a 1 ms time
    base, with the audio starting 0.3 s before the video."""
    source = directory / "vfr.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30:duration=2", "-f", "lavfi",
           "-i", f"{NOISE}:duration=2.5", "-filter_complex",
           "[0:v]select='lt(n\\,10)+not(mod(n\\,2))',setpts=PTS+0.3/TB[v]", "-map", "[v]",
           "-map", "1:a", "-fps_mode", "vfr", "-c:v", "libx264", "-c:a", "flac", source)
    return source


@pytest.mark.parametrize(("suffix", "extra", "first", "last"), [
    (".mkv", (), 0, None), (".mp4", (), 0, None),
    (".mkv", ("--chunks", "3"), 0, None), (".mp4", ("--start", "7", "--end", "20"), 7, 20)])
def test_variable_frame_rate_keeps_each_frames_time(model, tmp_path, suffix, extra, first,
                                                    last):
    source = _variable_rate(tmp_path)
    times = video_times(source)
    steps = {round(float(b - a) * 1000) for a, b in itertools.pairwise(times)}
    assert min(steps) < 40 and max(steps) > 60  # the source really is variable-rate
    out = tmp_path / f"out{suffix}"
    result = job(source, out, "--model", model, *extra)
    assert result.returncode == 0, result.stderr
    assert "variable frame rate" not in result.stderr
    wanted = times[first:None if last is None else last + 1]
    got = video_times(out)
    assert len(got) == len(wanted)
    for expected, actual in zip(wanted, got, strict=True):
        assert abs(float((actual - got[0]) - (expected - wanted[0]))) <= 0.001
    reference = audio_track(source)
    assert av_offset(out, reference) == pytest.approx(av_offset(source, reference, first),
                                                      abs=0.002)
    if not extra:
        printed = job(source, tmp_path / "p.mkv", "--model", model, "--print").stdout
        assert f"job.relay {source} 0 {len(times) - 1} \\\n  | " in printed
        assert "-itsoffset 0.300000 -f nut -i -" in printed


def test_colons_and_newlines_in_names(model, tmp_path):
    """A relative "clip:1.mkv" was read as protocol "clip" ("Protocol not found"), a
    relative output "out:1.mkv" failed once vspipe ran, and a newline in a chunked
    output's name broke the line-based concat list after every segment was encoded."""
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.4", "-c:v", "libx264",
           tmp_path / "clip:1.mkv")
    result = job("clip:1.mkv", "out:1.mkv", "--model", model, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(video_times(tmp_path / "out:1.mkv")) == 4
    result = job("clip:1.mkv", "two\nlines:2.mkv", "--model", model, "--chunks", "2",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(video_times(tmp_path / "two\nlines:2.mkv")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip:1.mkv", "out:1.mkv",
                                                           "two\nlines:2.mkv"]


def test_names_that_are_not_utf8(model, tmp_path):
    """A latin-1 name (old archives, SMB shares) is a valid path: it stopped the job with
    "'utf-8' codec can't encode character '\\udce9'", and a batch with no summary."""
    import os

    latin = tmp_path / os.fsdecode(b"caf\xe9.mkv")
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-c:v", "libx264", latin)
    out = tmp_path / os.fsdecode(b"sortie-\xe9.mkv")
    result = job(latin, out, "--model", model)
    assert result.returncode == 0, result.stderr
    assert len(video_times(out)) == 3
    plain = tmp_path / "plain.mkv"
    plain.write_bytes(latin.read_bytes())
    outdir = tmp_path / "batch"
    outdir.mkdir()
    result = job(latin, plain, "-o", outdir, "--model", model)
    assert result.returncode == 0, result.stderr
    assert "summary: 2 done" in result.stdout + result.stderr
    assert len(video_times(outdir / latin.name)) == 3
    refused = job(latin, tmp_path / "bs.mkv", "--model", model, "--source", "bs")
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0  # one line, naming the way out
    assert "takes only UTF-8 file names" in refused.stderr and "--source builtin" in \
        refused.stderr


def _audio_file(directory: Path, codec: str) -> Path:
    """Half a second of stereo audio in ``codec`` (in Matroska, which holds them all)."""
    encoder = {"opus": "libopus", "mp3": "libmp3lame", "dts": "dca"}.get(codec, codec)
    path = directory / f"{codec}.mka"
    ffmpeg("-f", "lavfi", "-i", f"{NOISE}:duration=0.5", "-ac", "2", "-c:a", encoder,
           "-strict", "-2", path)
    return path


# What the table lets through and ffmpeg's muxers refuse (ffmpeg 7-9), and what they take.
_REFUSED = {".mov": ("opus", "flac", "truehd"),
            ".m4v": ("mp3", "mp2", "eac3", "opus", "flac", "dts", "truehd"),
            ".mp4": ("truehd",)}
_TAKEN = {".mov": ("aac", "mp3", "ac3", "alac"), ".m4v": ("aac", "ac3", "alac"),
          ".mp4": ("aac", "mp3", "opus", "flac", "eac3")}


def test_the_muxer_is_asked_before_any_work(tmp_path):
    from vs_coreml_esrgan.job.media import probe_media, refused_by_muxer

    made = {codec: _audio_file(tmp_path, codec)
            for codec in {c for cs in (*_REFUSED.values(), *_TAKEN.values()) for c in cs}}
    for suffix in _REFUSED:
        for codec in _REFUSED[suffix] + _TAKEN[suffix]:
            streams = probe_media(made[codec], need_video=False).streams
            refused = refused_by_muxer(FFMPEG, made[codec], streams, Path(f"out{suffix}"))
            assert (codec in refused) == (codec in _REFUSED[suffix]), (suffix, codec)
    # A subtitle track whose first event comes late is not taken for a refusal (the dry
    # mux reads the first second only).
    (tmp_path / "late.srt").write_text("1\n00:00:05,000 --> 00:00:05,500\nlate\n")
    late = tmp_path / "late.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=6", "-i", tmp_path / "late.srt",
           "-c:v", "libx264", "-c:s", "srt", late)
    streams = probe_media(late).streams
    assert refused_by_muxer(FFMPEG, late, streams, Path("out.mp4")) == frozenset()


def test_audio_the_muxer_refuses_is_dropped_before_the_segments(model, tmp_path):
    """.mov with Opus beside AAC, chunked: every segment was encoded, then the join
    failed ("opus only supported in MP4"). Now the Opus track is dropped, with a warning,
    and the rest is kept."""
    source = tmp_path / "two-tracks.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.6", "-f", "lavfi", "-i",
           f"{NOISE}:duration=0.6", "-map", "0:v", "-map", "1:a", "-map", "1:a",
           "-c:v", "libx264", "-c:a:0", "aac", "-c:a:1", "libopus", source)
    out = tmp_path / "out.mov"
    result = job(source, out, "--model", model, "--chunks", "2")
    assert result.returncode == 0, result.stderr
    assert "audio stream 2 (opus) cannot go into .mov; dropped" in result.stderr
    assert [(s["type"], s["codec"]) for s in stream_facts(out)] == [("video", "h264"),
                                                                    ("audio", "aac")]
    assert len(video_times(out)) == 6


def test_colour_tags_do_not_depend_on_the_source_filter(model, tmp_path):
    """The bundled sample tags only its matrix (BT.709) and carries an sRGB ICC profile:
    bestsource read primaries and transfer from the profile, the built-in source could
    not, so Linux and a Mac tagged the same command differently. One rule: the stream's
    and container's tags, and the SD convention (SMPTE 170M) for what they leave out."""
    sample = Path(__file__).resolve().parents[1] / "samples" / "sample.mp4"
    tags = []
    for source in ("builtin", "auto"):
        out = tmp_path / f"{source}.mkv"
        result = job(sample, out, "--model", model, "--encoder", "ffv1", "--end", "1",
                     "--source", source)
        assert result.returncode == 0, result.stderr
        video = stream_facts(out)[0]
        tags.append((video["colorspace"], video["primaries"], video["transfer"]))
    assert tags == [(1, 6, 6), (1, 6, 6)]


_SRT = "1\n00:00:00,000 --> 00:00:00,300\nearly\n\n2\n00:00:00,600 --> 00:00:00,800\nlater\n"
_ASS = """[Script Info]
ScriptType: v4.00+

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, \
BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, \
BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,\
1,1,0,2,10,10,10,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:00.00,0:00:00.50,Default,,0,0,0,,ass early
Dialogue: 0,0:00:00.70,0:00:00.90,Default,,0,0,0,,ass later
"""


def _subtitle_events(path: Path) -> list[tuple[int, float, float, str]]:
    """(track, start s, duration s, last word) of every subtitle packet, in file order."""
    import av

    with av.open(str(path)) as container:
        tracks = [s for s in container.streams if s.type == "subtitle"]
        numbers = {s.index: k for k, s in enumerate(tracks)}
        return sorted((numbers[p.stream.index], round(float(p.pts * p.time_base), 3),
                       round(float(p.duration * p.time_base), 3),
                       bytes(p).decode().split()[-1]) for p in container.demux(tracks)
                      if p.size)


def test_frame_range_keeps_subtitles_on_screen_at_its_start(model, tmp_path):
    """--start 0.2 s: the SRT event 0-0.3 s and the ASS event 0-0.5 s were dropped (the
    ASS track left empty); they are kept, cut to the range, with the audio in sync."""
    (tmp_path / "a.srt").write_text(_SRT)
    (tmp_path / "b.ass").write_text(_ASS)
    source = _audio_led(tmp_path, ".mkv")  # video from 0.5 s: events are on its timeline
    with_subs = tmp_path / "subs.mkv"
    ffmpeg("-i", source, "-itsoffset", "0.5", "-i", tmp_path / "a.srt", "-itsoffset", "0.5",
           "-i", tmp_path / "b.ass", "-map", "0", "-map", "1", "-map", "2", "-c", "copy",
           "-disposition:s:0", "0", "-disposition:s:1", "default+forced", with_subs)
    out = tmp_path / "range.mkv"
    result = job(with_subs, out, "--model", model, "--encoder", "ffv1", "--start", "2",
                 "--end", "7")  # 0.2 s to 0.8 s of the video
    assert result.returncode == 0, result.stderr
    assert _subtitle_events(out) == [(0, 0.0, 0.1, "early"), (0, 0.4, 0.2, "later"),
                                     (1, 0.0, 0.3, "early"), (1, 0.5, 0.1, "later")]
    assert [d for kind, d in _dispositions(out) if kind == "subtitle"] == [False, True]
    reference = audio_track(with_subs)
    assert av_offset(out, reference) == pytest.approx(av_offset(with_subs, reference, 2),
                                                      abs=0.002)


def _dispositions(path: Path) -> list[tuple[str, bool]]:
    import av

    with av.open(str(path)) as container:
        return [(s.type, bool(s.disposition & av.stream.Disposition.default))
                for s in container.streams]


@pytest.mark.parametrize(("suffix", "extra"), [(".mp4", ("--chunks", "2")), (".mkv", ())])
def test_stream_flags_are_kept(model, tmp_path, suffix, extra):
    """No audio or subtitle track marked default in the source: .mp4 marked the first of
    each default (players then showed the subtitles the source had off), and the video
    lost its default flag."""
    (tmp_path / "a.srt").write_text(_SRT)
    source = tmp_path / "flags.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.6", "-f", "lavfi", "-i",
           f"{NOISE}:duration=0.6", "-i", tmp_path / "a.srt", "-map", "0", "-map", "1",
           "-map", "2", "-c:v", "libx264", "-c:a", "aac", "-c:s", "srt",
           "-disposition:v:0", "default", "-disposition:a:0", "0", "-disposition:s:0", "0",
           source)
    assert _dispositions(source) == [("video", True), ("audio", False), ("subtitle", False)]
    out = tmp_path / f"out{suffix}"
    result = job(source, out, "--model", model, *extra)
    assert result.returncode == 0, result.stderr
    # MP4 has no "default" for audio: a track is enabled (played) or not, and players
    # play one with no default anyway, so the first audio stays enabled there.
    assert _dispositions(out) == [("video", True), ("audio", suffix == ".mp4"),
                                  ("subtitle", False)]


def test_streams_not_carried_are_named(model, tmp_path):
    """Cover art and a second video were dropped without a word."""
    source = tmp_path / "extras.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-f", "lavfi", "-i",
           "testsrc=size=32x24:rate=10:duration=0.3", "-map", "0", "-map", "1",
           "-c:v", "libx264", source)
    result = job(source, tmp_path / "out.mkv", "--model", model)
    assert result.returncode == 0, result.stderr
    assert "video stream 1 (h264) is not carried: only the first video is upscaled" in \
        result.stderr
    cover = tmp_path / "cover.mp4"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-f", "lavfi", "-i",
           "color=red:size=32x32:duration=0.1", "-map", "0", "-map", "1", "-c:v:0",
           "libx264", "-c:v:1", "png", "-disposition:v:1", "attached_pic", cover)
    result = job(cover, tmp_path / "cover-out.mkv", "--model", model)
    assert result.returncode == 0, result.stderr
    assert "the cover art (stream 1, png) is not carried" in result.stderr
