"""The lab records how long the mixer calls take and their share of the training steps (issue 20 item 4)."""
from __future__ import annotations

import json

import pytest

from mixlab_lab.cli import main


@pytest.mark.parametrize("mix", ["puzzlemix", "mixup"])
def test_mixed_arms_record_the_mixing_share_and_the_baseline_does_not(mix, tmp_path):
    out = tmp_path / mix
    argv = ["compare", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "64",
            "--train-size", "256", "--seeds", "0", "--mix", mix, "--quiet", "--out", str(out)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    by_arm = {r["arm"]: r for r in rows}
    assert set(by_arm) == {"baseline", mix}
    base, mixed = by_arm["baseline"], by_arm[mix]
    assert "mix_time_s" not in base and "mix_share_of_train_time_s" not in base  # nothing is mixed there
    assert 0 < mixed["mix_time_s"] < mixed["train_time_s"]
    share = mixed["mix_share_of_train_time_s"]
    assert 0 < share < 1
    assert share == pytest.approx(mixed["mix_time_s"] / mixed["train_time_s"])
