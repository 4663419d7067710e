"""pytest-benchmark suites and their harness: backends, presets, records; `python -m bench` runs a preset."""
