"""Properties of the pose geometry: round trips, invariances, conventions and float64 gradients."""

import math
import subprocess
import sys

import pytest
import torch

from lightning_mp3d import skeleton
from lightning_mp3d.geometry import (
    CANONICAL_TO_CAMERA,
    Intrinsics,
    canonical_frame,
    euler_to_sincos,
    forward_kinematics,
    local_to_spherical,
    matrix_to_sincos,
    procrustes_align,
    project,
    rotate,
    sincos_to_euler,
    sincos_to_matrix,
    spherical_to_local,
    to_canonical,
    to_local,
    translate,
    unrotate,
)

D64 = torch.float64


def random_canonical(n: int, generator: torch.Generator, dtype=D64) -> torch.Tensor:
    """Valid canonical poses: FK of random local directions (FK enforces the 0/1-DoF joints)."""
    return forward_kinematics(torch.randn(n, 15, 3, generator=generator, dtype=dtype))


def random_sincos(shape, generator, dtype=D64, pitch_max=1.2):
    yaw = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * math.pi
    pitch = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * pitch_max
    roll = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * math.pi
    return euler_to_sincos(torch.stack((yaw, pitch, roll), -1))


def test_skeleton_tables_are_consistent():
    assert len(skeleton.JOINTS) == 15 and len(skeleton.LIMBS) == 14
    assert all(skeleton.PARENTS[j] < j for j in range(1, 15))
    flip = skeleton.FLIP_PERM
    assert all(flip[flip[j]] == j for j in range(15))
    for j, name in enumerate(skeleton.JOINTS):
        other = skeleton.JOINTS[flip[j]]
        assert other == name.replace("r_", "#").replace("l_", "r_").replace("#", "l_")
        assert skeleton.BONE_LENGTHS[j] == skeleton.BONE_LENGTHS[flip[j]]
    mupots_names = [skeleton.MUPOTS17_JOINTS[i] for i in skeleton.MUPOTS17_TO_OURS]
    assert [n.replace("head_top", "head") for n in mupots_names] == list(skeleton.JOINTS)
    for ours, coco in enumerate(skeleton.COCO18_TO_OURS):
        if coco >= 0:
            assert skeleton.COCO18_JOINTS[coco] == skeleton.JOINTS[ours]
    with pytest.raises(ValueError, match="unknown joint name 'elbow'"):
        skeleton.joint_index("elbow")


def test_fk_inverts_to_local(generator):
    p_c = random_canonical(2000, generator)
    torch.testing.assert_close(forward_kinematics(to_local(p_c)), p_c, atol=1e-4, rtol=0)


def test_fk_preserves_bone_lengths(generator):
    p_c = random_canonical(500, generator)
    lengths = (p_c[:, 1:] - p_c[:, list(skeleton.PARENTS[1:])]).norm(dim=-1)
    torch.testing.assert_close(lengths, skeleton.bone_lengths(D64)[1:].expand_as(lengths), atol=1e-6, rtol=0)


def test_fk_output_is_canonical_and_mirror_symmetric(generator):
    p_c = random_canonical(200, generator)
    torch.testing.assert_close(canonical_frame(p_c), torch.eye(3, dtype=D64).expand(200, 3, 3), atol=1e-9, rtol=0)
    hips = p_c[:, [9, 10]].sum(1) / 2
    shoulders = p_c[:, [3, 4]].sum(1) / 2
    torch.testing.assert_close(hips, p_c[:, 0], atol=1e-9, rtol=0)
    torch.testing.assert_close(shoulders, p_c[:, 1], atol=1e-9, rtol=0)


def test_to_local_gives_unit_vectors(generator):
    p_l = to_local(random_canonical(100, generator))
    torch.testing.assert_close(p_l[:, 1:].norm(dim=-1), torch.ones(100, 14, dtype=D64))
    assert p_l[:, 0].abs().max() == 0


def test_canonical_frame_is_invariant_to_rotation(generator):
    p_c = random_canonical(300, generator)
    c = random_sincos((300,), generator, pitch_max=math.pi)
    p_r = rotate(p_c, c) + torch.randn(300, 1, 3, generator=generator, dtype=D64) * 1000
    recovered, rotation = to_canonical(p_r)
    torch.testing.assert_close(recovered, p_c, atol=1e-6, rtol=0)
    torch.testing.assert_close(rotation @ rotation.mT, torch.eye(3, dtype=D64).expand(300, 3, 3))


