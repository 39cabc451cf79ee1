"""Domain styles of the embedded D_I renderer: the appearance and pose distribution of each image domain.

``DOMAIN_STYLES`` holds the two domains of the embedded default ("source", the teacher's training domain, and
"target", the unpaired deployment domain); ``get_style`` resolves a name. ``synth.draws`` draws each image's
appearance from a style and ``synth.render`` renders with it. Pure data: no Lightning import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DOMAIN_STYLES", "DomainStyle", "get_style"]


@dataclass(frozen=True)
class DomainStyle:
    """Appearance and pose distribution of one image domain.

    Ranges are (low, high) of a uniform draw per image (lighting, blur, noise) or per person (colours, thickness).

    Attributes:
        name: style name.
        scene_kwargs: keyword arguments for ``compose_scenes`` (the pose/camera distribution).
        limb_scale: multiplier of all body radii, per person.
        saturation: clothing saturation; value: clothing brightness (HSV).
        hue_centres: clothing hues are drawn around these (0..1) with ``hue_spread``; empty = any hue.
        skin_value: skin brightness range (hue fixed to skin tones).
        stripe_prob: probability that a person's shirt and pants carry stripes.
        short_sleeve_prob: probability that forearms are skin coloured.
        bg_noise: amplitude of the multi-octave value-noise texture on the background.
        bg_floor: amplitude of the perspective checker floor (0 = none).
        bg_stripes: amplitude of wall stripes (0 = none).
        bg_clutter_prob: probability of each of the clutter shapes in the background.
        bg_saturation: saturation of the background base colours.
        ambient: ambient light range; diffuse: directional light range.
        tint: colour-temperature tint amplitude.
        vignette: vignette strength range.
        blur_sigma: Gaussian blur sigma range, pixels.
        noise_std: additive Gaussian sensor noise range.
    """

    name: str
    scene_kwargs: dict[str, Any] = field(default_factory=dict)
    limb_scale: tuple[float, float] = (1.0, 1.0)
    saturation: tuple[float, float] = (0.5, 0.9)
    value: tuple[float, float] = (0.5, 0.9)
    hue_centres: tuple[float, ...] = ()
    hue_spread: float = 0.05
    skin_value: tuple[float, float] = (0.5, 0.9)
    stripe_prob: float = 0.0
    short_sleeve_prob: float = 0.5
    bg_noise: float = 0.05
    bg_floor: float = 0.0
    bg_stripes: float = 0.0
    bg_clutter_prob: float = 0.0
    bg_saturation: tuple[float, float] = (0.0, 0.2)
    ambient: tuple[float, float] = (0.5, 0.6)
    diffuse: tuple[float, float] = (0.4, 0.5)
    tint: float = 0.0
    vignette: tuple[float, float] = (0.0, 0.0)
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    noise_std: tuple[float, float] = (0.0, 0.0)


DOMAIN_STYLES: dict[str, DomainStyle] = {
    # The teacher's training domain, COCO-like: labelled 2D from many places. People in any orientation but with
    # the domain's own pose bias (80 % of the joint angle ranges, milder pitch/roll, nearer the camera), saturated
    # clothes, rooms with floors, wall stripes and clutter, varied light and optics. A studio-only source (plain
    # backdrops, yaw within +-90 deg) gave a teacher whose target-domain detections were 19 % precise (48 % recall):
    # every edge of the target's rooms fired. Trained on this domain the same tiny teacher is 96-98 % precise at
    # 79-89 % recall on target renders, depending on steps and run (README, "What the student learns").
    "source": DomainStyle(
        name="source",
        scene_kwargs={
            "pose_range_scale": 0.8,
            "yaw_range": (-math.pi, math.pi),
            "pitch_range": (-0.2, 0.2),
            "roll_range": (-0.12, 0.12),
            "depth_range": (3000.0, 6500.0),
        },
        limb_scale=(0.85, 1.2),
        saturation=(0.35, 1.0),
        value=(0.4, 1.0),
        hue_centres=(),
        skin_value=(0.35, 0.95),
        stripe_prob=0.3,
        short_sleeve_prob=0.4,
        bg_noise=0.1,
        bg_floor=0.15,
        bg_stripes=0.06,
        bg_clutter_prob=0.3,
        bg_saturation=(0.0, 0.4),
        ambient=(0.4, 0.7),
        diffuse=(0.3, 0.6),
        tint=0.06,
        vignette=(0.0, 0.2),
        blur_sigma=(0.3, 0.9),
        noise_std=(0.0, 0.025),
    ),
    # The deployment domain: any orientation, full joint ranges, people up to 7.5 m away, muted and more often
    # striped clothes, busier textured rooms (perspective floor, striped walls, clutter), more coloured uneven
    # light, stronger vignetting, defocus and sensor noise.
    "target": DomainStyle(
        name="target",
        scene_kwargs={
            "pose_range_scale": 1.0,
            "yaw_range": (-math.pi, math.pi),
            "pitch_range": (-0.25, 0.25),
            "roll_range": (-0.15, 0.15),
            "depth_range": (3000.0, 7500.0),
        },
        limb_scale=(0.8, 1.05),
        saturation=(0.15, 0.6),
        value=(0.3, 0.9),
        hue_centres=(),
        skin_value=(0.35, 0.9),
        stripe_prob=0.5,
        short_sleeve_prob=0.6,
        bg_noise=0.12,
        bg_floor=0.2,
        bg_stripes=0.08,
        bg_clutter_prob=0.35,
        bg_saturation=(0.1, 0.5),
        ambient=(0.35, 0.6),
        diffuse=(0.3, 0.7),
        tint=0.12,
        vignette=(0.1, 0.35),
        blur_sigma=(0.5, 1.1),
        noise_std=(0.01, 0.035),
    ),
}


def get_style(style: str | DomainStyle) -> DomainStyle:
    """Resolve a style name to its DomainStyle (a DomainStyle passes through)."""
    if isinstance(style, DomainStyle):
        return style
    if style not in DOMAIN_STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {sorted(DOMAIN_STYLES)} or a DomainStyle")
    return DOMAIN_STYLES[style]
