"""Secrets never reach a file: planted where they would leak (a `hub_token` override, a `${oc.env:...}` value, the
W&B and hub keys in the environment), then every byte of every file a run, a sweep and W&B write is searched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hfx.redaction import REDACTED, is_secret_key, redact, redact_text
from hfx.rundir import RunDir
from tests.conftest import TINY, hfx_env

TYPED = "hfxtest-typed-7c1e9a3f5b2d"  # typed on the command line as trainer.extra.hub_token
FROM_ENV = "hfxtest-envvar-4b8d2f6a1c9e"  # reaches the config through ${oc.env:MY_TOKEN}
WANDB_KEY = "hfxtest-wandbkey-0a1b2c3d4e5f6a7b8c9d0e1f"
HF_KEY = "hfxtest-hftoken-9f8e7d6c5b4a"
SECRETS = (TYPED, FROM_ENV, WANDB_KEY, HF_KEY)
SMALL = [*TINY, "dataset.max_train_samples=32", "dataset.max_eval_samples=8", "trainer.max_steps=2",
         "trainer.per_device_train_batch_size=16", "trainer.logging_steps=1"]


@pytest.fixture(scope="module")
def planted(hfx_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A W&B run with the token from ${oc.env:...}, and a 2-job sweep (W&B, TensorBoard) with the token typed, run
    side by side. W&B's own folders (data, cache, config) are under the same root, and so is the working dir."""
    root = tmp_path_factory.mktemp("secrets")
    env = {**hfx_env(hfx_cache), "WANDB_MODE": "offline", "WANDB_API_KEY": WANDB_KEY, "HF_TOKEN": HF_KEY,
           "MY_TOKEN": FROM_ENV}
    env.update({f"WANDB_{k}_DIR": str(root / f"wandb-{k.lower()}") for k in ("CACHE", "CONFIG", "DATA")})
    base = [sys.executable, "-m", "hfx", "train"]
    common = [*SMALL, f"cache_dir={hfx_cache}"]
    commands = [
        [*base, *common, "logger=wandb", "+trainer.extra.hub_token=${oc.env:MY_TOKEN}", f"hydra.run.dir={root / 'run'}"],
        [*base, "-m", *common, "logger=wandb,tensorboard", f"+trainer.extra.hub_token={TYPED}",
         f"hydra.sweep.dir={root / 'sweep'}"],
    ]
    jobs = [subprocess.Popen(c, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    for job in jobs:
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, err.decode()[-4000:]
        (root / f"console-{job.pid}.txt").write_bytes(out + err)  # what the user saw is searched too
    return root


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_no_file_holds_a_secret(planted: Path) -> None:
    files = _files(planted)
    leaks = [(s, str(p.relative_to(planted))) for p in files for s in SECRETS if s.encode() in p.read_bytes()]
    assert not leaks, "secrets found:\n" + "\n".join(f"{secret} in {path}" for secret, path in leaks)
    # Every kind of file the issue names was written, so the search above was not vacuous.
    names = {str(p.relative_to(planted)) for p in files}
    for pattern in ("run/config.yaml", "run/.hydra/overrides.yaml", "run/train.log", "run/wandb/*/run-*.wandb",
                    "run/wandb/*/logs/debug.log", "sweep/multirun.yaml", "sweep/0/.hydra/hydra.yaml",
                    "sweep/0/wandb/*/run-*.wandb", "sweep/1/tensorboard/events.out.tfevents.*",
                    "sweep/1/checkpoints/checkpoint-*/training_args.bin"):
        assert list(planted.glob(pattern)), f"nothing matches {pattern}: {sorted(names)}"


@pytest.mark.slow
def test_redacted_where_the_secret_was(planted: Path) -> None:
    """The keys stay, their values read ***redacted***: the user sees a token was set, and where."""
    assert OmegaConf.load(planted / "run/config.yaml").trainer.extra.hub_token == REDACTED
    assert OmegaConf.load(planted / "sweep/0/config.yaml").trainer.extra.hub_token == REDACTED
    typed = f"+trainer.extra.hub_token={REDACTED}"
    assert typed in OmegaConf.load(planted / "sweep/0/.hydra/overrides.yaml")
    assert typed in OmegaConf.load(planted / "sweep/multirun.yaml").hydra.overrides.task
    # W&B's metadata records the command line: the override is there, its value redacted.
    (wandb_file,) = planted.glob("sweep/0/wandb/offline-run-*/run-*.wandb")
    assert typed.encode() in wandb_file.read_bytes()


@pytest.mark.parametrize("key", ["token", "Token", "HUB_TOKEN", "hub_token", "api_key", "API_KEY", "apiKey",
                                 "WANDB_API_KEY", "Password", "db-password", "secret", "client_secret",
                                 "aws_secret_access_key", "credentials", "private_key"])
def test_secret_key_names_in_any_case(key: str) -> None:
    assert is_secret_key(key) and is_secret_key(f"trainer.extra.{key}")
    assert redact({"a": {key: "value-1", "b": [{key: "value-2"}]}}) == {"a": {key: REDACTED, "b": [{key: REDACTED}]}}
    assert redact_text(f"+trainer.extra.{key}=abc,def") == f"+trainer.extra.{key}={REDACTED}"
    assert redact_text(f"a=1,{key}=abc,b=2") == f"a=1,{key}={REDACTED},b=2"  # Hydra's override_dirname


def test_a_reference_to_an_environment_variable_is_kept() -> None:
    """`${oc.env:HF_TOKEN}` holds no secret: the record keeps where the token came from (a resumed run finds it)."""
    assert redact_text("+trainer.extra.hub_token=${oc.env:HF_TOKEN}") == "+trainer.extra.hub_token=${oc.env:HF_TOKEN}"
    assert redact({"hub_token": "${oc.env:HF_TOKEN}"}) == {"hub_token": "${oc.env:HF_TOKEN}"}
    # A literal default inside the reference may be the secret itself.
    assert redact_text("+x.hub_token=${oc.env:T,abc}") == f"+x.hub_token={REDACTED}"
    assert redact_text("a=1,hub_token=${oc.env:T,abc},b=2") == f"a=1,hub_token={REDACTED},b=2"


@pytest.mark.parametrize("key", ["pad_token", "EOS_TOKEN", "max_new_tokens", "tokenizer", "key", "data_key",
                                 "num_key_value_heads", "label_all_tokens", "author"])
def test_ordinary_key_names_are_kept(key: str) -> None:
    assert not is_secret_key(key)
    assert redact({key: "[PAD]"}) == {key: "[PAD]"}


def test_secret_env_values_are_redacted_anywhere(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "sk-very-secret-123")
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh")
    cfg = OmegaConf.create({"logger": {"note": "key=sk-very-secret-123"}, "x": ["hf_abcdefgh"], "api_key": "z" * 8,
                            "tokenizer": {"pad_token": "[PAD]"}})
    out = redact(OmegaConf.to_container(cfg))
    assert out["logger"]["note"] == f"key={REDACTED}" and out["x"] == [REDACTED] and out["api_key"] == REDACTED
    assert out["tokenizer"]["pad_token"] == "[PAD]"
    RunDir(tmp_path).write_config(cfg)
    text = (tmp_path / "config.yaml").read_text()
    assert "sk-very-secret" not in text and "hf_abcdefgh" not in text
