"""`hfx train --help`: the config groups a user picks, their options (each YAML's first comment line) and the
experiments. Read from conf/ and experiments/ without importing anything heavy."""

from __future__ import annotations

from pathlib import Path

GROUP_ORDER = ("task", "model", "tokenizer", "dataset", "peft", "trainer", "logger")


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.lstrip("# ").startswith("@"):  # `# @package` is Hydra's header
            return line.lstrip("# ").strip()
    return ""


def print_train_help() -> None:
    from hfx.paths import conf_dir, experiments_dir

    groups = sorted((p.name for p in conf_dir().iterdir() if p.is_dir()),
                    key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g))
    lines = ["usage: hfx train [group=option ...] [key=value ...] [-m for a sweep]", "",
             "config groups (pick one option each, several loggers as a list: logger=[wandb,tensorboard]; the default in brackets):"]
    defaults = _defaults(conf_dir() / "train.yaml")
    for group in groups:
        lines.append(f"  {group} [{defaults.get(group, '-')}]")
        for option in sorted((conf_dir() / group).glob("*.yaml")):
            lines.append(f"    {option.stem:<26} {_first_comment(option)[:90]}")
    lines += ["", "experiments (experiment=<name>):"]
    for path in sorted(experiments_dir().glob("*.yaml")):
        lines.append(f"    {path.stem}")
    lines += ["", "Any field of a group is set with group.key=value (trainer.learning_rate=3e-4, peft.r=4).",
              "`hfx train -m hparams_search=<name>` runs an Optuna search; `hfx sweeps` ranks a sweep's jobs.",
              "`hfx train --cfg job` prints the composed config; `hfx train --hydra-help` shows Hydra's flags."]
    print("\n".join(lines))


def _defaults(train_yaml: Path) -> dict[str, str]:
    out = {}
    for line in train_yaml.read_text().splitlines():
        line = line.strip()
        if line.startswith("- ") and ":" in line:
            group, _, option = line[2:].partition(":")
            out[group.strip()] = option.strip()
    return out
