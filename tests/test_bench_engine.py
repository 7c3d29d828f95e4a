"""The scoring benchmark's harness, on a pool small enough for the test suite (its figures are not checked)."""

import pytest

from influal.bench.engine import scoring


@pytest.mark.parametrize("scope", ["last", "weights"])
def test_scoring_benchmark_times_inference_scoring_and_loop_in_both_layouts(scope):
    result = scoring(pool_size=64, loop_items=4, batch_size=32, models=("cnn",), scopes=(scope,),
                     reference_size=16, labeled_size=16, lissa_steps=2, repeats=1)
    (row,) = result["rows"]
    assert row["engine_layout"] == "channels_last"  # a CPU classifier with convolutions
    assert row["method"] == ("closed" if scope == "last" else "layerwise")
    for key in ("inference_s", "inference_engine_layout_s", "scoring_s", "loop_s_extrapolated", "loop_as_built_s"):
        assert row[key] > 0
    assert row["loop_s_extrapolated"] <= row["loop_as_built_s"]  # the faster of the two layouts
    assert row["speedup_vs_loop"] == pytest.approx(row["loop_s_extrapolated"] / row["scoring_s"])
