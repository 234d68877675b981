"""The stage chain is one list: what the wiring check reads is what `apply_chain` builds, each stage is built
from exactly its spec's arguments, and the read side of the pipeline starts without the model stages."""

import inspect
import subprocess
import sys

import pytest

from internvl_batch.config import JobConfig
from internvl_batch.errors import ColumnContractError
from internvl_batch.pipeline.chain import GENERATE, JOB_CHAIN, MODEL_CHAIN, WRITE, RunValues, apply_chain
from internvl_batch.stages.columns import check_wiring
from internvl_batch.stages.generate import GenerateStage
from internvl_batch.stages.prepare import PrepareStage
from internvl_batch.stages.read import REQUEST_SCHEMA
from internvl_batch.stages.write import WriteStage


@pytest.fixture
def config(tmp_path):
    return JobConfig(input={"manifests": "m.jsonl"}, output={"path": str(tmp_path)}, model={"path": str(tmp_path)})


RUN = RunValues("tiny", "run-1", {"label": "label"}, reserved_gpus=0, crash_ledger=None)


def test_the_job_chain_is_prepare_generate_write_and_wires():
    assert [spec.stage for spec in JOB_CHAIN] == [PrepareStage, GenerateStage, WriteStage]
    assert JOB_CHAIN[: len(MODEL_CHAIN)] == MODEL_CHAIN
    check_wiring(REQUEST_SCHEMA.names, [spec.stage for spec in JOB_CHAIN])


@pytest.mark.parametrize("spec", JOB_CHAIN, ids=lambda spec: spec.stage.__name__)
def test_each_stage_is_built_from_its_spec_alone(spec, config):
    """The constructor takes the stage's config sections plus the run values its spec names: nothing is
    missing (WriteStage once had no `sections`) and nothing extra is passed."""
    arguments = spec.arguments(config, RUN)
    signature = inspect.signature(spec.stage)
    signature.bind(**arguments)  # raises TypeError on a missing or unexpected argument
    assert set(arguments) == {name for name in signature.parameters}


def test_run_values_reach_the_stages_by_name(config):
    assert WRITE.arguments(config, RUN) == {
        "output_path": str(config.output.path),
        "storage": config.storage,
        "run_id": "run-1",
    }
    generate = GENERATE.arguments(config, RUN)
    assert (generate["model_name"], generate["reserved_gpus"], generate["passthrough"]) == (
        "tiny",
        0,
        {"label": "label"},
    )


def test_a_chain_that_misses_a_column_fails_before_anything_is_wired(config):
    """The check reads the chain `apply_chain` is given: nothing is mapped (no dataset needed) when it fails."""
    with pytest.raises(ColumnContractError, match="GenerateStage needs the column\\(s\\) input_ids, pixels"):
        apply_chain(None, (GENERATE, WRITE), config, RUN)


def test_the_read_side_starts_without_torch():
    """Every worker that runs a read, layout or scan task imports these modules: they must not bring the model
    stages (torch: ~2 s of CPU and a few hundred MB per worker process). Checked in a fresh process."""
    code = (
        "import sys\n"
        "import internvl_batch.pipeline.reading, internvl_batch.pipeline.prepass, internvl_batch.pipeline.outputs\n"
        "print(sorted(m for m in ('torch', 'transformers', 'internvl_batch.stages.generate') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
