"""Inference throughput paths (issue 15): no host synchronisation inside a batch, one-transfer JSON records, and the
optional channels_last / bf16 / compiled-decoder / CUDA-graph paths agree with the default one."""

import copy

import pytest
import torch

from lightning_mp3d.inference import CUDAGraphEstimator, PoseEstimator, decode_people, prediction_records
from lightning_mp3d.models.aae import PoseDecoder
from lightning_mp3d.models.scene_decoder import SceneDecoder
from lightning_mp3d.models.student import SceneHead
from lightning_mp3d.models.teacher import EmbeddedTeacher
from lightning_mp3d.predict import batch_json, people_json


def small_estimator(**kwargs) -> PoseEstimator:
    """Tiny E, random H (output layer not zero) and Psi; threshold 0 so every slot holds a person."""
    torch.manual_seed(0)
    teacher = EmbeddedTeacher(width=0.0625).freeze()
    head = SceneHead(teacher.v_channels, width=8, fc_channels=8)
    torch.nn.init.normal_(head.out.weight, std=0.3)
    kwargs = {"threshold": 0.0, "max_people": 4, **kwargs}
    return PoseEstimator(copy.deepcopy(teacher), copy.deepcopy(head), SceneDecoder(PoseDecoder(width=32, depth=2)),
                         **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def test_estimator_forward_has_no_host_synchronisation_or_data_dependent_shape():
    # meta tensors have no values: .item(), .tolist(), nonzero or a boolean-mask index inside forward would raise
    est = small_estimator(refine_head=None).to("meta")
    out = est(torch.empty(3, 3, 224, 224, device="meta"))
    assert all(t.device.type == "meta" for t in out)
    assert out.poses.shape == (3, 4, 15, 3) and out.mask.shape == (3, 4)


def test_nms_and_m_compile_to_one_graph_without_breaks(images):
    est = small_estimator()
    with torch.no_grad():
        s = est.scene(images)
        compiled = torch.compile(decode_people, dynamic=False, fullgraph=True, backend="eager")  # a break would raise
        for a, b in zip(
            decode_people(s, est.scene_decoder, 0.0, 4), compiled(s, est.scene_decoder, 0.0, 4), strict=True
        ):
            torch.testing.assert_close(b, a, rtol=0, atol=0)


def _reference_people(prediction, i, transform):
    """The former per-person JSON conversion (one float() per number), kept here as the oracle."""
    scale, ox, oy = (float(x) for x in transform)
    people = []
    for k in torch.nonzero(prediction.mask[i]).flatten().tolist():
        joints_2d = prediction.keypoints[i, k] * transform[:1] + transform[1:]
        people.append(
            {
                "root_confidence": round(float(prediction.confidence[i, k]), 4),
                "joints_3d_mm": [[round(float(c), 1) for c in j] for j in prediction.poses[i, k]],
                "joints_2d_px": [[round(float(c), 2) for c in j] for j in joints_2d],
            }
        )
    return people


def test_prediction_records_equal_the_per_person_conversion(images):
    est = small_estimator(refine_head=None)
    with torch.no_grad():
        pred = est(images)
    pred = pred._replace(mask=pred.mask & torch.tensor([[True, False, True, True], [False, False, False, True]]))
    transforms = torch.tensor([[1.5, -3.0, 10.25], [0.5, 0.0, 0.0]])
    records = prediction_records(pred, transforms)
    assert [len(r) for r in records] == [3, 1]
    for i in range(2):
        ref = _reference_people(pred, i, transforms[i])
        for got, want in zip(records[i], ref, strict=True):
            assert got["root_confidence"] == pytest.approx(want["root_confidence"], abs=1e-4 + 1e-12)
            torch.testing.assert_close(torch.tensor(got["joints_3d_mm"]), torch.tensor(want["joints_3d_mm"]),
                                       atol=0.1 + 1e-9, rtol=0)  # fmt: skip
            torch.testing.assert_close(torch.tensor(got["joints_2d_px"]), torch.tensor(want["joints_2d_px"]),
                                       atol=0.01 + 1e-9, rtol=0)  # fmt: skip
    # predict's records take each image's imageio.Letterbox (input = s * original + o), the inverse of `transforms`
    letterboxes = torch.stack(
        (1 / transforms[:, 0], -transforms[:, 1] / transforms[:, 0], -transforms[:, 2] / transforms[:, 0]), 1
    )
    assert people_json(pred, 1, letterboxes[1], 224)["people"] == records[1]
    record = batch_json(pred, letterboxes, 224)[0]
    assert record["camera"] == pytest.approx({"focal_px": 224 * 1.5, "cx": 112 * 1.5 - 3.0, "cy": 112 * 1.5 + 10.25})


def test_channels_last_and_bf16_paths_agree_with_fp32(images):
    with torch.no_grad():
        ref = small_estimator()(images)
        nhwc = small_estimator(channels_last=True)(images)
        est_bf16 = small_estimator(amp_dtype=torch.bfloat16)
        s = est_bf16.scene(images)
        bf16 = est_bf16(images)
    for a, b in zip(ref, nhwc, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-2)
    assert s.dtype == torch.float32 and bf16.poses.dtype == torch.float32  # M runs in float32
    torch.testing.assert_close(s, small_estimator().scene(images), rtol=0.05, atol=0.05)


def test_cuda_graph_estimator_refuses_a_cpu_model():
    with pytest.raises(ValueError, match="CUDA device"):
        CUDAGraphEstimator(small_estimator(refine_head=None))
