"""The `launch` group: where a run executes. `launch=local` trains in this process; `ddp`, `fsdp`,
`deepspeed_zero2` / `deepspeed_zero3` and `multi_node` write an accelerate config into the run directory and run
`accelerate launch -m hfx train ...` on it. Hydra composes and resolves the config once, here: every rank receives
that frozen config (HFX_LAUNCH_CONFIG), so all ranks agree on the run directory and every `${now:...}` value."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.config.schema import EntryConfig
from hfx.errors import HfxError, Stopped
from hfx.registry import Registry

log = logging.getLogger("hfx")

PRECISIONS = ("no", "bf16", "fp16")
FSDP_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "HYBRID_SHARD_ZERO2")
FSDP_WRAP = ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP")
FSDP_STATE_DICT = ("FULL_STATE_DICT", "SHARDED_STATE_DICT")
OFFLOAD_DEVICES = ("none", "cpu", "nvme")


@dataclass
class LocalLaunch(EntryConfig):
    """One process, this one."""

    name: str = "local"
    # null = the trainer's choice (trainer.bf16 / trainer.fp16); no, bf16 or fp16 sets them.
    mixed_precision: str | None = None


@dataclass
class DistributedLaunch(EntryConfig):
    """Data parallel over processes: accelerate's MULTI_GPU (on a machine without GPUs: gloo ranks on the CPU)."""

    name: str = "ddp"
    # Processes over all machines together (accelerate's meaning): 8 GPUs on each of 2 machines is 16.
    num_processes: int = 2
    num_machines: int = 1
    # This machine's rank, 0 .. num_machines-1; machine 0 runs the main process.
    machine_rank: int = 0
    # The address of machine 0, required with num_machines > 1.
    main_process_ip: str | None = None
    # null = a free port on one machine, 29500 across machines.
    main_process_port: int | None = None
    mixed_precision: str | None = None
    # Print the command each machine runs (and the accelerate config) and stop: nothing runs, nothing is written.
    print_only: bool = False


@dataclass
class FsdpLaunch(DistributedLaunch):
    """Fully sharded data parallel (torch FSDP through accelerate)."""

    name: str = "fsdp"
    # 2 = torch's fully_shard (FSDP2); 1 = the FullyShardedDataParallel wrapper.
    version: int = 2
    # FULL_SHARD, SHARD_GRAD_OP (FSDP2: reshard_after_forward true / false); NO_SHARD, HYBRID_SHARD,
    # HYBRID_SHARD_ZERO2 with version 1.
    sharding_strategy: str = "FULL_SHARD"
    # TRANSFORMER_BASED_WRAP (each transformer layer its own unit), SIZE_BASED_WRAP or NO_WRAP.
    auto_wrap_policy: str = "TRANSFORMER_BASED_WRAP"
    # Layer class names to wrap (comma-separated); null = the model's own (its `_no_split_modules`).
    transformer_layer_cls_to_wrap: str | None = None
    # SIZE_BASED_WRAP: modules with at least this many parameters become a unit.
    min_num_params: int = 100_000_000
    offload_params: bool = False
    # FULL_STATE_DICT gathers checkpoints on rank 0; SHARDED_STATE_DICT saves a shard per rank.
    state_dict_type: str = "FULL_STATE_DICT"
    activation_checkpointing: bool = False
    cpu_ram_efficient_loading: bool = True


@dataclass
class DeepSpeedLaunch(DistributedLaunch):
    """DeepSpeed ZeRO through accelerate (CUDA GPUs and the deepspeed package)."""

    name: str = "deepspeed"
    zero_stage: int = 2
    # none, cpu or nvme: where optimizer states (stage 2, 3) and parameters (stage 3 only) are offloaded.
    offload_optimizer_device: str = "none"
    offload_param_device: str = "none"
    # Stage 3: build the model already partitioned; save a gathered 16-bit model (what model/ needs).
    zero3_init_flag: bool = True
    zero3_save_16bit_model: bool = True


@dataclass
class Launcher:
    schema: type
    # accelerate's distributed_type; None = train in this process.
    distributed_type: str | None = None
    # launch section -> the accelerate config's own section for it (fsdp_config, deepspeed_config).
    section: Callable[[DictConfig, DictConfig], dict[str, Any]] = lambda launch, cfg: {}
    # (launch section, GPUs this machine trains on: 0 on a CPU, None when not asked (print_only)) -> raises
    check: Callable[[DictConfig, int | None], None] = lambda launch, gpus: None


