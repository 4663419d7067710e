"""pytest-benchmark suites and their harness: backends, presets, records; `python -m bench` runs a preset."""

import os

from models.paths import cache_dir

# Inductor's caches (compiled kernels, autotuning results, graphs) under archbench's cache directory, so a
# second run starts fast and a cold cache is cold for all of it; a directory the user set is kept. Set
# when the package loads: importing torchao fixes inductor's directory (its default under /tmp) for the
# whole process, and the studies import it at collection, before any engine compiles.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
