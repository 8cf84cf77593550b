"""`python -m bench.fraud.fake_brain --port P`: tests/support/fake_brain.py's scripted FraudBrain as
a process of its own, so `--fake-brain` exercises the bench (and its CPU accounting) before the
real brain exists. It answers every Score at once with a fixed score; SIGTERM stops it."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tests.support.fake_brain import FakeBrain


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fraud.fake_brain")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    brain = FakeBrain().start(args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"fake brain on {brain.address}", flush=True)
    stop.wait()
    brain.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
