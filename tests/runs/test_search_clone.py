"""A run of search and clone through the Runs service on loopback: stages in order, artifacts
on disk and in the record, headline figures, held-out problems kept out."""

from __future__ import annotations

import json
from pathlib import Path

from astro_core.pipeline.spec import RunSpec
from astro_core.synthetic import parse_synth_spec
from astro_core.trees import read_trees
from tests.runs.conftest import Coordinator, wait_for


def spec(model_dir: Path, **fields: object) -> RunSpec:
    data: dict[str, object] = {
        "name": "search-clone",
        "stages": ["search", "clone"],
        "base_model": {"path": str(model_dir)},
        "problems_path": "synth:product?n=4&seed=1",
        "config": {"search": {"iterations": 2}, "clone": {"preset": "cpu"}},
    }
    data.update(fields)
    return RunSpec.model_validate(data)


def test_search_then_clone_succeeds_with_every_artifact(
    coordinator: Coordinator, model_dir: Path
) -> None:
    started = coordinator.client.start(spec(model_dir))
    assert started.state in ("pending", "running")
    status = wait_for(coordinator.client, started.run_id)
    assert status.state == "succeeded", status.message
    stages = {s.name: s for s in status.stages}
    assert [s.name for s in status.stages][:2] == ["search", "clone"]
    assert stages["search"].state == stages["clone"].state == "succeeded"
    assert all(s.state == "skipped" for s in status.stages[2:])
    out = Path(status.output_dir)
    trees = list(read_trees(status.artifacts["search.trees"]))
    assert [t.problem_id for t in trees] == [
        p.id for p in parse_synth_spec("synth:product?n=4&seed=1").problems()
    ]
    assert Path(status.artifacts["search.trees"]).parent == out / "search"
    search = stages["search"].metrics
    assert search["trees"] == 4
    assert search["trees_with_correct_and_incorrect"] == 4
    traces = [json.loads(line) for line in Path(status.artifacts["clone.traces"]).open()]
    assert stages["clone"].metrics["traces"] == len(traces) > 0
    assert {t["problem_id"] for t in traces} <= {t.problem_id for t in trees}
    assert stages["clone"].metrics["backtracks_per_trace"] > 0
    assert stages["search"].attempts == stages["clone"].attempts == 1
    assert (out / "inputs" / "problems.jsonl").is_file()
    assert json.loads((out / "run.json").read_text())["run_id"] == status.run_id
