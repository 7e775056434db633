"""Video decoding: exact middle frames of one video as JPEGs (sampler, backends, window, render, worker).

Must not import Beam, torch or other ``transforms`` modules (but ``ranged_reads`` and ``storage``, lazily, for remote videos).
"""
