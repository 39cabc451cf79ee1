"""``--preset paper`` is the paper (issue 13, item 4): configs/stage_*.yaml hold the paper's values, our additions
live in named variants under configs/variants/ (which the tiny preset may use)."""

from pathlib import Path

import pytest
import yaml

from lightning_mp3d.cli import cli_main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VARIANTS = sorted((CONFIGS / "variants").glob("*.yaml"))
VARIANT_STAGE = {"bounded_aae": "aae", "ss_detach_depth": "phase2"}


def model_args(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["model"]["init_args"]


def within(part, whole) -> bool:
    """``part`` (an overlay's value) holds in ``whole``: nested dicts key by key (``optimizer: {init_args: ...}``)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(within(v, whole.get(k)) for k, v in part.items())
    return part == whole


def test_paper_configs_hold_the_papers_values():
    aae = yaml.safe_load((CONFIGS / "stage_aae.yaml").read_text())
    a = aae["model"]["init_args"]
    assert (
        a["optimizer"]["init_args"]["lr"],
        a["bounded_decoder"],
        a["joint_limit"]["weight"],
        a["embedding_dim"],
    ) == (
        1e-4,
        False,
        0.0,
        32,
    )
    assert aae["data"]["init_args"]["batch_size"] == 32 and aae["data"]["init_args"]["path"] is None
    for stage in ("distill", "phase1", "phase2"):
        m = model_args(CONFIGS / f"stage_{stage}.yaml")
        assert not m.get("ss_detach_depth", False) and not m.get("recon_terms") and not m.get("h_readout"), stage
        assert not m["use_weak_2d"] and not m["use_full_3d"], stage  # the unsupervised setting
        assert m["h_fc_channels"] == 128, stage
    for stage in ("phase1", "phase2", "refine"):  # H reads E(I) in the paper; G(F(E(I))) is our tiny preset's
        assert model_args(CONFIGS / f"stage_{stage}.yaml")["h_input"] == "v", stage
        assert model_args(CONFIGS / "tiny" / f"stage_{stage}.yaml")["h_input"] == "maps", stage
    distill, phase1 = (yaml.safe_load((CONFIGS / f"stage_{s}.yaml").read_text()) for s in ("distill", "phase1"))
    d = distill["data"]["init_args"]
    assert d["batch_size"] == 8 and distill["trainer"]["max_epochs"] * d["batches_per_epoch"] == 15_000
    p = phase1["data"]["init_args"]
    assert p["syn"]["batch_size"] == p["images"]["batch_size"] == 8
    assert phase1["trainer"]["max_epochs"] * p["batches_per_epoch"] * 2 == 450_000  # two paper iterations a step
    m = phase1["model"]["init_args"]
    schedule = m["lr_scheduler"]["init_args"]
    assert m["optimizer"] == {"class_path": "torch.optim.Adam", "init_args": {"lr": 1e-4}}
    assert (schedule["milestones"][0] + 15_000, schedule["gamma"]) == (100_000, 0.1)  # 1e-4 to 100k, then 1e-5
    assert model_args(CONFIGS / "stage_phase2.yaml")["optimizer"]["init_args"]["lr"] == 1e-5
    t = model_args(CONFIGS / "stage_teacher.yaml")  # Cao et al.'s teacher: plain L2, no BatchNorm
    assert t.get("side_weight", 1.0) == 1.0 and not t.get("norm", False)
    tiny = model_args(CONFIGS / "tiny" / "stage_teacher.yaml")
    assert tiny["side_weight"] > 1.0 and tiny["norm"]  # our additions, on in the tiny (and so cpu) preset


@pytest.mark.parametrize("name", sorted(VARIANT_STAGE))
def test_each_variant_changes_paper_values_and_instantiates(name, tmp_path, monkeypatch):
    variant, stage = CONFIGS / "variants" / f"{name}.yaml", VARIANT_STAGE[name]  # its stage, also in its header
    assert f'stage "{stage}"' in variant.read_text().splitlines()[0]
    paper, change = CONFIGS / f"stage_{stage}.yaml", model_args(variant)
    assert all(not within(v, model_args(paper)[k]) for k, v in change.items())  # an addition, not the paper's value
    tiny = model_args(CONFIGS / "tiny" / f"stage_{stage}.yaml")
    assert all(within(v, tiny.get(k)) for k, v in change.items())  # the CPU preset uses it
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["--config", str(paper), "--config", str(variant), "--trainer.logger=false"], run=False)
    assert all(within(v, cli.model.hparams[k]) for k, v in change.items())


def test_every_variant_is_listed():
    assert {p.stem for p in VARIANTS} == set(VARIANT_STAGE)
