from __future__ import annotations

from hfx.rundir import RunDir


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
