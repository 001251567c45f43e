"""Checkpoint files: round trip, metadata, clear errors, atomic writes, the file set committed as one."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wrcup._io import file_sha256
from wrcup.models.checkpoint import load_checkpoint, load_train_state, read_metadata, save_checkpoint

META = {"backbone": "dinov2-s14-imgfocus", "dim": 4, "patch_size": 14, "operator": "transposed", "steps": 3}


def _save(folder, step: int, **kw):
    """A checkpoint whose weights, metadata and training state all carry ``step``."""
    return save_checkpoint(folder / "ck", {"w": torch.full((3, 4), float(step))}, {**META, "steps": step},
                           train_state={"step": step, "m": torch.full((2,), float(step))}, **kw)


def _loaded_steps(path) -> tuple[int, int, int]:
    """(step in the weights, in their metadata, in the training state they name)."""
    state, meta = load_checkpoint(path)
    return int(state["w"][0, 0]), meta["steps"], int(load_train_state(path)["step"])


def test_round_trip_with_metadata_and_train_state(tmp_path):
    sd = {"w": torch.randn(3, 4), "n": torch.tensor(7)}
    path = save_checkpoint(tmp_path / "run" / "ck", sd, META, train_state={"step": 3, "m": torch.ones(2)})
    assert path.suffix == ".safetensors"
    state, meta = load_checkpoint(path)
    assert torch.equal(state["w"], sd["w"]) and int(state["n"]) == 7
    assert meta == META == json.loads(path.with_suffix(".json").read_text())
    assert load_train_state(path)["step"] == 3
    assert not list(tmp_path.glob("run/.*tmp"))  # no temporary files left behind


def test_saves_replace_the_previous_set_and_remove_its_training_state(tmp_path):
    for step in (1, 2, 3):
        path = _save(tmp_path, step)
    assert _loaded_steps(path) == (3, 3, 3)
    states = sorted(p.name for p in tmp_path.glob("ck*.state.pt"))
    assert len(states) == 1, states  # superseded training states are cleaned up
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ck.safetensors", "ck.json", *states])
    # a weights-only save (the final checkpoint) leaves no training state behind either
    save_checkpoint(tmp_path / "ck", {"w": torch.zeros(3, 4)}, META)
    assert not list(tmp_path.glob("ck*.state.pt"))
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        load_train_state(path)


class _Crash(BaseException):
    """Stands in for the process dying: not an Exception, so nothing on the way may swallow it."""


# os.replace calls of one save: 0 = training state, 1 = weights (the commit), 2 = .json copy
@pytest.mark.parametrize("crash_at", ["replace-0", "replace-1", "replace-2", "cleanup"])
def test_a_crash_at_any_point_of_a_save_leaves_one_complete_checkpoint(tmp_path, monkeypatch, crash_at):
    path = _save(tmp_path, 3)
    real_replace, real_remove, calls = os.replace, os.remove, []

    def replace(src, dst):
        calls.append(dst)
        if crash_at == f"replace-{len(calls) - 1}":
            raise _Crash
        return real_replace(src, dst)

    def remove(target):
        if crash_at == "cleanup":
            raise _Crash
        return real_remove(target)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "remove", remove)
    with pytest.raises(_Crash):
        _save(tmp_path, 4)
    monkeypatch.undo()
    committed = crash_at in ("replace-2", "cleanup")
    expected = 4 if committed else 3
    assert _loaded_steps(path) == (expected, expected, expected)
    # the .json copy is written after the commit: after a crash in between it still describes step 3
    assert json.loads(path.with_suffix(".json").read_text())["steps"] == (4 if crash_at == "cleanup" else 3)
    # the next save completes the set and removes every training state it does not name
    _save(tmp_path, 5)
    assert _loaded_steps(path) == (5, 5, 5)
    assert json.loads(path.with_suffix(".json").read_text())["steps"] == 5
    assert len(list(tmp_path.glob("ck*.state.pt"))) == 1


def _legacy_checkpoint(folder, step: int):
    """The layout written before the training state was named by the weights: NAME.state.pt beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ck.safetensors"
    save_file({"w": torch.full((3, 4), float(step))}, str(path), metadata={"wrcup": json.dumps({**META, "steps": step})})
    torch.save({"step": step}, path.with_suffix(".state.pt"))
    return path


def test_checkpoints_of_earlier_versions_still_load_and_resume(tmp_path):
    path = _legacy_checkpoint(tmp_path, 2)
    assert _loaded_steps(path) == (2, 2, 2)
    _save(tmp_path, 3)  # the new layout replaces the old one, its stale state file included
    assert _loaded_steps(path) == (3, 3, 3)
    assert not path.with_suffix(".state.pt").exists()