def test_rotation_is_orthonormal_and_inverts(generator):
    c = random_sincos((400,), generator)
    rot = sincos_to_matrix(c)
    torch.testing.assert_close(rot @ rot.mT, torch.eye(3, dtype=D64).expand(400, 3, 3))
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(400, dtype=D64))
    torch.testing.assert_close(sincos_to_matrix(matrix_to_sincos(rot)), rot)
    torch.testing.assert_close(sincos_to_euler(c), sincos_to_euler(matrix_to_sincos(rot)))
    p_c = random_canonical(400, generator)
    torch.testing.assert_close(unrotate(rotate(p_c, c), c), p_c)
    # Un-normalised sin/cos pairs give the same rotation as normalised ones.
    torch.testing.assert_close(sincos_to_matrix(c * 3.7), rot)


def test_convention_canonical_axes():
    """X front (normal of neck/l_hip/r_hip), Y left, Z up; R_0 maps them to -z, +x, -y in the camera."""
    p_l = torch.zeros(1, 15, 3, dtype=D64)
    p_l[..., 0] = 1.0  # every bone continues its parent's direction
    p_l[0, 9] = torch.tensor([0.0, 0.0, -1.0], dtype=D64)  # right hip along -e3 = -Y
    p_c = forward_kinematics(p_l)[0]
    assert p_c[1, 2] > 0 and abs(p_c[1, 0]) < 1e-9  # neck up
    assert p_c[9, 1] < 0 and p_c[10, 1] > 0  # right hip at -Y, left hip at +Y
    assert p_c[2, 2] > p_c[1, 2]  # head above neck
    assert p_c[11, 1] < p_c[9, 1]  # the right thigh continues the hip direction (local (1, 0, 0))
    # Knee frame: e1 = hip direction (-Y), e2 = X, e3 = e1 x e2 = +Z, so local (0, 0, -1) points the thigh down.
    p_l[0, 11] = torch.tensor([0.0, 0.0, -1.0], dtype=D64)
    p_c = forward_kinematics(p_l)[0]
    torch.testing.assert_close(p_c[11] - p_c[9], torch.tensor([0.0, 0.0, -skeleton.BONE_LENGTHS[11]], dtype=D64))
    torch.testing.assert_close(
        CANONICAL_TO_CAMERA.to(D64) @ torch.tensor([1.0, 0, 0], dtype=D64), torch.tensor([0.0, 0, -1], dtype=D64)
    )
    torch.testing.assert_close(
        CANONICAL_TO_CAMERA.to(D64) @ torch.tensor([0.0, 1, 0], dtype=D64), torch.tensor([1.0, 0, 0], dtype=D64)
    )
    torch.testing.assert_close(
        CANONICAL_TO_CAMERA.to(D64) @ torch.tensor([0.0, 0, 1], dtype=D64), torch.tensor([0.0, -1, 0], dtype=D64)
    )


def test_convention_zero_rotation_is_upright_and_facing_the_camera(generator):
    p_c = random_canonical(1, generator)
    p_r = rotate(p_c, euler_to_sincos(torch.zeros(1, 3, dtype=D64)))[0]
    assert p_r[1, 1] < 0  # neck above pelvis: smaller image y
    assert p_r[10, 0] > p_r[9, 0]  # the person's left hip is on the image right (they face us)


def test_convention_euler_order():
    yaw = torch.tensor([0.3, -0.2, 0.5], dtype=D64)
    rot = sincos_to_matrix(euler_to_sincos(yaw))

    def axis(a, i):
        c, s = math.cos(a), math.sin(a)
        m = torch.eye(3, dtype=D64)
        j, k = [(1, 2), (2, 0), (0, 1)][i]
        m[j, j], m[j, k], m[k, j], m[k, k] = c, -s, s, c
        return m

    expected = axis(0.3, 1) @ axis(-0.2, 0) @ axis(0.5, 2)
    torch.testing.assert_close(rot, expected)


