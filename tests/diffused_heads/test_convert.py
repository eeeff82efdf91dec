"""The Diffused Heads converter on archives the tests make: a TorchScript UNet and audio encoder scripted
from our (name-compatible) modules, a Lightning-style checkpoint with the UNet twice and a pickled object
in its hyper_parameters, and files that must be refused."""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import zipfile

import pytest
import torch

from talkinghead import checkpoints, cli
from talkinghead.diffused_heads.audio_encoder import SDAAudioEncoder
from talkinghead.diffused_heads.configs import PRESETS
from talkinghead.diffused_heads.convert import convert, read_unet
from talkinghead.diffused_heads.official_keys import lightning_unet_state_dict
from talkinghead.diffused_heads.pipeline import DiffusedHeadsPipeline
from talkinghead.diffused_heads.unet import DiffusedHeadsUNet
from talkinghead.torch_archive import ArchiveError, read_archive

from .tiny import random_tiny_unet

TINY = PRESETS["tiny"]
# Same weights, but buffers from another source can take another oneDNN kernel path (~1e-6 apart).
ATOL = 1e-5


def save_with_pickled_compose(obj: dict, path) -> None:
    """torch.save ``obj`` whose ``hyper_parameters["motion_transforms"]`` is pickled as a torchvision
    ``Compose`` (torchvision is not installed: an ``argparse.Namespace`` is saved and its global renamed)."""
    obj["hyper_parameters"]["motion_transforms"] = argparse.Namespace(transforms=[])
    torch.save(obj, path)
    with zipfile.ZipFile(path) as src:
        items = {n: src.read(n) for n in src.namelist()}
    name = next(n for n in items if n.endswith("/data.pkl"))
    assert b"argparse\nNamespace" in items[name]
    items[name] = items[name].replace(
        b"argparse\nNamespace", b"torchvision.transforms.transforms\nCompose"
    )
    with zipfile.ZipFile(path, "w") as dst:
        for n, data in items.items():
            dst.writestr(n, data)


def tiny_unet(seed: int = 0) -> DiffusedHeadsUNet:
    return random_tiny_unet(seed)


def official_kwargs() -> dict:
    u = TINY.unet
    return {
        "image_size": u.image_size,
        "in_channels": 3,
        "model_channels": u.model_channels,
        "out_channels": 6,
        "num_res_blocks": u.num_res_blocks,
        "attention_resolutions": list(u.attention_resolutions),
        "dropout": 0.1,
        "channel_mult": list(u.channel_mult),
        "num_heads": 4,
        "num_head_channels": u.num_head_channels,
        "resblock_updown": True,
        "id_condition_type": "frame",
        "audio_condition_type": "double_pre_gn",
        "precision": 32,
        "n_motion_frames": 2,
        "grayscale_motion": False,
        "n_audio_motion_embs": 2,
    }


def inputs(b: int = 1):
    g = torch.Generator().manual_seed(1)
    s, c = TINY.unet.image_size, TINY.unet.model_channels
    return (
        torch.randn(b, 3, s, s, generator=g),
        torch.tensor([7] * b),
        torch.rand(b, 3, s, s, generator=g) * 2 - 1,
        torch.rand(b, 6, s, s, generator=g) * 2 - 1,
        torch.randn(b, 5, c, generator=g),
    )


def test_torchscript_unet_and_audio_encoder(tmp_path):
    unet = tiny_unet()
    torch.jit.script(unet).save(str(tmp_path / "crema_script.pt"))
    encoder = SDAAudioEncoder(TINY.audio_encoder).eval()
    torch.jit.script(encoder).save(str(tmp_path / "audio_encoder.pt"))
    out = convert(tmp_path, tmp_path / "model", base=TINY.unet)
    index = json.loads((out / "model_index.json").read_text())
    assert index["family"] == "diffused-heads" and index["components"] == {
        "unet": "unet",
        "audio_encoder": "audio_encoder",
    }
    meta = checkpoints.read_metadata(out / "unet")
    assert meta["source_sha256"] == checkpoints.sha256_file(tmp_path / "crema_script.pt")
    loaded = checkpoints.load_component(out / "unet")
    assert loaded.cfg == TINY.unet
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs()), unet(*inputs()), atol=ATOL, rtol=0)
    enc = checkpoints.load_component(out / "audio_encoder")
    assert enc.cfg == TINY.audio_encoder
    wave = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(
            enc.embed_audio(wave), encoder.embed_audio(wave), atol=ATOL, rtol=0
        )


