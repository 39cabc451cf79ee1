"""Stage internals without a Trainer: which parameters each optimizer and loss can move, the cross-modal loader, and
L_ss through the whole student pathway."""

import functools

import pytest
import torch
from pytorch_lightning.utilities import CombinedLoader

from lightning_mp3d.datamodules.cross_modal import CrossModalDataModule
from lightning_mp3d.datamodules.dsyn import make_dsyn_batch
from lightning_mp3d.grouping import GroupedPeople
from lightning_mp3d.synth.batches import synthetic_batch
from lightning_mp3d.systems import DistillationWarmup, Phase1Alignment, Phase2SelfSupervised
from lightning_mp3d.systems import pathways as pathways_module
from lightning_mp3d.systems.pathways import ImageTargets
from lightning_mp3d.transforms import flip_transform, identity_transform
from tests.helpers import make_frozen_checkpoints


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    return make_frozen_checkpoints(tmp_path_factory.mktemp("frozen"))


@pytest.fixture(scope="module")
def batches():
    gen = torch.Generator().manual_seed(0)
    return make_dsyn_batch(2, gen), synthetic_batch(2, "target", gen)


def _system(cls, frozen, **kw):
    teacher, aae = frozen
    system = cls(teacher_checkpoint=str(teacher), aae_checkpoint=str(aae), g_hidden=8, h_width=8, h_fc_channels=8, **kw)
    system.build()
    return system


def _ids(params):
    return {id(p) for p in params}


def _all_params(opt):
    return {id(p) for group in opt["optimizer"].param_groups for p in group["params"]}


def test_optimizers_hold_exactly_their_modules(frozen):
    p1 = _system(Phase1Alignment, frozen, optimizer=functools.partial(torch.optim.Adam, lr=1e-3), g_lr_scale=0.1)
    g, h = _ids(p1.g.parameters()), _ids(p1.h.parameters())
    opts = p1.configure_optimizers()
    recon, distl, adapt = [_all_params(o) for o in opts]
    assert recon == g | h and distl == h and adapt == g
    rates = {frozenset(_ids(grp["params"])): grp["lr"] for o in opts for grp in o["optimizer"].param_groups}
    assert rates == {frozenset(h): 1e-3, frozenset(g): pytest.approx(1e-4)}  # G at g_lr_scale x lr in both
    p2 = _system(Phase2SelfSupervised, frozen)
    h2 = _ids(p2.h.parameters())
    assert all(_ids(o["optimizer"].param_groups[0]["params"]) == h2 for o in p2.configure_optimizers())
    assert all(not p.requires_grad for p in p2.g.parameters()) and not p2.g.training
    d = _system(DistillationWarmup, frozen)
    assert d.g is None
    assert _ids(d.configure_optimizers()[0]["optimizer"].param_groups[0]["params"]) == _ids(d.h.parameters())
    frozen_ids = _ids(p1.teacher.parameters()) | _ids(p1.scene_decoder.parameters())
    assert not frozen_ids & (recon | distl | adapt)


def _grads(system, loss):
    system.zero_grad(set_to_none=True)
    loss.backward()
    return {
        name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(system, name).parameters())
        for name in ("g", "h", "teacher", "scene_decoder")
    }


def test_each_loss_reaches_only_its_modules(frozen, batches):
    syn, images = batches
    p1 = _system(Phase1Alignment, frozen)
    torch.nn.init.normal_(p1.h.out.weight, std=0.01)  # H's output layer starts at zero: give the graph a gradient
    assert _grads(p1, p1.adapt_loss(syn)) == {"g": True, "h": False, "teacher": False, "scene_decoder": False}
    recon = p1.recon_losses(syn)
    assert _grads(p1, recon["recon"]) == {"g": True, "h": True, "teacher": False, "scene_decoder": False}
    distl = p1.distill_losses(images)
    assert _grads(p1, distl["distl"] + distl["root_image"])["g"] is False
    p2 = _system(Phase2SelfSupervised, frozen)
    p2.setup("validate")
    torch.nn.init.normal_(p2.h.out.weight, std=0.01)
    grads = _grads(p2, p2.recon_losses(syn)["recon"])
    assert grads == {"g": False, "h": True, "teacher": False, "scene_decoder": False}


