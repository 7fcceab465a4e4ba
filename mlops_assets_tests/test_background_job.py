"""The suite run as CI runs it: a background job of a script, which inherits SIGINT ignored."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from dagster import DagsterInstance, job, op

# Set in the inner pytest this test starts; it then checks instead of starting another.
INNER = "MLOPS_TEST_INNER_BACKGROUND_JOB"


@op
def nothing() -> None:
    pass


@job
def one_step() -> None:
    nothing()


def test_a_process_started_after_an_in_process_run_stops_on_sigterm_in_a_background_job(
    tmp_path: Path,
) -> None:
    if os.environ.get(INNER):
        # Dagster maps SIGTERM to whatever SIGINT does when an in-process run on the main thread
        # ends; a process started afterwards, off the main thread, inherits that.
        instance = DagsterInstance.ephemeral()
        assert one_step.execute_in_process(instance=instance).success
        started: list[subprocess.Popen[bytes]] = []
        thread = threading.Thread(target=lambda: started.append(subprocess.Popen(["sleep", "60"])))
        thread.start()
        thread.join()
        [child] = started
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise AssertionError("SIGTERM did not stop a process the suite started") from None
        assert child.returncode == -signal.SIGTERM
        return

    def as_a_background_job() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    inner = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}"],
        env={**os.environ, INNER: "1", "DAGSTER_HOME": str(tmp_path)},
        cwd=Path(__file__).parent.parent,
        preexec_fn=as_a_background_job,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert inner.returncode == 0, inner.stdout + inner.stderr
    assert "1 passed" in inner.stdout, inner.stdout
