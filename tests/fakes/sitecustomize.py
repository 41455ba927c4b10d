"""Makes a child process a Mac for the doubles, when ``FAKE_MACOS`` names a macOS version
(tests set it, with this directory first on PYTHONPATH, for the trial children): PyObjC's
modules are the doubles here already; this puts coremltools' native parts (the doubles in
coremltools_doubles.py), ``platform.mac_ver`` and ``sys.platform`` in place. Inactive
otherwise."""

import os

if os.environ.get("FAKE_MACOS"):
    import platform
    import sys

    import coremltools as ct  # before sys.platform changes: it imports torch
    import coremltools.models.compute_plan as _compute_plan
    import coremltools_doubles as _doubles

    ct.models.utils.compile_model = _doubles.compile_model
    ct.models.CompiledMLModel = _doubles.CompiledMLModel
    _compute_plan.MLComputePlan = _doubles.MLComputePlan
    _version = os.environ["FAKE_MACOS"]
    platform.mac_ver = lambda *_: (_version, ("", "", ""), "arm64")
    sys.platform = "darwin"