def test_lightning_checkpoint(tmp_path):
    unet = tiny_unet()
    state = {
        **{f"unet.{k}": v for k, v in unet.state_dict().items()},
        **{f"diffusion.nn_backbone.{k}": v.clone() for k, v in unet.state_dict().items()},
    }
    hp = {**official_kwargs(), "lr": 5e-5}
    checkpoint = {"epoch": 3, "state_dict": state, "hyper_parameters": hp, "optimizer_states": [{}]}
    save_with_pickled_compose(checkpoint, tmp_path / "last.ckpt")
    out = convert(
        tmp_path / "last.ckpt", tmp_path / "model", base=TINY.unet
    )  # base: its 4 norm groups
    loaded = checkpoints.load_component(out / "unet")
    assert "torchvision" not in sys.modules  # the pickled Compose was never imported
    assert loaded.cfg == TINY.unet
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs()), unet(*inputs()), atol=ATOL, rtol=0)


def test_lightning_copies_must_agree():
    unet = tiny_unet()
    state = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"diffusion.nn_backbone.{k}": v + 1 for k, v in unet.state_dict().items()})
    with pytest.raises(ValueError, match="disagree"):
        lightning_unet_state_dict(state)
    with pytest.raises(ValueError, match="unexpected keys"):
        lightning_unet_state_dict({"unet.x": torch.zeros(1), "ema.x": torch.zeros(1)})


def test_strict_keys_listed(tmp_path):
    state = {f"unet.{k}": v for k, v in tiny_unet().state_dict().items()}
    state.pop("unet.out.2.bias")
    state["unet.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state, "hyper_parameters": official_kwargs()}, tmp_path / "bad.ckpt")
    with pytest.raises(
        ValueError, match=r"missing keys \(1\): out.2.bias; unexpected keys \(1\): extra.weight"
    ):
        convert(tmp_path / "bad.ckpt", tmp_path / "model", base=TINY.unet)
    assert not (tmp_path / "model").exists()


def test_refuses_what_it_cannot_read_safely(tmp_path):
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ArchiveError, match="not a PyTorch zip archive"):
        read_archive(legacy)
    torch.save(
        {"q": torch.quantize_per_tensor(torch.rand(4), 0.1, 0, torch.quint8)}, tmp_path / "q.pt"
    )
    with pytest.raises(ArchiveError, match="does not rebuild"):
        read_archive(tmp_path / "q.pt")


def test_read_unet_from_torchscript_infers_config(tmp_path):
    torch.jit.script(tiny_unet()).save(str(tmp_path / "crema_script.pt"))
    state, cfg = read_unet(tmp_path / "crema_script.pt", base=TINY.unet)
    assert cfg == TINY.unet and len(state) == len(tiny_unet().state_dict())


def test_cli_converts_the_scripted_archives(tmp_path, capsys):
    """`talkinghead convert diffused-heads SRC OUT`: no --base needed, the tiny preset is found from
    the tensors; a Lightning file converts the same way; a bad source is one sentence, exit 2."""
    unet = tiny_unet()
    torch.jit.script(unet).save(str(tmp_path / "crema_script.pt"))
    torch.jit.script(SDAAudioEncoder(TINY.audio_encoder).eval()).save(
        str(tmp_path / "audio_encoder.pt")
    )
    assert cli.main(["convert", "diffused-heads", str(tmp_path), str(tmp_path / "model")]) == 0
    pipe = DiffusedHeadsPipeline.from_pretrained(tmp_path / "model")
    assert pipe.unet.cfg == TINY.unet and pipe.audio_encoder.cfg == TINY.audio_encoder
    with torch.no_grad():
        torch.testing.assert_close(pipe.unet(*inputs()), unet(*inputs()), atol=ATOL, rtol=0)

    state = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"diffusion.nn_backbone.{k}": v.clone() for k, v in unet.state_dict().items()})
    checkpoint = {"state_dict": state, "hyper_parameters": official_kwargs()}
    save_with_pickled_compose(checkpoint, tmp_path / "last.ckpt")
    out = tmp_path / "from_ckpt"
    assert cli.main(["convert", "diffused-heads", str(tmp_path / "last.ckpt"), str(out)]) == 0
    assert checkpoints.load_component(out / "unet").cfg == TINY.unet

    capsys.readouterr()
    missing = tmp_path / "nothing-here"
    assert cli.main(["convert", "diffused-heads", str(missing), str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists()
