"""Print the reliability figures at the end of the test run."""

from tests.reliability import COUNTS


def pytest_terminal_summary(terminalreporter):
    if COUNTS:
        terminalreporter.section("reliability figures")
        for what, n in sorted(COUNTS.items()):
            terminalreporter.write_line(f"{n} {what}")
