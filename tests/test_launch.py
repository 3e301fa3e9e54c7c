"""The `launch` group: accelerate configs hfx generates are read back by accelerate's own config classes and launch
code, bad settings are refused in one line, and `hfx train launch=ddp` really runs 2 ranks over gloo on one frozen
config (and does so for each job of a sweep)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hfx.config.compose import check_composed, compose, validate
from hfx.errors import UsageError
from hfx.launch import accelerate_config, accelerate_config_name
from tests.conftest import TINY, run_hfx, shared

DATA = ["dataset=sst2", "dataset.max_train_samples=128", "dataset.max_eval_samples=32", "trainer.max_steps=4",
        "trainer.per_device_train_batch_size=16"]


def accelerate_reads(config: dict[str, Any], tmp_path: Path, *flags: str) -> tuple[Any, dict[str, str]]:
    """The config file through accelerate: ClusterConfig, `accelerate launch`'s own argument handling, and the
    environment its launcher gives the ranks."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = tmp_path / "accelerate_config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert isinstance(load_config_from_file(str(path)), ClusterConfig)
    args = launch_command_parser().parse_args(["--config_file", str(path), *flags, "-m", "hfx", "train"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


def generated(*overrides: str) -> Any:
    """The config of a command line, checked as the launching process checks it (print_only: the hardware of
    this machine is not asked, so GPU-only launches generate here too)."""
    cfg = compose("train", [*TINY, *overrides, "launch.print_only=true"])
    check_composed(cfg)
    return cfg


def test_ddp_config_gives_two_ranks(tmp_path) -> None:
    args, env = accelerate_reads(accelerate_config(generated("launch=ddp", "launch.num_processes=2")), tmp_path)
    assert args.multi_gpu and args.nproc_per_node == "2" and args.num_machines == 1
    assert env["ACCELERATE_MIXED_PRECISION"] in ("no", "bf16")


def test_fsdp_config_builds_accelerates_fsdp_plugin(tmp_path) -> None:
    from accelerate.utils import FullyShardedDataParallelPlugin, patch_environment
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    cfg = generated("launch=fsdp", "launch.num_processes=2", "launch.sharding_strategy=SHARD_GRAD_OP",
                    "launch.transformer_layer_cls_to_wrap=BertLayer")
    args, env = accelerate_reads(accelerate_config(cfg), tmp_path)
    assert args.use_fsdp and env["ACCELERATE_USE_FSDP"] == "true"
    with patch_environment(**{k: v for k, v in env.items() if k.startswith("FSDP_")}):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is False  # SHARD_GRAD_OP under FSDP2
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy
    assert plugin.transformer_cls_names_to_wrap == ["BertLayer"]
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    # FSDP1: the wrapper's sharding strategy and use_orig_params (LoRA freezes part of each unit).
    _, env = accelerate_reads(accelerate_config(generated("launch=fsdp", "launch.version=1",
                                                          "launch.sharding_strategy=HYBRID_SHARD")), tmp_path)
    assert (env["FSDP_VERSION"], env["FSDP_SHARDING_STRATEGY"], env["FSDP_USE_ORIG_PARAMS"]) == \
        ("1", "HYBRID_SHARD", "true")


def test_under_fsdp_the_trainers_activation_checkpointing_is_fsdps_own(tmp_path) -> None:
    """transformers: the trainer's activation checkpointing under FSDP adds an all-gather to each backward pass."""
    from accelerate.utils import FullyShardedDataParallelPlugin, patch_environment

    from hfx.launch import apply_launch_settings
    from hfx.trainer import training_arguments

    cfg = generated("launch=fsdp", "trainer.activation_checkpointing=true")
    apply_launch_settings(cfg)
    _, env = accelerate_reads(accelerate_config(cfg), tmp_path)
    with patch_environment(**{k: v for k, v in env.items() if k.startswith("FSDP_")}):
        assert FullyShardedDataParallelPlugin().activation_checkpointing is True
    assert training_arguments(cfg, {}, tmp_path, []).activation_checkpointing is False
    ddp = generated("launch=ddp", "trainer.activation_checkpointing=true")
    apply_launch_settings(ddp)  # DDP has no checkpointing of its own: the trainer keeps it
    assert training_arguments(ddp, {}, tmp_path, []).activation_checkpointing is True


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_config_builds_accelerates_deepspeed_plugin(stage: int, tmp_path) -> None:
    from accelerate.utils import DeepSpeedPlugin, patch_environment

    cfg = generated(f"launch=deepspeed_zero{stage}", "launch.num_processes=4", "launch.mixed_precision=bf16",
                    "launch.offload_optimizer_device=cpu", "trainer.gradient_accumulation_steps=2")
    args, env = accelerate_reads(accelerate_config(cfg), tmp_path)
    assert args.use_deepspeed and args.nproc_per_node == "4"
    with patch_environment(**{k: v for k, v in env.items() if k.startswith("ACCELERATE_")}):
        ds = DeepSpeedPlugin().deepspeed_config
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["gradient_accumulation_steps"] == 2  # the Trainer's own value, so the two agree
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16" and cfg.trainer.bf16 is None
    if stage == 3:
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_multi_node_prints_each_machines_command(tmp_path, capsys, monkeypatch) -> None:
    from hfx.cli import main

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    main(["train", *TINY, "launch=multi_node", "launch.num_machines=2", "launch.num_processes=4",
          "launch.main_process_ip=10.0.0.1", "launch.print_only=true"])
    out = capsys.readouterr().out
    assert not list(cwd.iterdir())  # nothing ran, nothing was written
    commands = re.findall(r"^  (hfx train .*)$", out, re.M)
    assert len(commands) == 2, out
    run_dirs = {re.search(r"hydra.run.dir=(\S+)", c).group(1) for c in commands}
    assert len(run_dirs) == 1, commands  # every machine writes into one run directory
    for rank, command in enumerate(commands):
        overrides = command.split()[2:]
        assert f"launch.machine_rank={rank}" in overrides and "launch.print_only=true" not in overrides
        cfg = validate("train", [o for o in overrides if not o.startswith("hydra.")], check_composed)
        args, env = accelerate_reads(accelerate_config(cfg), tmp_path)
        assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", rank, "2")
        assert args.rdzv_endpoint == "10.0.0.1:29500"  # torch's static rendezvous at machine 0
        assert accelerate_config_name(cfg.launch) == f"accelerate_config.machine{rank}.yaml"


BAD = [
    (["launch=multi_node"], "launch.main_process_ip: required with launch.num_machines=2"),
    (["launch=multi_node", "launch.main_process_ip=h", "launch.machine_rank=2"], "launch.machine_rank: expected 0 .."),
    (["launch=multi_node", "launch.main_process_ip=h", "launch.num_processes=3"], "a multiple of launch.num_machines"),
    (["launch=ddp", "launch.num_processes=1"], "launch=ddp needs at least 2 processes"),
    (["launch=ddp", "launch.num_procs=2"], "unknown key 'launch.num_procs'"),
    (["launch=local", "launch.num_processes=2"], "unknown key 'launch.num_processes'"),
    (["launch=mpi"], "launch=mpi: no such option"),
    (["launch=ddp", "launch.mixed_precision=fp32"], "launch.mixed_precision: expected one of no, bf16, fp16"),
    (["launch=ddp", "launch.mixed_precision=bf16", "trainer.bf16=false"], "conflicts with trainer.bf16=false"),
    (["launch=fsdp", "launch.sharding_strategy=FULL"], "launch.sharding_strategy: expected one of FULL_SHARD"),
    (["launch=fsdp", "launch.sharding_strategy=NO_SHARD"], "needs launch.version=1"),
    (["launch=deepspeed_zero2", "launch.offload_param_device=cpu"], "ZeRO stage 3 only"),
]
CPU_ONLY = [
    (["launch=ddp", "launch.mixed_precision=fp16"], "launch.mixed_precision=fp16: fp16 needs a CUDA GPU"),
    (["launch=deepspeed_zero3"], "launch=deepspeed_zero3: DeepSpeed trains on CUDA GPUs and this machine has none"),
    (["launch=fsdp"], "launch=fsdp: accelerate runs FSDP on GPUs only"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD + CPU_ONLY, ids=[m[:40] for _, m in BAD + CPU_ONLY])
def test_bad_launch_settings_are_refused_in_one_line(overrides: list[str], message: str) -> None:
    import torch

    if (overrides, message) in CPU_ONLY and torch.cuda.is_available():
        pytest.skip("refused only on a machine without GPUs")
    with pytest.raises(UsageError) as e:
        validate("train", [*TINY, *overrides], check_composed)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_config_saved_before_the_launch_group_reads_as_local() -> None:
    from omegaconf import OmegaConf

    from hfx.config.store import typed_train_config

    saved = OmegaConf.to_container(compose("train", TINY), resolve=True)
    del saved["launch"]
    assert typed_train_config(saved, "config.yaml").launch.name == "local"


def test_a_rank_hfx_launched_takes_the_launching_process_config(monkeypatch) -> None:
    from omegaconf import OmegaConf

    from hfx.distributed import FROZEN_CONFIG_ENV, frozen_config
    from hfx.launch import needs_launch

    launching = compose("train", [*TINY, "launch=ddp", "experiment_name=from_launcher", "trainer.bf16=true"])
    monkeypatch.setenv(FROZEN_CONFIG_ENV, json.dumps(OmegaConf.to_container(launching, resolve=True)))
    for name in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "ACCELERATE_MIXED_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    own = compose("train", [*TINY, "launch=ddp"])
    assert frozen_config(own) is own and needs_launch(own)  # not a rank: its own config, and it launches
    monkeypatch.setenv("LOCAL_RANK", "1")
    cfg = frozen_config(own)
    assert (cfg.experiment_name, cfg.launch.num_processes, cfg.trainer.bf16) == ("from_launcher", 2, True)
    assert not needs_launch(cfg)  # a rank never launches again (nor under the user's own `accelerate launch`)


@pytest.mark.slow
def test_launch_ddp_runs_two_ranks_on_one_frozen_config(cache, tmp_path) -> None:
    # experiment_name names the run dir and holds the time to the microsecond: every rank must use the launching
    # process's value.
    r = run_hfx("train", *TINY, *DATA, f"dataset.data_dir={shared('sst2')}", f"cache_dir={cache}",
                "launch=ddp", "launch.num_processes=2", "experiment_name=t${now:%H%M%S%f}", "trainer.logging_steps=1",
                cache=cache, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    runs = [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    assert json.loads((run / "metrics.json").read_text())["world_size"] == 2
    log = (run / "train.log").read_text()
    assert log.count("world size 2") == 2, log  # both ranks trained in this run dir
    assert yaml.safe_load((run / "config.yaml").read_text())["experiment_name"] == run.parent.name
    assert r.stdout.count("finished") == 1 and f"hfx: {run.parent.name} " in r.stdout
    configs = list(run.glob("accelerate_config*.yaml"))
    assert [c.name for c in configs] == ["accelerate_config.yaml"]
    assert yaml.safe_load(configs[0].read_text())["num_processes"] == 2
    assert "HFX_LAUNCH_CONFIG" not in os.environ


@pytest.mark.extended  # outside CI's 20 minutes (make test-extended)
def test_each_sweep_job_is_a_two_process_run(cache, tmp_path) -> None:
    from tests.test_loggers import _wandb_records

    r = run_hfx("train", "-m", *TINY, *DATA, f"dataset.data_dir={shared('sst2')}", f"cache_dir={cache}",
                "launch=ddp", "launch.num_processes=2", "trainer.learning_rate=1e-3,2e-3", "logger=wandb",
                cache=cache, cwd=tmp_path, env={"WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-4000:]
    sweep = next((tmp_path / "multirun" / "default").iterdir())
    jobs = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["ok", "ok"] and jobs[0]["objective"] is not None
    for n, lr in ((0, "0.001"), (1, "0.002")):
        job = sweep / str(n)
        assert json.loads((job / "metrics.json").read_text())["world_size"] == 2
        assert (job / "accelerate_config.yaml").is_file()
        # The ranks run as single runs: the job hands them the sweep's name and group for the trackers.
        run, _ = _wandb_records(job, cache)
        assert run["display_name"] == f"default-learning_rate={lr}", run
        assert run.get("run_group") == f"default-{sweep.name}"


def test_a_rank_of_a_launched_sweep_job_names_the_run_as_the_sweep_does(monkeypatch, tmp_path) -> None:
    from hfx.loggers import SWEEP_JOB_ENV, run_name, store_dir, sweep_group

    monkeypatch.setenv(SWEEP_JOB_ENV, json.dumps([str(tmp_path / "sweep"), ["learning_rate=0.001"]]))
    assert run_name("exp", tmp_path / "sweep" / "0") == "exp-0"  # not a rank: the job itself is the sweep's
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_name("exp", tmp_path / "sweep" / "0") == "exp-learning_rate=0.001"
    assert sweep_group("exp") == "exp-sweep" and store_dir(tmp_path / "x", "mlruns") == tmp_path / "sweep" / "mlruns"


@pytest.mark.extended  # submitit polls its jobs: about a minute of mostly waiting (make test-extended)
def test_submitits_local_executor_runs_each_job_as_a_two_process_run(cache, tmp_path) -> None:
    """hydra-submitit-launcher's local executor (what `hydra/launcher=submitit_slurm` submits to SLURM, run on this
    machine): each job goes through the same launch path and really trains on 2 ranks."""
    r = run_hfx("train", "-m", "hydra/launcher=submitit_local", *TINY, *DATA, f"dataset.data_dir={shared('sst2')}",
                f"cache_dir={cache}", "launch=ddp", "launch.num_processes=2", "trainer.max_steps=2",
                cache=cache, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    sweep = next((tmp_path / "multirun" / "default").iterdir())
    assert list((sweep / ".submitit").glob("*/*_result.pkl"))  # submitit, not Hydra's basic launcher, ran it
    jobs = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["ok"], jobs
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and "eval_accuracy" in metrics
