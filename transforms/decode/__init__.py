"""Video decoding: a few exact middle frames of one video as JPEGs (sampler, backends, window, render, worker).

Must not import Beam, torch or the rest of ``transforms``; ``types`` is the leaf every module here imports.
"""
