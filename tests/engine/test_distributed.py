"""Multi-process training: deterministic sharding, the global target normaliser, and a 2-process
gloo run under torchrun that matches a single-process run with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_model

from vocaseg.engine.distributed import DistInfo, ShardedSampler, global_target_count
from vocaseg.engine.train_config import parse_train_config
from vocaseg.engine.trainer import Trainer

ENGINE_TESTS = Path(__file__).resolve().parent


def test_shards_partition_each_epoch_and_resume_mid_epoch():
    shards = [ShardedSampler(10, DistInfo(rank, 3), seed=5) for rank in range(3)]
    indices = [list(s) for s in shards]
    assert all(len(i) == 3 for i in indices)  # drop_last: 9 of 10
    flat = [i for shard in indices for i in shard]
    assert len(set(flat)) == 9
    single = ShardedSampler(10, DistInfo(0, 1), seed=5)
    assert flat != list(single)[:9] and sorted(single) == list(range(10))
    shards[1].set_position(epoch=1)
    epoch1 = list(shards[1])
    assert epoch1 != indices[1]
    shards[1].set_position(epoch=1, start=2)
    assert list(shards[1]) == epoch1[2:] and len(shards[1]) == 1


def test_padding_without_drop_last_repeats_the_head():
    shards = [
        ShardedSampler(5, DistInfo(rank, 2), shuffle=False, drop_last=False) for rank in (0, 1)
    ]
    assert [list(s) for s in shards] == [[0, 2, 4], [1, 3, 0]]


def test_global_target_count_single_process():
    normaliser = global_target_count([3.0, 5.0], DistInfo(), torch.device("cpu"))
    assert normaliser.item() == 4.0  # (3 + 5) / (1 process x 2 micro-batches)
    assert global_target_count([0.0], DistInfo(), torch.device("cpu")).item() == 1.0


def test_two_process_gloo_run_matches_single_process(tmp_path):
    sections = {"steps": 3, "model": {"dropout": 0.0}, "logging": {"every": 1, "progress": False}}
    two = tiny_model.tiny_train_config(tmp_path / "ddp", data={"batch_size": 2}, **sections)
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(two), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ENGINE_TESTS), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "vocaseg", "train", str(config)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "weights identical on all 2 processes" in result.stdout

    one = tiny_model.tiny_train_config(tmp_path / "single", data={"batch_size": 4}, **sections)
    single = Trainer(parse_train_config(one))
    single.train()
    ddp_weights = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=1e-5, atol=1e-6)
