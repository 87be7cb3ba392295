"""Benchmarks of edge-gcl: each harness prints a table, saves JSON and draws a plot.

    python -m benchmarks.recall    # M-BEIR recall per form (PyTorch, ONNX, QDQ, EPContext); GCL vs CL vs pairwise
    python -m benchmarks.latency   # per tower and end to end, per form and batch; AI Hub device profiles
    python -m benchmarks.index     # search time and memory vs collection size, vs faiss / usearch and the
                                   # memory-bandwidth floor; photo ingest throughput
    python -m benchmarks.report    # all of the above for the default model -> runs/benchmarks/ (--out benchmarks/results:
                                   # the committed results, and docs/results.md)

`common.py` holds what they share: the machine/versions header, timing and memory helpers, tables, JSON.
"""

from edge_gcl.extras import require_or_exit as _require_or_exit

# Run from a clone with the [dev] extra: in the runtime install, one line says so (not a traceback).
_require_or_exit("dev", what="the benchmarks", modules=["torch", "onnx", "matplotlib", "faiss"], clone=True)
