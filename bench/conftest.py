"""Loads archbench's pytest plugin (`bench.plugin`: options, hooks, fixtures) when pytest is pointed at the
suites under bench/ directly. `python -m bench` loads it for every study's suite, wherever it lives."""

pytest_plugins = ["bench.plugin"]