def test_convention_camera_projection():
    k = Intrinsics.for_image(224)
    assert (k.focal, k.cx, k.cy) == (224.0, 112.0, 112.0)
    point = torch.tensor([[100.0, -50.0, 2000.0]], dtype=D64)
    expected = torch.tensor([[112 + 224 * 100 / 2000, 112 - 224 * 50 / 2000]], dtype=D64)
    torch.testing.assert_close(project(point, k), expected)


def test_project_translate_puts_root_back(generator):
    k = Intrinsics.for_image(224)
    p_r = rotate(random_canonical(64, generator), random_sincos((64,), generator))
    roots_px = torch.rand(64, 2, generator=generator, dtype=D64) * 224
    depth = 2500 + torch.rand(64, generator=generator, dtype=D64) * 6000
    p_g = translate(p_r, roots_px, depth, k)
    torch.testing.assert_close(project(p_g, k)[:, 0], roots_px)
    torch.testing.assert_close(p_g[:, 0, 2], depth)


def test_procrustes_recovers_similarity(generator):
    source = random_canonical(50, generator)
    rot = sincos_to_matrix(random_sincos((50,), generator, pitch_max=math.pi))
    scale = 0.5 + torch.rand(50, generator=generator, dtype=D64)
    shift = torch.randn(50, 3, generator=generator, dtype=D64) * 100
    target = scale[:, None, None] * source @ rot.mT + shift[:, None]
    result = procrustes_align(source, target)
    torch.testing.assert_close(result.aligned, target)
    torch.testing.assert_close(result.rotation, rot)
    torch.testing.assert_close(result.scale, scale)
    rigid = procrustes_align(source, target, scale=False)
    torch.testing.assert_close(rigid.scale, torch.ones(50, dtype=D64))
    # A mirror image is never fitted with a reflection.
    mirrored = target * torch.tensor([-1.0, 1.0, 1.0], dtype=D64)
    assert torch.linalg.det(procrustes_align(source, mirrored).rotation).min() > 0
    with pytest.raises(ValueError, match="source and target"):
        procrustes_align(source, target[:, :10])


def test_spherical_round_trip(generator):
    theta = (torch.rand(100, generator=generator, dtype=D64) * 2 - 1) * math.pi
    gamma = torch.rand(100, generator=generator, dtype=D64) * math.pi
    t2, g2 = local_to_spherical(spherical_to_local(theta, gamma))
    torch.testing.assert_close(g2, gamma)
    torch.testing.assert_close(
        torch.remainder(t2 - theta + math.pi, 2 * math.pi) - math.pi, torch.zeros_like(theta), atol=1e-7, rtol=0
    )


def test_gradcheck_fk(generator):
    p_l = torch.randn(2, 15, 3, generator=generator, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(forward_kinematics, (p_l,))


def test_gradcheck_rotation_and_projection(generator):
    c = torch.randn(3, 6, generator=generator, dtype=D64, requires_grad=True)
    p_c = random_canonical(3, generator).requires_grad_(True)
    assert torch.autograd.gradcheck(rotate, (p_c, c))
    k = Intrinsics.for_image(224)
    root = (torch.rand(3, 2, generator=generator, dtype=D64) * 224).requires_grad_(True)
    depth = (3000 + torch.rand(3, generator=generator, dtype=D64) * 1000).requires_grad_(True)
    p_r = (torch.randn(3, 15, 3, generator=generator, dtype=D64) * 300).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, d: translate(a, b, d, k), (p_r, root, depth))
    p_g = (p_r.detach() + torch.tensor([0.0, 0.0, 4000.0], dtype=D64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: project(x, k), (p_g,))


def test_gradients_finite_at_degenerate_points():
    zero = torch.zeros(1, 15, 3, dtype=D64, requires_grad=True)
    forward_kinematics(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()
    collapsed = torch.zeros(1, 15, 3, dtype=D64, requires_grad=True)
    canonical_frame(collapsed).sum().backward()
    assert torch.isfinite(collapsed.grad).all()


def test_shape_errors_name_the_input():
    with pytest.raises(ValueError, match=r"p_c must be \(\.\.\., 15, 3\), got \(4, 14, 3\)"):
        to_local(torch.zeros(4, 14, 3))
    with pytest.raises(ValueError, match="rotation parameters c must be"):
        sincos_to_matrix(torch.zeros(4, 5))


def test_geometry_does_not_import_lightning():
    code = "import sys, lightning_mp3d.geometry, lightning_mp3d.skeleton; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
