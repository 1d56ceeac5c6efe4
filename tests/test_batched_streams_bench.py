"""benchmarks/batched_streams.py: the ``--order`` mode specs (no server is started)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "batched_streams.py"


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("batched_streams")


@pytest.mark.parametrize("spec, baseline, expected", [
    ("unbatched", False, (False, False, None, None)),
    ("batched", False, (True, False, None, None)),
    ("batched:bs16", False, (True, False, 16, None)),
    ("batched:bs32:w25", False, (True, False, 32, 25.0)),
    ("batched:w2.5:baseline", True, (True, True, None, 2.5)),
    ("unbatched:bs4", False, (False, False, 4, None)),
    ("batched:baseline", True, (True, True, None, None)),
    ("batched:baseline:bs16", True, (True, True, 16, None)),
    ("batched:bs2:baseline", True, (True, True, 2, None)),
])
def test_mode_specs(bench, spec, baseline, expected):
    assert bench.parse_mode(spec, baseline) == expected


@pytest.mark.parametrize("spec, baseline, words", [
    ("fast", False, "expected unbatched or batched"),
    ("batched:baseline", False, "needs --baseline"),
    ("batched:bs0", False, "N a batch size > 0"),
    ("batched:bsx", False, "got :bsx"),
    ("batched:bs8:bs16", False, "got :bs16"),
    ("batched:", False, "got :"),
    ("batched:w", False, "got :w"),
    ("batched:w-1", False, "got :w-1"),
    ("batched:w2000", False, "got :w2000"),
    ("batched:w5:w10", False, "got :w10"),
])
def test_bad_mode_specs_name_the_spec(bench, spec, baseline, words):
    with pytest.raises(ValueError) as e:
        bench.parse_mode(spec, baseline)
    assert repr(spec) in str(e.value) and words in str(e.value)


def test_bad_order_is_one_line_before_any_server_starts(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "none.jsonl"), "--order",
                        "unbatched,batched:bs-1", "--out", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("--order unbatched,batched:bs-1: mode 'batched:bs-1': expected :baseline, :bsN "
                                "(N a batch size > 0) or :wMS (a batch wait of 0-1000 ms), got :bs-1")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc for per-thread CPU times")
def test_cpu_seconds_split_main_thread_from_the_others(bench):
    """The CPU accounting the report's per-stream-second figures come from: work on another thread counts there,
    not on the main thread (the server's event loop)."""
    import os
    import threading
    import time

    def burn(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    done, stop = threading.Event(), threading.Event()

    def worker() -> None:                 # stays alive until read: an ended thread leaves /proc/PID/task
        burn(0.3)
        done.set()
        stop.wait()

    main0, other0 = bench._cpu_seconds(os.getpid())
    t = threading.Thread(target=worker)
    t.start()
    done.wait()
    main1, other1 = bench._cpu_seconds(os.getpid())
    stop.set()
    t.join()
    assert other1 - other0 >= 0.25 and main1 - main0 < 0.2
    burn(0.3)
    main2, other2 = bench._cpu_seconds(os.getpid())
    assert main2 - main1 >= 0.25
    assert bench._cpu_seconds(2 ** 22 + 12345) is None         # no such process: None, not an error