def test_truncated_or_altered_files_give_one_clear_error_naming_the_file(tmp_path):
    path = _save(tmp_path, 3)
    (state_file,) = tmp_path.glob("ck*.state.pt")
    state_file.write_bytes(state_file.read_bytes()[:-10])
    with pytest.raises(ValueError, match=f"{state_file.name}.*(size|sha256)") as info:
        load_train_state(path)
    assert "\n" not in str(info.value)
    state_file.unlink()
    with pytest.raises(FileNotFoundError, match=state_file.name):
        load_train_state(path)

    data = path.read_bytes()
    for cut in (0, 20, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        for reader in (read_metadata, load_checkpoint):
            with pytest.raises(ValueError, match="truncated or corrupt") as info:
                reader(path)
            assert str(path) in str(info.value) and "\n" not in str(info.value)

    legacy = _legacy_checkpoint(tmp_path / "old", 2)
    old_state = legacy.with_suffix(".state.pt")
    old_state.write_bytes(old_state.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        load_train_state(legacy)
    assert str(old_state) in str(info.value)


def test_missing_metadata_key_is_refused(tmp_path):
    with pytest.raises(ValueError, match="operator"):
        save_checkpoint(tmp_path / "x", {"w": torch.zeros(1)}, {"backbone": "b", "dim": 1, "patch_size": 14})


def test_foreign_safetensors_file_gets_a_clear_error(tmp_path):
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="no wrcup metadata"):
        read_metadata(tmp_path / "plain.safetensors")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_metadata(tmp_path / "absent.safetensors")
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        load_train_state(tmp_path / "plain.safetensors")


# Checkpoint sets written by the code before checkpoint.py moved from wrcup.train to wrcup.models (commit f5fcac5):
# a small conv + BatchNorm network after 3 fused-AdamW steps with a LambdaLR schedule, saved as the trainer saves
# (run/last.* with its named training state, a weights-only snapshot run/step-000003.*) and in the older layout
# (old/last.state.pt beside the weights). Running jobs and shipped run folders hold exactly these files.
FORMAT_FIXTURE = Path(__file__).parent / "data" / "checkpoint_format"


def _fixture_network() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))


@pytest.mark.parametrize("layout", ["run", "old"])
def test_checkpoint_sets_written_by_the_earlier_code_load_and_resume(layout):
    from wrcup.train.config import TrainConfig
    from wrcup.train.trainer import lr_factor

    path = FORMAT_FIXTURE / layout / "last.safetensors"
    state, meta = load_checkpoint(path)
    assert meta == json.loads(path.with_suffix(".json").read_text())
    assert (meta["steps"], meta["operator"], meta["data"]["num_images"]) == (3, "wrc-aligned", 760)
    net = _fixture_network()
    net.load_state_dict(state)  # strict: every key, shape and dtype as written
    assert int(state["1.num_batches_tracked"]) == 3 and state["1.num_batches_tracked"].dtype == torch.int64
    cfg = TrainConfig.from_dict(meta["config"])  # the recorded settings of a resumed run
    assert (cfg.high_res, cfg.scale_mix, cfg.keep_every, cfg.fast) == ([448, 896], [3.0, 1.0], 1000, True)
    assert cfg.resume_differences(TrainConfig.from_dict(meta["config"])) == []
    train_state = load_train_state(path)
    assert (train_state["step"], train_state["elapsed"]) == (3, 12.5)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    optimizer.load_state_dict(train_state["optimizer"])
    scheduler.load_state_dict(train_state["scheduler"])
    assert scheduler.last_epoch == 3 and float(optimizer.state_dict()["state"][0]["step"]) == 3


def test_the_written_format_is_byte_for_byte_the_earlier_one(tmp_path, monkeypatch):
    import uuid

    # a weights-only save (snapshots, final and shipped checkpoints) is deterministic: identical bytes
    snapshot = FORMAT_FIXTURE / "run" / "step-000003.safetensors"
    state, meta = load_checkpoint(snapshot)
    again = save_checkpoint(tmp_path / "step-000003", state, meta)
    assert again.read_bytes() == snapshot.read_bytes()
    assert again.with_suffix(".json").read_bytes() == snapshot.with_suffix(".json").read_bytes()
    # with a training state, torch.save's archive differs from save to save (a serialization id), and the order of
    # the two header entries may too; the weights file then holds the same tensor bytes and the same header but for
    # the state file's name, size and sha256
    earlier = FORMAT_FIXTURE / "run" / "last.safetensors"
    earlier_state = next(earlier.parent.glob("last.*.state.pt"))
    fixed = uuid.UUID(earlier_state.name.split(".")[1])
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    path = save_checkpoint(tmp_path / "last", state, meta, load_train_state(earlier))
    assert {p.name for p in tmp_path.glob("last*")} == {"last.json", earlier_state.name, "last.safetensors"}
    new_state = path.with_name(earlier_state.name)
    (header, data), (earlier_header, earlier_data) = _split(path), _split(earlier)
    assert data == earlier_data
    entry = {"file": new_state.name, "size": new_state.stat().st_size, "sha256": file_sha256(new_state)}
    assert json.loads(header["__metadata__"].pop("wrcup_train_state")) == entry
    assert json.loads(earlier_header["__metadata__"].pop("wrcup_train_state"))["file"] == earlier_state.name
    assert header == earlier_header
    assert load_train_state(path)["optimizer"]["state"][0]["exp_avg"].equal(
        load_train_state(earlier)["optimizer"]["state"][0]["exp_avg"])


def _split(path) -> tuple[dict, bytes]:
    """A safetensors file → (its JSON header, the tensor bytes after it)."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + size]), raw[8 + size:]
