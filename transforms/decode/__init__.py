"""Video decoding: exact middle frames of one video as JPEGs (sampler, backends, window, render, worker).

Must not import Beam, torch or other ``transforms`` modules (but ``storage``, lazily, to read ``gs://``).
"""
