"""A PyTorch classifier to one ONNX graph, and ONNX Runtime's transformer fusions on it: the two steps that export
runs for each of its candidates, and that the teacher cache runs to compute a teacher's logits faster."""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.onnx.io import move_graph, store_exported


@dataclass(frozen=True)
class ExportSpec:
    """What an exported graph takes and gives: names, and the axes that stay dynamic (a task's ``export_spec``)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]


def logits_export_spec(input_names: list[str] | tuple[str, ...]) -> ExportSpec:
    """Token tensors ``(batch, sequence)`` in, one row of logits per input out: a classifier's graph."""
    names = tuple(input_names)
    return ExportSpec(inputs=names, outputs=("logits",),
                      dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}})


class _LogitsOnly:
    """Wraps a classifier so the exported graph takes positional token tensors and returns only logits."""

    @staticmethod
    def wrap(model: Any, input_names: list[str]) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors):
                out = self.model(**dict(zip(input_names, tensors)))
                return out.logits if hasattr(out, "logits") else out  # a ClsOnlyClassifier returns the logits

        return Wrapped().eval()


def torch_export(model: Any, sample: dict[str, np.ndarray], path: Path, exporter: str, opset: int,
                 external: bool = False, spec: ExportSpec | None = None) -> None:
    """Export the classifier ``model`` to ``path`` as a graph from token tensors (named as in ``sample``, each
    ``(batch, sequence)`` int64) to ``logits`` ``(batch, classes)``; ``spec`` (the task's export spec; default the
    text-classification one) names the inputs and outputs and says which axes stay dynamic.

    ``exporter`` is ``torchscript`` (``torch.onnx.export(dynamo=False)``) or ``dynamo``; ``sample`` is traced, so a
    few real rows do. The graph is left as one file, or with its weights in ``<path name>.data`` (``external``).
    """
    import warnings

    import torch

    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"exporter must be torchscript or dynamo, got {exporter!r}")
    if spec is None:
        spec = logits_export_spec(list(sample))
    names = list(spec.inputs)
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    wrapped = _LogitsOnly.wrap(model, names)
    # The tracer warns about every Python branch on shapes in transformers' mask code; the parity check on real
    # inputs of several lengths is what tells whether the traced graph is right, so the warnings are noise.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                wrapped, args, str(path), input_names=names, output_names=list(spec.outputs), opset_version=opset,
                dynamic_axes=spec.dynamic_axes,
                do_constant_folding=True, dynamo=False,
            )
        else:
            # one Dim per axis name, shared by every input that has that axis; a sequence of one token is a
            # constant the exporter would specialise on, hence min=2
            dims = {a: torch.export.Dim(a, min=2 if a == "sequence" else 1)
                    for n in names for a in spec.dynamic_axes.get(n, {}).values()}
            shapes = tuple({i: dims[a] for i, a in spec.dynamic_axes.get(n, {}).items()} for n in names)
            with contextlib.redirect_stdout(io.StringIO()):  # its step-by-step progress lines are not for users
                program = torch.onnx.export(
                    wrapped, args, input_names=names, output_names=list(spec.outputs), opset_version=opset,
                    dynamic_shapes=(shapes,), dynamo=True, optimize=True,
                )
            program.save(str(path), external_data=external)
    store_exported(path, external)


def optimize_graph(path: Path, config: Any, external: bool = False) -> dict[str, int]:
    """Fuse transformer subgraphs of the graph at ``path`` in place with ONNX Runtime's optimizer, for a model with
    the Hugging Face ``config``; returns fused-operator counts. A failure leaves the graph at ``path`` whole."""
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = config.model_type if config.model_type in ("bert", "roberta", "distilbert") else "bert"
    # opt_level 0: only the Python fusions, so the file stays portable across execution providers; the
    # session applies ORT's own provider-specific optimisations when it loads the model.
    opt = optimize_model(str(path), model_type=model_type, num_heads=config.num_attention_heads,
                         hidden_size=config.hidden_size, opt_level=0)
    # Saved beside, then moved over the plain graph: a save that fails half-way must leave the plain graph whole,
    # since the caller keeps it when optimisation fails.
    staged = path.parent / "optimized" / path.name
    try:
        opt.save_model_to_file(str(staged), use_external_data_format=external, all_tensors_to_one_file=True)
        move_graph(staged, path)
    finally:
        shutil.rmtree(staged.parent, ignore_errors=True)
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
