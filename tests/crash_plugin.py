"""A pytest plugin that kills the process after N benchmarks, as a crash would (tests only).

Used by test_bench_cli through `python -m bench ... -- -p tests.crash_plugin`; N comes from
ARCHBENCH_TEST_CRASH_AFTER. With ARCHBENCH_TEST_CRASH_SIGNAL (a signal number) the process kills itself
with that signal instead of exiting with status 3.
"""

import os

_passed = 0


def pytest_runtest_logreport(report):
    global _passed
    if report.when == "teardown" and report.passed:
        _passed += 1
        if _passed >= int(os.environ.get("ARCHBENCH_TEST_CRASH_AFTER", "3")):
            signal = os.environ.get("ARCHBENCH_TEST_CRASH_SIGNAL")
            if signal:
                os.kill(os.getpid(), int(signal))
            os._exit(3)  # no sessionfinish: pytest-benchmark never writes its JSON