def test_ss_loss_of_the_student_is_zero_for_the_identity_transform(frozen, batches, monkeypatch):
    _, images = batches
    p2 = _system(Phase2SelfSupervised, frozen)
    p2.setup("validate")
    # the random tiny teacher finds nobody: let it "find" the GT people so that L_ss compares real roots
    people = GroupedPeople(
        images["joints_2d"], torch.ones(images["mask"].shape + (15,)), images["mask"], images["roots_px"]
    )
    targets = ImageTargets(p2.teacher.encode(images["image"]), people, images["root_cells"], images["mask"])
    monkeypatch.setattr(p2, "teacher_targets", lambda _: targets)
    monkeypatch.setattr(pathways_module, "random_spatial_transform", lambda b, *a, **k: identity_transform(b))
    assert p2.ss_losses(images)["ss"] < 0.05  # pixels; only float32 resampling noise in I' = I
    flip = lambda b, *a, **k: flip_transform(b)  # noqa: E731
    monkeypatch.setattr(pathways_module, "random_spatial_transform", flip)
    assert p2.ss_losses(images)["ss"] > 0.05  # an untrained H is not flip-equivariant: the loss sees it


def test_cross_modal_loader_is_a_combined_loader_of_paired_syn_and_image_batches():
    dm = CrossModalDataModule(syn={"batch_size": 2}, images={"batch_size": 2, "val_size": 2}, batches_per_epoch=3)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, CombinedLoader) and loader._mode == "min_size"
    first, second = [[batch for batch, _, _ in loader] for _ in range(2)]
    assert len(first) == len(second) == 3
    for batch in first:
        assert set(batch) == {"syn", "image"}
        assert batch["syn"]["maps"].shape == (2, 43, 28, 28) and batch["image"]["image"].shape == (2, 3, 224, 224)
    assert not torch.equal(first[0]["image"]["image"], second[0]["image"]["image"])  # a new epoch, new images
    assert not torch.equal(first[0]["syn"]["maps"], second[0]["syn"]["maps"])


def test_cross_modal_epoch_length_is_said_once():
    dm = CrossModalDataModule(syn={"train_batches": 4}, batches_per_epoch=4)
    assert dm.syn_kwargs["train_batches"] == dm.images_kwargs["batches_per_epoch"] == 4
    with pytest.raises(ValueError, match="set the epoch length once"):
        CrossModalDataModule(images={"batches_per_epoch": 3}, batches_per_epoch=4)


def test_detach_depth_cuts_only_the_depth_channel():
    from lightning_mp3d.systems.pathways import _detach_depth

    s = torch.randn(2, 40, 14, 14, requires_grad=True)
    out = _detach_depth(s)
    torch.testing.assert_close(out, s)
    out.sum().backward()
    assert (s.grad[:, :39] == 1).all() and (s.grad[:, 39] == 0).all()


def test_unreadable_or_mismatched_upstream_checkpoints_are_errors_naming_the_file(frozen, tmp_path):
    from lightning_mp3d.models.teacher import load_teacher

    teacher, _ = frozen
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(teacher.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated.ckpt.*cannot be read"):
        load_teacher(truncated)
    p1 = _system(Phase1Alignment, frozen)
    with pytest.raises(ValueError, match="truncated.ckpt.*cannot be read"):
        p1.load_previous_stage(truncated)
    teacher_ckpt, aae_ckpt = frozen
    wide = DistillationWarmup(teacher_checkpoint=str(teacher_ckpt), aae_checkpoint=str(aae_ckpt), h_width=16)
    wide.build()  # phase 1 here has h_width 8
    info = {"stage": "distill", "v_channels": int(p1.teacher.v_channels)}
    ckpt = {"state_dict": wide.state_dict(), "lightning_mp3d_stage": info}
    torch.save(ckpt, tmp_path / "wide.ckpt")
    with pytest.raises(ValueError, match="wide.ckpt.*widths differ"):
        p1.load_previous_stage(tmp_path / "wide.ckpt")
    nan_teacher = torch.load(teacher, weights_only=True)
    key = next(k for k in nan_teacher["state_dict"] if k.startswith("teacher."))
    nan_teacher["state_dict"][key] = torch.full_like(nan_teacher["state_dict"][key], float("nan"))
    torch.save(nan_teacher, tmp_path / "nan_teacher.ckpt")
    with pytest.raises(ValueError, match="nan_teacher.ckpt"):
        load_teacher(tmp_path / "nan_teacher.ckpt")
