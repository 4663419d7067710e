"""Results -> HTML: the loader of pytest-benchmark JSON, analysis, figures, the page, regression checks."""
