"""Stage 1 ``aae``: adversarial auto-encoder pose embedding {Φ, Ψ, Disc} (paper 3.1.1, suppl. 1).

Run with ``lightning fit --config configs/stage_aae.yaml``. Later stages get the frozen Ψ with
``lightning_mp3d.models.aae.load_pose_decoder("runs/aae/checkpoints/last.ckpt")``.

Manual optimization, one Adam per module, each step on every batch:

1. Φ and Ψ: one forward/backward of ``L_cyc + adv_weight * L_adv`` with Disc frozen (its parameters are toggled
   off, as ``toggle_optimizer`` does). L_adv = -log Disc(Ψ(phi)) depends on Ψ only, so Φ's gradient is exactly
   that of L_cyc and Ψ's that of L_cyc + L_adv; Φ's Adam and Ψ's Adam then step on their own parameters.
   With ``joint_limit.weight > 0`` Ψ's loss also has ``weight * L_limit`` (``losses.aae.joint_limit_loss``, an
   addition beyond the paper: a smooth hinge on the joint angles of Ψ(phi) outside the sampling ranges shrunk by
   ``joint_limit.margin_deg``); it depends on Ψ only. ``weight: 0`` is the paper's loss.
2. Disc (``toggle_optimizer``): BCE of real local poses T_L(p_c) against Ψ(phi), phi ~ U[-1, 1]^Z.

``trainer.global_step`` counts optimizer steps: it grows by 3 per batch, so ``max_steps = 3 x batches``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import OptimizerCallable
from torchmetrics import MeanMetric
from typing_extensions import override

from lightning_mp3d.callbacks.step_logs import logs_this_step
from lightning_mp3d.checkpoints import add_stage_record, renamed_state_dict
from lightning_mp3d.datamodules.streams import batch_seed
from lightning_mp3d.geometry.pose import forward_kinematics, to_local
from lightning_mp3d.losses.aae import cycle_loss, discriminator_loss, generator_loss, joint_limit_loss
from lightning_mp3d.models.aae import PoseDecoder, PoseDiscriminator, PoseEncoder
from lightning_mp3d.options import init_options, option_kwargs
from lightning_mp3d.systems.media import log_figure
from lightning_mp3d.systems.optim import store_callables
from lightning_mp3d.visualize import pose_grid_figure

SUB_MODELS = ("encoder", "pose_decoder", "discriminator")  # each one typed group of the sub-model's init arguments
EncoderOptions = init_options(PoseEncoder, "EncoderOptions", __name__, ("embedding_dim",))
DecoderOptions = init_options(PoseDecoder, "DecoderOptions", __name__, ("embedding_dim", "range_scale"))
DiscriminatorOptions = init_options(PoseDiscriminator, "DiscriminatorOptions", __name__)
DEFAULT_ENCODER, DEFAULT_DECODER = EncoderOptions(), DecoderOptions()  # frozen: safe to share as defaults
DEFAULT_DISCRIMINATOR = DiscriminatorOptions()


@dataclasses.dataclass(frozen=True)
class JointLimitPrior:
    """The joint-limit prior L_limit on Ψ(phi) (``losses.aae.joint_limit_loss``; an addition beyond the paper).

    Attributes:
        weight: its weight in Ψ's loss (0: the paper's loss, no such term).
        margin_deg: degrees by which the ranges are shrunk inside L_limit, so that decoded poses land strictly inside
            the ranges that ``val/prior_plausible`` checks exactly.
        delta_deg: degrees, width of the quadratic part of the hinge.
    """

    weight: float = 0.0
    margin_deg: float = 2.0
    delta_deg: float = 5.0


NO_JOINT_LIMIT = JointLimitPrior()  # frozen: safe to share as a default


class AAEPretraining(LightningModule):
    """Trains the pose embedding phi: encoder Φ (``encoder``), decoder Ψ (``pose_decoder``) and discriminator Disc.

    Args:
        embedding_dim: Z (32 in the paper), Φ's output and Ψ's input.
        encoder: Φ's init arguments but ``embedding_dim`` (``models.aae.PoseEncoder``: hidden ``width``, ``depth``).
        pose_decoder: Ψ's init arguments but ``embedding_dim`` and ``range_scale`` (``models.aae.PoseDecoder``: trunk
            ``width``, ``depth``, ``range_margin_deg``).
        bounded_decoder: Ψ's joint angles bounded to the sampling ranges of ``range_scale`` by construction
            (``PoseDecoder(range_scale=...)``, an addition beyond the paper; False: the paper's free unit vectors).
        discriminator: Disc's init arguments (``models.aae.PoseDiscriminator``: hidden ``width``, ``depth``,
            ``spectral_norm``, the last not in the paper).
        optimizer: builds each of the three optimizers (Φ, Ψ, Disc), e.g. ``class_path: torch.optim.Adam,
            init_args: {lr: 1.0e-4}`` (the paper's).
        adv_weight: weight of L_adv in Ψ's loss.
        disc_optimizer: builds Disc's optimizer instead (None: ``optimizer``, as in the paper).
        joint_limit: the joint-limit prior L_limit in Ψ's loss (``JointLimitPrior``; weight 0: the paper's loss).
        pose_unit_mm: millimetres per unit of the pose term of L_cyc (see ``losses.aae``).
        range_scale: joint-angle ranges that ``val/prior_plausible`` checks against (as the data's sampler).
        num_figure_poses: poses in the logged grid of decoded random phi (0: no figure).
        val_seed: seed of the phi ~ U samples used by validation (the same every epoch).
        prior_seed: seed of the training phi ~ U samples; step ``k`` on rank ``r`` draws from its own generator seeded
            by (prior_seed, r, k), so ranks differ and a resumed run draws what an uninterrupted one would have.
    """

    def __init__(
        self,
        embedding_dim: int = 32,
        encoder: EncoderOptions = DEFAULT_ENCODER,
        pose_decoder: DecoderOptions = DEFAULT_DECODER,
        bounded_decoder: bool = False,
        discriminator: DiscriminatorOptions = DEFAULT_DISCRIMINATOR,
        optimizer: OptimizerCallable = torch.optim.Adam,
        adv_weight: float = 0.1,
        disc_optimizer: OptimizerCallable | None = None,
        joint_limit: JointLimitPrior = NO_JOINT_LIMIT,
        pose_unit_mm: float = 100.0,
        range_scale: float = 1.0,
        num_figure_poses: int = 16,
        val_seed: int = 12345,
        prior_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.optimizer, self.disc_optimizer = optimizer, disc_optimizer or optimizer  # callables (CLI hparams: config)
        store_callables(self.hparams, "optimizer", "disc_optimizer")  # weights-only checkpoints can hold them
        # the typed groups as plain dicts (as under LightningCLI), which weights-only checkpoints can hold
        for name in (*SUB_MODELS, "joint_limit"):
            self.hparams[name] = option_kwargs(self.hparams[name])
        self.joint_limit = JointLimitPrior(**self.hparams.joint_limit)
        self.automatic_optimization = False
        self.encoder = PoseEncoder(embedding_dim, **self.hparams.encoder)
        self.pose_decoder = PoseDecoder(
            embedding_dim, range_scale=range_scale if bounded_decoder else None, **self.hparams.pose_decoder
        )
        self.discriminator = PoseDiscriminator(**self.hparams.discriminator)
        self.val_mpjpe = MeanMetric()
        self.val_cycle_phi = MeanMetric()
        self.val_plausible = MeanMetric()
        self.val_violation = MeanMetric()

    @override
    def configure_optimizers(self):
        return [
            self.optimizer(self.encoder.parameters()),
            self.optimizer(self.pose_decoder.parameters()),
            self.disc_optimizer(self.discriminator.parameters()),
        ]

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw phi ~ U[-1, 1]^Z: (n, Z) on the module's device."""
        phi = torch.rand(
            n, self.hparams.embedding_dim, generator=generator, device=generator.device if generator else None
        )
        return (2.0 * phi - 1.0).to(self.device)

    def decode(self, phi: torch.Tensor) -> torch.Tensor:
        """FK(Ψ(phi)): (..., Z) -> canonical poses (..., 15, 3) millimetres."""
        return forward_kinematics(self.pose_decoder(phi))

    def limit_loss(self, p_l: torch.Tensor) -> torch.Tensor:
        """L_limit of decoded local poses p_l (B, 15, 3) (a zero tensor, not computed, when its weight is 0)."""
        prior = self.joint_limit
        if prior.weight == 0:
            return p_l.new_zeros(())
        margin, delta = math.radians(prior.margin_deg), math.radians(prior.delta_deg)
        return joint_limit_loss(p_l, self.hparams.range_scale, margin, delta)

    @override
    def training_step(self, p_c: torch.Tensor, batch_idx: int) -> None:
        opt_enc, opt_dec, opt_disc = self.optimizers()
        hp = self.hparams
        p_l = to_local(p_c)
        step_generator = torch.Generator().manual_seed(batch_seed(hp.prior_seed, self.global_rank, self.global_step))
        phi_prior = self.sample_prior(p_c.shape[0], step_generator)

        # Φ and Ψ: L_cyc (+ L_adv for Ψ), Disc frozen.
        self.discriminator.requires_grad_(False)
        p_l_prior = self.pose_decoder(phi_prior)
        cyc = cycle_loss(
            p_c,
            forward_kinematics(self.pose_decoder(self.encoder(p_l))),
            phi_prior,
            self.encoder(p_l_prior),
            hp.pose_unit_mm,
        )
        adv = generator_loss(self.discriminator(p_l_prior))
        limit = self.limit_loss(p_l_prior)
        self.manual_backward(cyc.total + hp.adv_weight * adv + self.joint_limit.weight * limit)
        self.discriminator.requires_grad_(True)
        for opt in (opt_enc, opt_dec):
            opt.step()
            opt.zero_grad(set_to_none=True)

        # Disc: real local poses against poses decoded from the prior.
        self.toggle_optimizer(opt_disc)
        disc = discriminator_loss(self.discriminator(p_l), self.discriminator(p_l_prior.detach()))
        self.manual_backward(disc)
        opt_disc.step()
        opt_disc.zero_grad(set_to_none=True)
        self.untoggle_optimizer(opt_disc)

        if not logs_this_step(self):  # Lightning would not write them (callbacks/step_logs.py)
            return
        self.log_dict(
            {
                "train/loss_cyc": cyc.total,
                "train/cyc_pose_mm": cyc.pose_mm,
                "train/cyc_phi": cyc.phi,
                "train/loss_adv": adv,
                "train/loss_disc": disc,
                "train/loss_limit": limit,
                "train/lr": opt_dec.param_groups[0]["lr"],
            },
            prog_bar=False,
            batch_size=p_c.shape[0],
        )

    @override
    def validation_step(self, p_c: torch.Tensor, batch_idx: int) -> None:
        from lightning_mp3d.synth.poses import joint_angle_violation

        hp = self.hparams
        n = p_c.shape[0]
        p_c_hat = self.decode(self.encoder(to_local(p_c)))
        self.val_mpjpe.update((p_c - p_c_hat).norm(dim=-1).mean(-1))  # (B,) mm
        generator = torch.Generator().manual_seed(hp.val_seed + batch_idx)
        phi = self.sample_prior(n, generator)
        p_l_prior = self.pose_decoder(phi)
        self.val_cycle_phi.update((phi - self.encoder(p_l_prior)).abs().mean(-1))
        worst = joint_angle_violation(forward_kinematics(p_l_prior), hp.range_scale).amax(-1)  # (B,) degrees
        self.val_plausible.update((worst == 0).to(p_c.dtype))
        self.val_violation.update(worst)

    @override
    def on_validation_epoch_end(self) -> None:
        self.log_dict(
            {
                "val/mpjpe_recon": self.val_mpjpe,
                "val/cycle_phi": self.val_cycle_phi,
                "val/prior_plausible": self.val_plausible,
                "val/prior_violation_deg": self.val_violation,
            },
            prog_bar=True,
        )
        if self.hparams.num_figure_poses > 0 and not self.trainer.sanity_checking:
            generator = torch.Generator().manual_seed(self.hparams.val_seed - 1)
            poses = self.decode(self.sample_prior(self.hparams.num_figure_poses, generator))
            log_figure(self, "val/prior_poses", pose_grid_figure(poses.detach().cpu()))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming a checkpoint written before Ψ was renamed: its ``decoder.*`` weights are ``pose_decoder.*``."""
        checkpoint["state_dict"] = renamed_state_dict("aae", checkpoint["state_dict"])

    @override
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        hp = self.hparams
        models = {
            "encoder": {"embedding_dim": hp.embedding_dim, **hp.encoder},
            "pose_decoder": dict(self.pose_decoder.config),
            "discriminator": dict(hp.discriminator),
        }
        add_stage_record(checkpoint, self._trainer, "aae", models)
