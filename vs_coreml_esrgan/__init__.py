"""Real-ESRGAN upscaling for VapourSynth: Core ML on Apple Silicon, PyTorch elsewhere."""

from ._plugin import load_development_plugin
from .filter import upscale
from .job.source import source
from .network_spec import ModelError, NetworkSpec
from .tiling import TilePlan, choose_tile_size, plan_tiles, upscale_tiled
from .version import __version__

# Editable installs only: a normal install's plugin is autoloaded by VapourSynth.
load_development_plugin()

__all__ = ["ModelError", "NetworkSpec", "TilePlan", "__version__", "choose_tile_size",
           "plan_tiles", "source", "upscale", "upscale_tiled"]
