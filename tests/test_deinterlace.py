"""When the job deinterlaces, refuses, or warns (the decision before any work)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from vs_coreml_esrgan.job import plan
from vs_coreml_esrgan.job.media import JobError


def _decide(field_based: int, asked: bool, monkeypatch, bwdif: bool = True,
            interlaced_frames: int | None = None, bottom_first: bool = False):
    monkeypatch.setattr(plan, "_has_bwdif", lambda: bwdif)
    warnings: list[str] = []
    info = SimpleNamespace(props={"_FieldBased": field_based})
    if interlaced_frames is None:
        interlaced_frames = 10 if field_based else 0
    index = SimpleNamespace(interlaced_frames=interlaced_frames, num_frames=10,
                            bottom_field_first=bottom_first)
    return plan._deinterlacing(info, index, asked, warnings), warnings


def test_progressive_input_is_left_alone(monkeypatch):
    assert _decide(0, False, monkeypatch) == (None, [])


@pytest.mark.parametrize(("field_based", "top_first"), [(2, True), (1, False)])
def test_the_first_field_is_kept(monkeypatch, field_based, top_first):
    assert _decide(field_based, True, monkeypatch) == (top_first, [])


def test_interlaced_without_the_option_names_it(monkeypatch):
    with pytest.raises(JobError, match=r"bottom field first.*pass --deinterlace"):
        _decide(1, False, monkeypatch)
    with pytest.raises(JobError, match="pip install vapoursynth-bwdif, then pass"):
        _decide(2, False, monkeypatch, bwdif=False)


def test_the_option_without_bwdif_says_how_to_get_it(monkeypatch):
    with pytest.raises(JobError, match="needs VapourSynth's bwdif plugin: pip install"):
        _decide(2, True, monkeypatch, bwdif=False)


def test_a_progressive_flag_is_overridden_with_a_warning(monkeypatch):
    top_first, warnings = _decide(0, True, monkeypatch)
    assert top_first is True and "flagged progressive" in warnings[0]


def test_a_stream_that_starts_progressive_is_still_interlaced(monkeypatch):
    """Broadcast recordings: the first frames progressive, the rest interlaced."""
    with pytest.raises(JobError, match=r"interlaced \(bottom field first; 4 of 10 frames\)"):
        _decide(0, False, monkeypatch, interlaced_frames=4, bottom_first=True)
    assert _decide(0, True, monkeypatch, interlaced_frames=4) == (True, [])


def test_a_batch_deinterlaces_its_interlaced_files_only(monkeypatch, tmp_path):
    """--deinterlace in a mixed batch deinterlaced the progressive files too."""
    assert plan._deinterlacing(SimpleNamespace(props={"_FieldBased": 0}),
                               SimpleNamespace(interlaced_frames=0, num_frames=10,
                                               bottom_field_first=False),
                               True, [], progressive_too=False) is None
    assert _decide(2, True, monkeypatch) == (True, [])  # interlaced: as before

    from media_files import VIDEO, ffmpeg, tiny_model

    from vs_coreml_esrgan.job.batch import Entry, plan_entries
    from vs_coreml_esrgan.job.plan import JobRequest
    from vs_coreml_esrgan.job.script import UpscaleOptions

    progressive = tmp_path / "progressive.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.2", "-c:v", "libx264", progressive)
    template = JobRequest(Path(), Path(), UpscaleOptions(str(tiny_model(tmp_path)), None,
                                                          None, "torch"), deinterlace=True)
    planned, known = plan_entries([Entry(progressive, tmp_path / "out.mkv")], template)
    assert not known
    assert "Bwdif" not in planned[0].job.script
    assert not any("progressive" in w for w in planned[0].job.warnings)