def fsdp_section(launch: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    fsdp: dict[str, Any] = {"fsdp_version": launch.version, "fsdp_auto_wrap_policy": launch.auto_wrap_policy,
                            "fsdp_offload_params": launch.offload_params,
                            "fsdp_state_dict_type": launch.state_dict_type,
                            "fsdp_activation_checkpointing": launch.activation_checkpointing,
                            "fsdp_cpu_ram_efficient_loading": launch.cpu_ram_efficient_loading}
    if launch.version == 1:  # use_orig_params: PEFT freezes part of each unit
        fsdp.update(fsdp_sharding_strategy=launch.sharding_strategy, fsdp_use_orig_params=True,
                    fsdp_sync_module_states=True, fsdp_backward_prefetch="BACKWARD_PRE", fsdp_forward_prefetch=False)
    else:
        fsdp["fsdp_reshard_after_forward"] = launch.sharding_strategy == "FULL_SHARD"
    if launch.auto_wrap_policy == "TRANSFORMER_BASED_WRAP" and launch.transformer_layer_cls_to_wrap:
        fsdp["fsdp_transformer_layer_cls_to_wrap"] = launch.transformer_layer_cls_to_wrap
    if launch.auto_wrap_policy == "SIZE_BASED_WRAP":
        fsdp["fsdp_min_num_params"] = launch.min_num_params
    return {"fsdp_config": fsdp}


def check_fsdp(launch: DictConfig, gpus: int | None) -> None:
    for key, valid in (("sharding_strategy", FSDP_SHARDING), ("auto_wrap_policy", FSDP_WRAP),
                       ("state_dict_type", FSDP_STATE_DICT)):
        expect(f"launch.{key}", launch[key], valid)
    expect("launch.version", launch.version, (1, 2))
    if launch.version == 2 and launch.sharding_strategy not in ("FULL_SHARD", "SHARD_GRAD_OP"):
        raise HfxError(f"launch.sharding_strategy={launch.sharding_strategy} needs launch.version=1 (FSDP2 "
                       "shards fully: FULL_SHARD or SHARD_GRAD_OP)")
    if gpus == 0:  # measured: accelerate 1.15 makes CPU ranks MULTI_CPU and ignores the FSDP plugin
        raise HfxError("launch=fsdp: accelerate runs FSDP on GPUs only; on a CPU its ranks would silently train plain "
                       "DDP without sharding; use launch=ddp here (launch.print_only=true prints the commands for a "
                       "GPU machine)")


def deepspeed_section(launch: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    ds: dict[str, Any] = {"zero_stage": launch.zero_stage, "offload_optimizer_device": launch.offload_optimizer_device,
                          # the Trainer's own values, so that DeepSpeed and the Trainer agree on them
                          "gradient_accumulation_steps": cfg.trainer.gradient_accumulation_steps,
                          "gradient_clipping": cfg.trainer.max_grad_norm}
    if launch.zero_stage == 3:
        ds.update(offload_param_device=launch.offload_param_device, zero3_init_flag=launch.zero3_init_flag,
                  zero3_save_16bit_model=launch.zero3_save_16bit_model)
    if launch.num_machines > 1:
        ds["deepspeed_multinode_launcher"] = "standard"  # torch's rendezvous, one command per machine (no ssh)
    return {"deepspeed_config": ds}


def check_deepspeed(launch: DictConfig, gpus: int | None) -> None:
    import importlib.util

    expect("launch.zero_stage", launch.zero_stage, (0, 1, 2, 3))
    expect("launch.offload_optimizer_device", launch.offload_optimizer_device, OFFLOAD_DEVICES)
    expect("launch.offload_param_device", launch.offload_param_device, OFFLOAD_DEVICES)
    if launch.offload_param_device != "none" and launch.zero_stage != 3:
        raise HfxError(f"launch.offload_param_device={launch.offload_param_device}: parameters are offloaded by "
                       f"ZeRO stage 3 only (launch.zero_stage={launch.zero_stage})")
    if gpus == 0:
        raise HfxError(f"launch=deepspeed_zero{launch.zero_stage}: DeepSpeed trains on CUDA GPUs and this machine "
                       "has none; on a CPU use launch=ddp (launch.print_only=true prints the commands for a GPU "
                       "machine)")
    if gpus and importlib.util.find_spec("deepspeed") is None:
        raise HfxError(f"launch=deepspeed_zero{launch.zero_stage}: needs the deepspeed package; install it with "
                       "`pip install deepspeed`")


LAUNCHERS: Registry[Launcher] = Registry("launch")
LAUNCHERS.add("local", Launcher(LocalLaunch))
LAUNCHERS.add("ddp", Launcher(DistributedLaunch, "MULTI_GPU"))
LAUNCHERS.add("fsdp", Launcher(FsdpLaunch, "FSDP", fsdp_section, check_fsdp))
LAUNCHERS.add("deepspeed", Launcher(DeepSpeedLaunch, "DEEPSPEED", deepspeed_section, check_deepspeed))


def expect(key: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise HfxError(f"{key}: expected one of {', '.join(map(str, valid))}, got '{value}'")


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# --- checks and the resolved precision -------------------------------------------------------------------------

def check_launch(cfg: DictConfig) -> None:
    """The launch section against itself, the trainer and this machine; one line naming the key at fault. With
    launch.print_only the commands are for other machines: this one's hardware is not asked."""
    from hfx.trainer import on_cpu

    launch = cfg.launch
    entry = LAUNCHERS.get(launch.name)
    here = not launch.get("print_only", False)
    mixed_precision(cfg, here)
    if entry.distributed_type is None:
        return
    gpus = (0 if on_cpu(cfg.trainer) else cuda_devices()) if here else None
    check_processes(launch, gpus)
    entry.check(launch, gpus)


def check_processes(launch: DictConfig, gpus: int | None) -> None:
    n, machines, rank = launch.num_processes, launch.num_machines, launch.machine_rank
    if machines < 1:
        raise HfxError(f"launch.num_machines: expected a positive number, got {machines}")
    if n < machines or n % machines:
        raise HfxError(f"launch.num_processes: the processes of all machines together, a multiple of "
                       f"launch.num_machines={machines}; got {n}")
    if launch.name == "ddp" and n < 2:
        raise HfxError(f"launch.num_processes: launch=ddp needs at least 2 processes (launch=local runs one), got {n}")
    if not 0 <= rank < machines:
        raise HfxError(f"launch.machine_rank: expected 0 .. {machines - 1} (launch.num_machines={machines}), "
                       f"got {rank}")
    if machines > 1 and not launch.main_process_ip:
        raise HfxError(f"launch.main_process_ip: required with launch.num_machines={machines}: the address the other "
                       "machines reach machine 0 at (launch.main_process_ip=10.0.0.1)")
    port = launch.main_process_port
    if port is not None and not 0 <= port <= 65535:
        raise HfxError(f"launch.main_process_port: expected a port number 0 .. 65535, got {port}")
    if gpus and n // machines > gpus:
        raise HfxError(f"launch.num_processes={n}: {n // machines} processes on this machine, which has {gpus} GPUs")


def mixed_precision(cfg: DictConfig, here: bool = True) -> str:
    """launch.mixed_precision, null resolved from the trainer (trainer.fp16, trainer.bf16 with hfx's automatic
    choice); an explicit value must agree with an explicit trainer setting."""
    from hfx.trainer import on_cpu, use_bf16

    chosen, tcfg = cfg.launch.mixed_precision, cfg.trainer
    if chosen is None:
        return "fp16" if tcfg.fp16 else "bf16" if use_bf16(tcfg) else "no"
    expect("launch.mixed_precision", chosen, PRECISIONS)
    if chosen == "fp16" and here and on_cpu(tcfg):
        raise HfxError("launch.mixed_precision=fp16: fp16 needs a CUDA GPU and none is in use; on a CPU use bf16 "
                       "(fast on CPUs with AMX or avx512_bf16) or no")
    for key, value in (("fp16", tcfg.fp16 or None), ("bf16", tcfg.bf16)):
        if value is not None and value != (chosen == key):
            raise HfxError(f"launch.mixed_precision={chosen} conflicts with trainer.{key}={str(value).lower()}; set "
                           "one of them")
    return chosen


def apply_launch_settings(cfg: DictConfig) -> None:
    """What the launch choice decides for the trainer: an explicit launch.mixed_precision becomes trainer.bf16 /
    trainer.fp16, which the Trainer reads; under launch=fsdp, trainer.activation_checkpointing becomes FSDP's own
    (launch.activation_checkpointing: the trainer's would add an all-gather to every backward pass)."""
    chosen = cfg.launch.mixed_precision
    if chosen is not None:
        mixed_precision(cfg)
        cfg.trainer.bf16, cfg.trainer.fp16 = chosen == "bf16", chosen == "fp16"
    if cfg.launch.name == "fsdp" and cfg.trainer.activation_checkpointing:
        log.info("launch=fsdp: activation checkpointing by FSDP (launch.activation_checkpointing), not the trainer")
        cfg.launch.activation_checkpointing, cfg.trainer.activation_checkpointing = True, False


# --- the accelerate config and the commands --------------------------------------------------------------------

def accelerate_config(cfg: DictConfig) -> dict[str, Any]:
    """The accelerate config file (`accelerate config`'s format, ClusterConfig's keys) for this machine."""
    launch = cfg.launch
    multi = launch.num_machines > 1
    port = launch.main_process_port if launch.main_process_port is not None else 29500 if multi else 0
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE", "distributed_type": LAUNCHERS.get(launch.name).distributed_type,
        "mixed_precision": mixed_precision(cfg, here=not launch.print_only), "use_cpu": False, "debug": False,
        "num_processes": launch.num_processes, "num_machines": launch.num_machines,
        "machine_rank": launch.machine_rank, "main_process_port": port, "gpu_ids": "all",
        "rdzv_backend": "static", "main_training_function": "main",
        "enable_cpu_affinity": False, "downcast_bf16": False,
    }
    if multi:
        config["main_process_ip"] = launch.main_process_ip
    config.update(LAUNCHERS.get(launch.name).section(launch, cfg))
    return config


def accelerate_config_name(launch: DictConfig) -> str:
    """One file per machine when several share a run directory (each holds its machine rank)."""
    return "accelerate_config.yaml" if launch.num_machines == 1 else \
        f"accelerate_config.machine{launch.machine_rank}.yaml"


def rank_command(config_file: Path, overrides: list[str], run_path: Path, threads: int | None) -> list[str]:
    """accelerate launch on the config file, each rank running `hfx train` with the job's overrides in this run
    directory (Hydra's .hydra/ record is the launching process's)."""
    from hfx.config.compose import quoted

    flags = ["--num_cpu_threads_per_process", str(threads)] if threads else []
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file), *flags,
            "-m", "hfx", "train", *overrides, f"hydra.run.dir={quoted(str(run_path))}", "hydra.output_subdir=null"]


