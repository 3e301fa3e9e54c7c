from __future__ import annotations

from omegaconf import OmegaConf

from hfx.rundir import REDACTED, RunDir, redact


def test_secret_env_values_are_redacted_anywhere(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "sk-very-secret-123")
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh")
    cfg = OmegaConf.create({"logger": {"note": "key=sk-very-secret-123"}, "x": ["hf_abcdefgh"], "api_key": "z" * 8,
                            "tokenizer": {"pad_token": "[PAD]"}})
    out = redact(OmegaConf.to_container(cfg))
    assert out["logger"]["note"] == REDACTED and out["x"] == [REDACTED] and out["api_key"] == REDACTED
    assert out["tokenizer"]["pad_token"] == "[PAD]"
    RunDir(tmp_path).write_config(cfg)
    text = (tmp_path / "config.yaml").read_text()
    assert "sk-very-secret" not in text and "hf_abcdefgh" not in text


def test_failed_save_leaves_earlier_model(tmp_path) -> None:
    run = RunDir(tmp_path)
    run.model_dir.mkdir()
    (run.model_dir / "weights").write_text("old")

    class Broken:
        def save_pretrained(self, path: str) -> None:
            raise OSError("disk full")

    try:
        run.save_model(Broken(), Broken())
    except OSError:
        pass
    assert (run.model_dir / "weights").read_text() == "old"
