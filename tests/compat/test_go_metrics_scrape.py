"""The /metrics text of a real ``trunner run`` process, scraped as Prometheus scrapes the Go runner:
the ``process_*`` series of Go's process collector (no Go or Python runtime series) and the
``opslevel_runner_jobs_duration`` buckets with Go's ``le`` values (``le="5"``, not ``le="5.0"``)."""

from __future__ import annotations

import re
import signal
import sys

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.support import ROOT, clean_env
from tests.doubles.faktory import faktory_double

PROCESS_SERIES = {
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
}


async def read_port(stderr: trio.abc.ReceiveStream) -> int:
    seen = b""
    while not (match := re.search(rb"serving /metrics, /healthz and /readyz on [^\n]*port (\d+)", seen)):
        chunk = await stderr.receive_some(4096)
        assert chunk, seen.decode()
        seen += chunk
    return int(match[1])


async def test_a_running_runner_serves_process_series_and_go_bucket_labels(tmp_path) -> None:
    async with faktory_double() as server:
        jid = server.enqueue("legacy", [{"id": "5", "image": "alpine", "commands": ["echo hi"]}])
        env = clean_env(FAKTORY_URL=server.url(), OPSLEVEL_METRICS_PORT="0")
        argv = [sys.executable, "-m", "trunner", "run", "--mode", "faktory", "--executor", "local"]
        argv += ["--job-pod-workdir", str(tmp_path / "jobs")]
        with trio.fail_after(60):
            process = await trio.lowlevel.open_process(argv, cwd=ROOT, env=env, stderr=-1)
            try:
                assert process.stderr is not None
                port = await read_port(process.stderr)
                await server.wait_for(lambda: server.acks == [jid])
                async with httpx.AsyncClient(trust_env=False) as client:
                    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                process.send_signal(signal.SIGTERM)
                async with process.stderr:
                    while await process.stderr.receive_some(65536):
                        pass
                assert await process.wait() == 0
            finally:
                process.kill()
    samples = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples >= PROCESS_SERIES
    assert not [name for name in samples if name.startswith(("go_", "python_"))]
    buckets = re.findall(r'opslevel_runner_jobs_duration_bucket\{le="([^"]+)",runner="faktory"\} (\S+)', text)
    assert [le for le, _ in buckets] == ["5", "30", "60", "120", "300", "600", "900", "1200", "+Inf"]
    assert all(float(count) == 1 for _, count in buckets)