def machine_commands(cfg: DictConfig, args: list[str], run_dir: str) -> list[str]:
    """`hfx train ...` for each machine: the same overrides, its machine rank, and one run directory."""
    own = ("launch.machine_rank=", "launch.print_only=", "hydra.run.dir=")
    kept = [a for a in args if not a.lstrip("+~").startswith(own)]
    return [shlex.join(["hfx", "train", *kept, f"launch.machine_rank={rank}", f"hydra.run.dir={run_dir}"])
            for rank in range(cfg.launch.num_machines)]


def print_plan(args: list[str]) -> None:
    """launch.print_only=true: the config as each machine's hfx will write it and the command each runs."""
    import yaml

    from hfx.commands.train import MULTIRUN_FLAGS
    from hfx.config.compose import compose, user_overrides

    if set(args) & MULTIRUN_FLAGS:
        raise HfxError("launch.print_only: prints the commands of one run; drop -m")
    cfg = compose("train", user_overrides(args))
    run_dir = planned_run_dir(args)
    launch = cfg.launch
    choice = next((a.partition("=")[2] for a in args if a.startswith("launch=")), launch.name)
    lines = [f"hfx: launch={choice}: {launch.num_machines} machine(s), {launch.num_processes} processes in all; "
             f"run dir {run_dir}",
             f"accelerate config, as each machine's hfx writes it at start ({accelerate_config_name(launch)}, ...):"]
    lines += ["  " + line for line in yaml.safe_dump(accelerate_config(cfg), sort_keys=True).splitlines()]
    for rank, command in enumerate(machine_commands(cfg, args, run_dir)):
        where = f" (main process, {launch.main_process_ip})" if rank == 0 and launch.num_machines > 1 else ""
        lines += [f"machine {rank}{where}:", f"  {command}"]
    print("\n".join(lines), flush=True)


