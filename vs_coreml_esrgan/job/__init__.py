"""The video job: a source file upscaled into a finished file with ``vspipe | ffmpeg``."""
