"""Bad input from the environment ends in one clear line and exit 2, never a traceback or a
credential."""

from __future__ import annotations

import pytest

from tests.cli.support import clean_env, trunner


@pytest.mark.parametrize(
    "url", ["tcp://:s3cret-pw@[::1", "tcp://:s3cret-pw@host:notaport", "http://:s3cret-pw@x"]
)
def test_a_malformed_faktory_url_is_one_line_and_exit_2(url: str) -> None:
    result = trunner(
        "run", "--mode", "faktory", "--metrics-port", "0", env=clean_env(FAKTORY_URL=url), timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "s3cret-pw" not in result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1 and problems[0].startswith("  - FAKTORY_URL: "), result.stderr
