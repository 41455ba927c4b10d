"""Benchmarks of vs-coreml-esrgan; each measurement is a module of scripts/bench/.

    python scripts/bench.py [OPTIONS]              # pipeline efficiency of our backends
    python scripts/bench.py --peers [OPTIONS]      # the same weights through the peers
    python scripts/bench.py --ceiling [OPTIONS]    # the pipeline with an instant network
    python scripts/bench.py --encoder-speed [OPTIONS]  # each encoder at the job's sizes

``python scripts/bench.py --MEASUREMENT --help`` lists a measurement's options.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench package beside this

MEASUREMENTS = {"--peers": "bench.peers", "--ceiling": "bench.ceiling",
                "--encoder-speed": "bench.encoders"}
DEFAULT = "bench.efficiency"


def main(argv: list[str]) -> int:
    import importlib

    if argv[:1] == ["--worker"]:  # a worker process of the efficiency and peer runs
        from bench.runners import worker_main

        print(json.dumps(worker_main(json.loads(argv[1]))))
        return 0
    chosen = [flag for flag in MEASUREMENTS if flag in argv]
    if len(chosen) > 1:
        raise SystemExit(f"choose one of {', '.join(chosen)}")
    module = MEASUREMENTS[chosen[0]] if chosen else DEFAULT
    rest = [arg for arg in argv if arg not in MEASUREMENTS]
    return importlib.import_module(module).main(rest)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
