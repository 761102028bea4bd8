"""The text-classification family's own commands: each stage on its own (prepare-data, finetune-teacher, distill,
export, quantize), ``predict`` with an exported folder on ONNX Runtime alone, and ``sweep``. Stages pass folders to
each other; ``distill-and-export`` (the core's) runs them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from compresskit.cli.flags import finetune_config, floats, load_options

# The options each stage command takes.
LOAD = ("trust_remote_code", "allow_pickle")
DATA = ("dataset", "text_column", "label_column", "max_samples", "drop_unlabeled", "validation_fraction",
        "test_fraction", "seed")
TRAIN = ("batch_size", "max_length", "device", "precision", "gradient_accumulation", "seed", "save_steps",
         "early_stopping_patience", "fsdp")
DISTILL = ("temperature", "alpha", "student_layers", "student", "student_shape", "w_soft", "w_mse_logits", "w_hidden",
           "hidden_loss", "w_attention", "w_embedding", "layer_map", "unlabeled_data", "labeled_fraction",
           "cache_teacher_activations", "epochs", "learning_rate", *TRAIN)
EXPORT = ("exporter", "attention", "opset", "optimize", "parity_tolerance", "parity_min_agreement", "max_length",
          "external_data", "cls_only", "skip_layer_norm", "batch_sizes")
QUANTIZE = ("quantize", "per_channel", "int8_min_agreement", "max_accuracy_drop", "calibration_samples",
            "calibration_method", "int4_block_size", "fallback", "max_length")


def fine_tuned_teacher(o: dict[str, Any]) -> Path:
    """``--teacher`` for the commands that read a fine-tuned classifier (distill, sweep): a folder as it is (the stage
    checks it); a name through ``resolve_teacher``, so the bundled default maps to its folder (a bare encoder, which
    distill refuses with the way to fine-tune it) and a mistyped path is said to be missing."""
    from compresskit.tasks.classification.models import DEFAULT_TEACHER, resolve_teacher

    teacher = o["teacher"] or DEFAULT_TEACHER
    folder = Path(teacher)
    return folder if folder.exists() else Path(resolve_teacher(teacher))


def add_commands(cli: Any) -> None:
    """Declare the family's commands on the app (``cli.command(name, *options)``, see ``compresskit.cli.app``)."""

    @cli.command("prepare-data", "out", *DATA)
    def prepare_data_cmd(**o: Any) -> None:
        """Load a labelled data set and write a stratified train/validation/test split."""
        from compresskit.tasks.classification.data import prepare_data
        from compresskit.tasks.classification.options import data_config

        r = prepare_data(data_config(o), o["out"])
        cli.console.print(f"data: {r.sizes} labels={r.labels} → {r.data_dir}")


    @cli.command("finetune-teacher", "teacher", "data", "out", "teacher_epochs", "teacher_learning_rate", *TRAIN,
                 "resume", *LOAD)
    def finetune_cmd(**o: Any) -> None:
        """Fine-tune a teacher that has no classification head on the data's labels."""
        from compresskit.tasks.classification.finetune import finetune_teacher
        from compresskit.tasks.classification.models import DEFAULT_TEACHER, resolve_teacher

        r = finetune_teacher(finetune_config(o), resolve_teacher(o["teacher"] or DEFAULT_TEACHER), o["data"], o["out"],
                             resume=o["resume"])
        cli.console.print(f"teacher: validation accuracy {r.validation_accuracy:.4f} → {r.model_dir}")


    @cli.command("distill", "teacher", "data", "out", *DISTILL, "cache_dir", "resume", *LOAD)
    def distill_cmd(**o: Any) -> None:
        """Distil a student from a fine-tuned teacher (soft targets at temperature T, mixed with labels by α)."""
        from compresskit.tasks.classification.distill import distill
        from compresskit.tasks.classification.options import distill_config
        from compresskit.training import is_main_process

        out = o["out"]
        r = distill(distill_config(o), fine_tuned_teacher(o), o["data"], out, o["cache_dir"] or out.parent / ".cache",
                    load_options(o), resume=o["resume"])
        if not is_main_process():
            return
        cli.console.print(f"student: {r.parameters:,} parameters, validation accuracy {r.validation_accuracy:.4f} "
                      f"→ {r.model_dir}")


    @cli.command("export", "model", "data", "out", "name", *EXPORT, "allow_pickle")
    def export_cmd(**o: Any) -> None:
        """Export a classifier to ONNX (dynamic batch and sequence) and verify it against PyTorch."""
        from compresskit.tasks.classification.export import export
        from compresskit.tasks.classification.options import export_config

        r = export(export_config(o), o["model"], o["data"], o["out"], o["name"], load_options(o))
        cli.console.print(f"export: max |Δ| {r.parity.max_abs_diff:.2e}, agreement {r.parity.label_agreement:.2%} "
                      f"→ {r.onnx_dir}")


    @cli.command("quantize", "onnx", "data", "out", *QUANTIZE, "device", "name")
    def quantize_cmd(**o: Any) -> None:
        """Quantize an ONNX model with ONNX Runtime and verify it against its fp32 self."""
        from compresskit.tasks.classification.options import onnx_device, quantize_config
        from compresskit.tasks.classification.quantize import quantize

        # auto targets CUDA when ONNX Runtime can use it; cpu and cuda are taken as asked (quantize checks cuda)
        device = onnx_device("auto") if o["device"] == "auto" else o["device"]
        r = quantize(quantize_config(o, device), o["onnx"], o["data"], o["out"], o["name"])
        cli.console.print(f"quantize: {r.mode}, agreement with fp32 {r.parity.label_agreement:.2%} → {r.onnx_dir}")


    @cli.command("predict", "json")
    def predict_cmd(folder: Annotated[Path, typer.Argument(help="An exported (or quantized) ONNX folder.")],
                    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")], **o: Any) -> None:
        """Classify texts with an exported folder, using ONNX Runtime alone (torch is not imported)."""
        import json

        from compresskit.tasks.classification.runtime import OnnxClassifier

        clf = OnnxClassifier(folder)
        for text, p in zip(texts, clf.predict(texts)):
            if o["json"]:
                print(json.dumps({"text": text, **p}))
            else:
                print(f"{p['label']}\t{p['score']:.3f}\t{text[:80]}")


    @cli.command("sweep", "teacher", "data", "out", "students", "temperatures", "alphas", "epochs", "batch_size",
                 "learning_rate", "max_length", "device", "seed", "unlabeled_data", "labeled_fraction", "keep_models",
                 "threads")
    def sweep_cmd(**o: Any) -> None:
        """Distil a grid of students (architecture × T × α, with the α=0 ablation) and compare them."""
        from compresskit.tasks.classification.bench import BenchConfig
        from compresskit.tasks.classification.options import distill_config
        from compresskit.tasks.classification.sweep import SweepConfig, sweep

        cfg = SweepConfig(tuple(s.strip() for s in o["students"].split(";") if s.strip()),
                          floats("--temperatures", o["temperatures"]), floats("--alphas", o["alphas"]),
                          keep_models=o["keep_models"])
        bench_cfg = BenchConfig(batch_sizes=(1,), sequence_length=o["max_length"], min_iterations=20, min_seconds=2.0,
                                rounds=1, threads=o["threads"], device=o["device"])
        base = distill_config(o)  # every point's settings but its grid values; the distill flags not taken: defaults
        result = sweep(cfg, base, fine_tuned_teacher(o), o["data"], o["out"], bench_cfg, o["out"] / ".cache")
        for c in result["comparisons"]:
            cli.console.print(f"{c['label']}: {c['diff'] * 100:+.2f} points, "
                          f"95% CI [{c['low'] * 100:+.2f}, {c['high'] * 100:+.2f}]")
        cli.console.print(f"sweep report: {result['paths']['html']}")
