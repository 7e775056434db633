"""Synthetic MicroLens-format datasets (logs, titles, real videos, ground truth): ``generate(out, config)``.

Imports numpy and PyAV only: no Beam, no torch, nothing of ``transforms`` or ``trainer``.
"""

from pipeline.synth.config import SynthConfig
from pipeline.synth.files import generate

__all__ = ["SynthConfig", "generate"]
