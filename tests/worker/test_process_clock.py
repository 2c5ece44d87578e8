import subprocess
import sys


def test_process_age_counts_a_process_from_its_start() -> None:
    # A child that sleeps a second before it asks: its age includes that second
    # and its interpreter's start-up, which a clock started in its code would miss.
    code = (
        "import time; time.sleep(1)\n"
        "from worker.process_clock import process_age; print(process_age())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(done.stdout) >= 1.0


def test_process_age_is_none_where_proc_cannot_be_read() -> None:
    code = (
        "import builtins; from worker.process_clock import process_age\n"
        "def refuse(*a, **k): raise OSError('no /proc')\n"
        "builtins.open = refuse; print(process_age())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "None"