def planned_run_dir(args: list[str]) -> str:
    """hydra.run.dir as the run will resolve it (the start stamp of this process), fixed for every machine."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hfx.config.compose import user_overrides
    from hfx.paths import conf_dir

    hydra_args = [a for a in args if a.startswith("hydra.run.dir=")]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="hfx"):
        cfg = hydra_compose("train", overrides=[*user_overrides(args), *hydra_args], return_hydra_config=True)
    return str(cfg.hydra.run.dir)


# --- running the ranks -----------------------------------------------------------------------------------------

def launch(cfg: DictConfig, run_path: Path, overrides: list[str]) -> dict[str, Any]:
    """Run this job under accelerate launch and return the metrics rank 0 wrote. The ranks get this process's
    resolved config; their failure is this job's, with the reason rank 0 left in the run directory."""
    import yaml

    from hfx.distributed import FROZEN_CONFIG_ENV, run_child
    from hfx.files import write_text
    from hfx.loggers import SWEEP_JOB_ENV, sweep_job
    from hfx.rundir import RunDir

    if cfg.resume:  # a mark of the session before is not this one's outcome (rank 0 writes config.yaml)
        RunDir(run_path).clear_marks()
    config_file = write_text(run_path / accelerate_config_name(cfg.launch),
                             yaml.safe_dump(accelerate_config(cfg), sort_keys=True))
    launch_cfg = cfg.launch
    if launch_cfg.num_machines > 1:
        for rank, command in enumerate(machine_commands(cfg, overrides, str(run_path))):
            if rank != launch_cfg.machine_rank:
                log.info("launch: machine %d runs: %s", rank, command)
    command = rank_command(config_file, overrides, run_path, cpu_threads(launch_cfg))
    log.info("launch: %d process(es) on this machine under accelerate launch (%s): %s",
             launch_cfg.num_processes // launch_cfg.num_machines, config_file.name, shlex.join(command))
    env = {**os.environ, FROZEN_CONFIG_ENV: json.dumps(OmegaConf.to_container(cfg, resolve=True))}
    sweep = sweep_job()
    if sweep is not None:  # the ranks name and group the run as the sweep's other jobs
        env[SWEEP_JOB_ENV] = json.dumps([str(sweep[0]), sweep[1]])
    code = run_child(command, env)
    for name, error in (("INTERRUPTED", Stopped), ("FAILED", HfxError)):
        if code and (run_path / name).is_file():
            raise error((run_path / name).read_text().strip())
    if code:
        raise HfxError(f"launch: accelerate launch exited with code {code} (the ranks' log: {run_path / 'train.log'})")
    metrics_file = run_path / "metrics.json"
    if launch_cfg.machine_rank != 0 and not metrics_file.is_file():
        return {}  # machine 0 writes the results (into its own run directory unless it is shared)
    return json.loads(metrics_file.read_text())


def cpu_threads(launch: DictConfig) -> int | None:
    """CPU threads per rank on a machine without GPUs: its cores shared out (torch's launcher gives each 1)."""
    if os.environ.get("OMP_NUM_THREADS") or cuda_devices():
        return None
    from hfx.sweeps import cpu_cores

    return max(cpu_cores() // (launch.num_processes // launch.num_machines), 1)


def needs_launch(cfg: DictConfig) -> bool:
    """A multi-process launch asked for, and this process is not already one of a launcher's ranks."""
    from hfx.distributed import FROZEN_CONFIG_ENV, under_launcher

    if LAUNCHERS.get(cfg.launch.name).distributed_type is None:
        return False
    if under_launcher():
        if FROZEN_CONFIG_ENV not in os.environ:
            log.info("launch=%s: already under a launcher (world size %s); its settings are not applied again",
                     cfg.launch.name, os.environ.get("WORLD_SIZE", "1"))
        return False
    return True

