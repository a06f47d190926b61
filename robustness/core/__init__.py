"""The bottom layer: validation, atomic I/O, statistics, model modes, provenance, CLI converters.

Every other layer may import from here; nothing here imports from another layer, and no
module of this package imports torch at import time (the pytest plugin and ``--help``
stay fast).
"""
