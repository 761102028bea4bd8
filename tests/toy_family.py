"""A third task family, for tests only: label integers as even or odd. The teacher is the rule ``x % 2``; the student
is a "distilled" rule that only reads the last digit. Everything a family gives the core, in a few lines: it is
registered by patching ``compresskit.tasks.families`` (what adding a family changes besides its own package), and
its benchmark runs on the shared harness, this module being its worker (``python -m toy_family SPEC RESULT``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compresskit.artifacts import atomic_dir, write_json
from compresskit.bench import BenchResult, pool_samples, run_rounds, run_worker, worker_main
from compresskit.tasks.protocol import Collected, Column, Stage, StageContext
from compresskit.timing import time_runs
from compresskit.variants import Variant

RULES = {"teacher": lambda x: x % 2, "student": lambda x: int(str(x)[-1]) % 2}


@dataclass(frozen=True)
class ToySettings:
    count: int = 30
    rounds: int = 2


@dataclass(frozen=True)
class Toy:
    name: str = "parity-toy"
    summary: str = "label integers as even or odd"
    needs: str = "nothing"
    default_teacher: str = "rule:x%2"
    teacher_aliases: tuple[str, ...] = ()
    quality_metric: str = "accuracy"
    agreement_metric: str = "accuracy"
    perplexity_metric: str | None = None
    quality_fields: tuple[str, ...] = ("accuracy",)
    options: dict[str, Any] = field(default_factory=dict)
    default_budget: dict[str, float] = field(default_factory=lambda: {"max_accuracy_drop": 0.01})

    def accepts(self, config: Any) -> bool:
        return False

    def settings(self, o: dict[str, Any]) -> ToySettings:
        return ToySettings(rounds=o.get("rounds") or ToySettings.rounds)

    def default_run_name(self, cfg: Any) -> str:
        return "toy"

    def identity(self, cfg: Any) -> dict[str, Any]:
        return {"teacher": cfg.teacher, "settings": dataclasses.asdict(cfg.settings)}

    def preflight(self, cfg: Any, cache: Path) -> None:
        return None

    def stages(self, ctx: StageContext) -> list[Stage]:
        def data() -> list[str]:
            write_json(ctx.layout.data / "data.json", {"task": self.name, "sizes": {"test": ctx.cfg.settings.count}})
            return []

        return [Stage("data", "integers", data), Stage("bench", "harness", lambda: self._bench(ctx))]

    def _bench(self, ctx: StageContext) -> list[str]:
        self.bench_run(ctx.cfg.settings, ctx.layout)
        return []

    def bench_run(self, settings: ToySettings, layout: Any) -> None:
        variants = [Variant(f"{m}-rule", m, "pytorch", "fp32", layout.data) for m in RULES]
        with atomic_dir(layout.bench) as tmp:
            inputs = tmp / "inputs.json"
            inputs.write_text(json.dumps(list(range(settings.count))))
            results, skipped = run_rounds(variants, settings.rounds, lambda v, r: run_worker(
                "toy_family", v, settings, inputs, tmp, 1, tag=f".{r}"), lambda _: None, lambda v, i, r: v.name)
            gold = [x % 2 for x in range(settings.count)]
            rows = []
            for v in variants:
                lat, rounds = pool_samples([r["samples"] for r in results[v.name]])
                pred = results[v.name][0]["predictions"]
                rows.append({"name": v.name, "model": v.model, "format": "pytorch", "precision": "fp32",
                             "accuracy": sum(p == g for p, g in zip(pred, gold)) / len(gold), "size_mb": 0.0,
                             "parameters": 0, "peak_rss_mb": results[v.name][0]["peak_rss_mb"],
                             "latency_ms": {"batch_1": lat.__dict__}, "latency_rounds_ms": {"batch_1": rounds},
                             "throughput_per_s": {"batch_1": 1000 / lat.mean}})
            write_json(tmp / "bench.json", BenchResult(self.name, 1, settings.count, 1, "teacher-rule", {}, rows,
                                                       skipped=skipped).to_dict())

    def add_commands(self, cli: Any) -> None:
        return None

    def collect(self, layout: Any) -> Collected:
        return Collected([], {})

    def report_columns(self) -> list[Column]:
        return [Column("accuracy (%)", "accuracy", scale=100)]

    def report_lines(self, report: dict[str, Any]) -> list[tuple[str, str]]:
        return [("Rule", "x % 2")]

    def report_sections(self, report: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
        return [("Rules", [("student-rule", "reads the last digit only")])]

    def metrics(self, row: dict[str, Any]) -> dict[str, float]:
        return {"accuracy": row["accuracy"]}

    def compare_notes(self, baseline: dict[str, Any], current: dict[str, Any], common: list[str]) -> dict[str, Any]:
        return {}

    def decision_workloads(self, variants: list[dict[str, Any]]) -> list[Any]:
        from compresskit.decision import Workload

        return [Workload("batch_1", "p50 at batch 1 (ms)", "latency_ms.batch_1.p50", False, "latency_rounds_ms.batch_1")]

    def budget_interval(self, gate: str, row: dict[str, Any], teacher: dict[str, Any], report: dict[str, Any]
                        ) -> tuple[float, float] | None:
        return None

    def value_interval(self, field: str, row: dict[str, Any], report: dict[str, Any]) -> tuple[float, float] | None:
        return None

    def card(self, report: dict[str, Any], row: dict[str, Any]) -> Any:
        from compresskit.deploy import CardFacts

        return CardFacts("other", "Parity", [{"type": "accuracy", "name": "accuracy", "value": row.get("accuracy"),
                                              "field": "accuracy"}], "print(x % 2)", "true", "python")


TOY = Toy()


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """The worker: the rule's predictions on the inputs and the time of each call."""
    from compresskit.machine import peak_rss_mb

    rule = RULES[spec["variant"]["model"]]
    xs = json.loads(Path(spec["inputs"]).read_text())
    return {"predictions": [rule(x) for x in xs], "peak_rss_mb": peak_rss_mb(),
            "samples": time_runs(lambda x: rule(x), xs, min_iterations=20)}


if __name__ == "__main__":
    worker_main(measure)
