"""Does export time its candidate graphs fairly? The same graphs timed side by side in one process, as
``export.time_sessions`` does, with and without the pause before each block (``timing.SETTLE_SECONDS``), each setting
repeated in fresh sessions; then each graph alone in its own process, the reference.

Why: ONNX Runtime's intra-op threads spin after each run, and on a 2-core machine the previous session's spinning
threads slow the next session's first runs. If side-by-side timing is unfair, export's choice between close graphs
is a coin flip and two runs of one commit ship different graphs.

    python benchmarks/export_timing.py export/bbc-rounds-a/onnx/student export/bbc-rounds-b/onnx/student \
        --inputs export/bbc-rounds-a/bench/inputs.npz
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from compresskit.machine import default_threads, machine_info
from compresskit.tasks.classification.export import time_sessions
from compresskit.timing import SETTLE_SECONDS

ALONE = """
import json, sys, numpy as np
from pathlib import Path
from compresskit.tasks.classification.export import time_sessions
d = np.load(sys.argv[2]); arrays = {k: d[k][:8] for k in d.files if k != "labels"}
print(json.dumps(time_sessions({"g": Path(sys.argv[1])}, arrays, int(sys.argv[3]), (1, 32))["g"]))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("graphs", nargs="+", type=Path, help="ONNX graph folders (each with model.onnx)")
    p.add_argument("--inputs", type=Path, required=True, help="a bench inputs.npz (token ids of the test split)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    threads = default_threads()
    data = np.load(args.inputs)
    arrays = {k: data[k][:8] for k in data.files if k != "labels"}  # export times 8 validation rows
    paths = {str(g): g / "model.onnx" for g in args.graphs}
    print(json.dumps({"machine": machine_info(threads).get("cpu"), "threads": threads}))
    for settle in (0.0, SETTLE_SECONDS):
        for r in range(args.repeats):
            ms = time_sessions(paths, arrays, threads, (1, 32), settle_s=settle)
            print(json.dumps({"side_by_side": True, "settle_s": settle, "repeat": r + 1,
                              **{k: {w: round(v, 2) for w, v in t.items()} for k, t in ms.items()}}), flush=True)
    for name, path in paths.items():
        for r in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", ALONE, str(path), str(args.inputs), str(threads)],
                                 capture_output=True, text=True, check=True).stdout
            print(json.dumps({"alone": name, "repeat": r + 1,
                              **{w: round(v, 2) for w, v in json.loads(out).items()}}), flush=True)


if __name__ == "__main__":
    main()
