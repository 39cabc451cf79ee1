"""Pose metrics: functional core (pure tensors) and torchmetrics wrappers; MuPoTS-3D protocol and person matching.

Every person metric takes a ``PeopleBatch`` and a ``MatchSpec``. This package re-exports the whole functional API
(``metrics/functional/``: ``matching.py`` person matching, ``mupots.py`` bone rescaling, 17-joint completion and
thresholds, one file per metric) and the ``torchmetrics.Metric`` classes of ``metrics/pose.py``.
"""

from lightning_mp3d.metrics import functional
from lightning_mp3d.metrics.functional import *  # noqa: F403 (the functional API, as listed in its __all__)
from lightning_mp3d.metrics.pose import MPJPE, PAMPJPE, PCK2D, PCK3D, APRoot, BoxIoU

__all__ = [*functional.__all__, "MPJPE", "PAMPJPE", "PCK2D", "PCK3D", "APRoot", "BoxIoU"]
