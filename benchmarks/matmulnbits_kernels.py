"""Benchmark: how close do ONNX Runtime's weight-only MatMul kernels (MatMulNBits) come to the memory limit when
decoding one token, by bits and block size, on the shapes of the default 10-layer SmolLM2 student?

    python benchmarks/matmulnbits_kernels.py [--threads 2] [--megabytes 96]

Why: a decoder at batch 1 reads every weight once a token, so it can at best run at the machine's read bandwidth;
the causal-LM benchmark reports each graph's share of it. This measures the kernels alone: one-row activations
through a chain of MatMulNBits nodes of one shape (random weights, asymmetric, with zero points, as the GenAI
builder writes them), enough nodes that their weights (``--megabytes``) are far larger than the last-level cache,
so every run streams them from memory. The bytes counted are what a node reads: packed weights, scales and zero
points. The read bandwidth is measured in the same process just before (numpy sum over the same threads,
``compresskit.machine.memory_bandwidth``), since on a virtual machine it moves between processes.

Prints a Markdown table: per shape, bits, block size and accuracy level, the microseconds a node takes, the GB/s
it reads and that over the read bandwidth.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

# (name, K, N) of the default student's MatMuls (hidden 576, MLP 1536, 9 + 2 × 3 heads of 64, vocabulary 49152)
SHAPES = (("qkv", 576, 960), ("o", 576, 576), ("gate/up", 576, 1536), ("down", 1536, 576),
          ("lm_head", 576, 49152))


def chain(k: int, n: int, bits: int, block: int, accuracy: int, nodes: int) -> tuple[bytes, int]:
    """A graph of ``nodes`` independent MatMulNBits nodes of shape (K, N) on one input row; returns the serialized
    model and the bytes its weights, scales and zero points take."""
    from onnx import TensorProto, helper, numpy_helper

    blocks = math.ceil(k / block)
    rng = np.random.default_rng(0)
    graph_nodes, inits, total = [], [], 0
    for i in range(nodes):
        arrays = (rng.integers(0, 256, (n, blocks, block * bits // 8), dtype=np.uint8),
                  (rng.random((n, blocks), dtype=np.float32) * 0.01).astype(np.float32),
                  rng.integers(0, 256, (n, math.ceil(blocks * bits / 8)), dtype=np.uint8))
        names = [f"w{i}", f"s{i}", f"z{i}"]
        inits += [numpy_helper.from_array(a, nm) for a, nm in zip(arrays, names)]
        total += sum(a.nbytes for a in arrays)
        graph_nodes.append(helper.make_node("MatMulNBits", ["x", *names], [f"y{i}"], domain="com.microsoft", K=k,
                                            N=n, bits=bits, block_size=block, accuracy_level=accuracy))
    graph = helper.make_graph(graph_nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, k])],
                              [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 1, n])
                               for i in range(nodes)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString(), total


def seconds_per_run(model: bytes, k: int, threads: int, runs: int = 30, repeats: int = 5) -> float:
    """Best over ``repeats`` of the mean time of ``runs`` runs, after a warm-up."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(1).random((1, 1, k), dtype=np.float32)}
    for _ in range(5):
        session.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(runs):
            session.run(None, feed)
        best = min(best, (time.perf_counter() - t0) / runs)
    return best


def main() -> None:
    import onnxruntime as ort

    from compresskit.machine import machine_info, memory_bandwidth

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--megabytes", type=int, default=96, help="weights streamed per run (above the last-level cache)")
    ap.add_argument("--blocks", default="32,64,128", help="block sizes to try")
    args = ap.parse_args()
    blocks = [int(b) for b in args.blocks.split(",")]
    info = machine_info(args.threads)
    print(f"### MatMulNBits at one token, {args.threads} threads, ~{args.megabytes} MB of weights a run\n")
    print(f"Machine: {info.get('cpu')}; onnxruntime {ort.__version__}\n")
    print("| shape (K × N) | bits | block | accuracy level | µs a node | GB/s read | of read bandwidth |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, k, n in SHAPES:
        for bits in (4, 8):
            for block in blocks:
                for accuracy in (1, 4) if bits == 4 and block == 32 else (4,):
                    per_node = math.ceil(k / block) * n * (block * bits // 8 + 5)
                    nodes = max(1, round(args.megabytes * 2**20 / per_node))
                    model, nbytes = chain(k, n, bits, block, accuracy, nodes)
                    roof = memory_bandwidth(args.threads, repeats=5)["gb_per_s"]
                    t = seconds_per_run(model, k, args.threads)
                    used = nbytes / t / 1e9
                    print(f"| {name} ({k} × {n}) | {bits} | {block} | {accuracy} | {t / nodes * 1e6:.1f} | "
                          f"{used:.1f} | {used / roof:.0%} of {roof:.1f} |", flush=True)


if __name__ == "__main__":
    main()
