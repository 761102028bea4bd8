"""ONNX files on disk: one ``.onnx`` file, or a graph with its weights in external-data files beside it.

A model whose weights pass what one protobuf file can hold (2 GB) keeps them in ``model.onnx.data`` beside
``model.onnx`` (ONNX's external-data format), which ONNX Runtime finds on its own when it loads ``model.onnx``. The
graph names its data files relative to itself, so moving, hashing or replacing a graph means doing the same to them:
the functions here are the only place that handles that layout.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError, first_line, sha256_file


def _all_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of ``graph``: initializers, and tensors in node attributes and subgraphs (ONNX Runtime's
    quantizers move large Constant attributes to external data too)."""
    yield from graph.initializer
    yield from (s.values for s in graph.sparse_initializer)
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def external_data_files(onnx_path: Path) -> list[str]:
    """Files holding ``onnx_path``'s external tensors, relative to its folder, in first-use order; empty for a graph
    that is one file. Reads the graph only, not the weights."""
    import onnx

    names: dict[str, None] = {}
    for t in _all_tensors(onnx.load(str(onnx_path), load_external_data=False).graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            names[next(e.value for e in t.external_data if e.key == "location")] = None
    return list(names)


def save_graph(model: Any, path: Path, external: bool) -> None:
    """Write the ModelProto ``model`` to ``path``: one file, or (``external``) its tensors over 1 KiB in
    ``<path name>.data`` beside it."""
    import onnx
    from google.protobuf.message import EncodeError

    data = path.with_name(path.name + ".data")
    # onnx appends to an existing data file, so a stale one would stay inside the new one as dead bytes
    data.unlink(missing_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        return
    try:
        onnx.save_model(model, str(path))
    except (ValueError, EncodeError) as e:  # upb raises EncodeError, the pure-Python protobuf ValueError
        raise UserError(f"the ONNX graph does not fit one protobuf file (2 GB limit): use --external-data always "
                        f"({first_line(e)})") from e


def move_graph(src: Path, dst: Path) -> None:
    """Move the graph ``src`` and its external-data files to ``dst``, replacing ``dst`` and its data files. The graph
    names its data files relative to itself, so they keep their names beside the moved graph."""
    if dst.is_file():
        for name in external_data_files(dst):
            (dst.parent / name).unlink(missing_ok=True)
    for name in external_data_files(src):
        (dst.parent / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src.parent / name, dst.parent / name)
    os.replace(src, dst)


def graph_record(onnx_path: Path) -> dict[str, Any]:
    """Manifest fields of a graph: its hash and size, whether it has external data, and each data file's name,
    hash and size (a graph's weights are part of what a hash must pin down)."""
    files = external_data_files(onnx_path)
    return {
        "sha256": sha256_file(onnx_path), "size_bytes": onnx_path.stat().st_size, "external_data": bool(files),
        "data_files": [{"name": n, "sha256": sha256_file(onnx_path.parent / n),
                        "size_bytes": (onnx_path.parent / n).stat().st_size} for n in files],
    }


def store_exported(path: Path, external: bool) -> None:
    """Leave the exporter's graph at ``path`` in the layout the run chose: one file, or ``model.onnx`` plus
    ``model.onnx.data``. Why: the TorchScript exporter takes no such option and spills a graph over 2 GB into one file
    per tensor, named after the tensor; the dynamo exporter spills from its own threshold (1.5 GiB)."""
    import onnx

    files = external_data_files(path)
    if files == ([path.name + ".data"] if external else []):
        return
    model = onnx.load(str(path))  # brings every external tensor into memory, so their files can go
    for name in files:
        (path.parent / name).unlink()
    save_graph(model, path, external)
