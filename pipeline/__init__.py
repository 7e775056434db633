"""Pipeline: the ingest commands, the driver that builds and runs the Beam graph, dataset roots, synth data.

May import ``transforms``; must not import torch or ``trainer``.
"""
