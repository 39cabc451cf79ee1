"""One teacher grouping (issue 13, item 2): with the OpenPose teacher the student stages distil from exactly the
people that ``teacher.grouped(images)`` (native COCO grouping, then mapped to ours) reports."""

import torch

from lightning_mp3d.models.teacher import COCO_LIMBS, COCO_PAF_CHANNELS, OpenPoseTeacher
from lightning_mp3d.systems import DistillationWarmup

GRID, CELL = 28, 8.0  # 224 px / 28 cells

# Two COCO-18 people (pixels in the 224 input): nose, neck, r arm, l arm, r leg, l leg, eyes, ears.
PERSON = torch.tensor(
    [[0, -62], [0, -42], [-18, -40], [-26, -14], [-30, 10], [18, -40], [26, -14], [30, 10], [-11, 12], [-13, 48],
     [-14, 84], [11, 12], [13, 48], [14, 84], [-4, -66], [4, -66], [-9, -63], [9, -63]],
    dtype=torch.float32,
)  # fmt: skip


def coco_maps(people: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cao-style maps of COCO-18 people (P, 18, 2) px: heatmaps (1, 19, 28, 28), PAFs (1, 38, 28, 28)."""
    centres = (torch.arange(GRID, dtype=torch.float32) + 0.5) * CELL
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    grid = torch.stack((xx, yy), -1)  # (G, G, 2)
    hm = torch.zeros(19, GRID, GRID)
    paf = torch.zeros(38, GRID, GRID)
    for person in people:
        d2 = ((grid[None] - person[:, None, None]) ** 2).sum(-1)  # (18, G, G)
        hm[:18] = torch.maximum(hm[:18], torch.exp(-d2 / (2 * 7.0**2)))
        for (a, b), (cx, cy) in zip(COCO_LIMBS, COCO_PAF_CHANNELS, strict=True):
            ab = person[b] - person[a]
            length = ab.norm()
            unit = ab / length
            rel = grid - person[a]
            along = rel @ unit
            across = (rel[..., 0] * unit[1] - rel[..., 1] * unit[0]).abs()
            on = (along >= 0) & (along <= length) & (across <= 8.0)
            paf[cx] = torch.where(on, unit[0], paf[cx])
            paf[cy] = torch.where(on, unit[1], paf[cy])
    hm[18] = (1 - hm[:18].amax(0)).clamp(0, 1)
    return hm[None], paf[None]


def test_student_stage_distils_from_the_openpose_teachers_own_grouping():
    teacher = OpenPoseTeacher().freeze()
    people = torch.stack((PERSON + torch.tensor([70.0, 110.0]), PERSON + torch.tensor([150.0, 105.0])))
    heatmaps, pafs = coco_maps(people)
    features = torch.zeros(1, teacher.v_channels, GRID, GRID)
    teacher.net.encode = lambda x: features.expand(len(x), -1, -1, -1)  # skip VGG: the maps are what matter
    teacher.net.decode = lambda v: (heatmaps, pafs)  # stage-2 (heatmaps, pafs) in COCO order

    stage = DistillationWarmup()
    stage.teacher = teacher
    images = torch.rand(1, 3, 224, 224)
    distilled = stage.teacher_targets(images).people
    reported = teacher.grouped(images)
    assert int(reported.mask.sum()) == 2
    for name, value in reported._asdict().items():
        torch.testing.assert_close(getattr(distilled, name), value, msg=name)
