"""imageio: one Letterbox (original -> input) with its inverse beside it, for points and intrinsics; one fit."""

import subprocess
import sys

import pytest
import torch

from lightning_mp3d.geometry import Intrinsics, project, root_position
from lightning_mp3d.imageio import Letterbox, fit_image, fit_letterbox

SIZES = [(120, 200), (300, 150), (224, 224), (20, 310), (1080, 1920), (2048, 2048), (333, 517), (97, 1301)]


def _random_letterboxes(n: int, gen: torch.Generator) -> torch.Tensor:
    scale = torch.rand(n, generator=gen, dtype=torch.float64) * 4 + 0.05
    offset = torch.randn(n, 2, generator=gen, dtype=torch.float64) * 300
    return torch.cat((scale[:, None], offset), 1)  # (n, 3)


def test_letterbox_to_original_inverts_to_input():
    gen = torch.Generator().manual_seed(0)
    boxes = _random_letterboxes(6, gen)
    points = torch.rand(6, 4, 15, 2, generator=gen, dtype=torch.float64) * 3000  # (B, P, J, 2)
    box = Letterbox.from_tensor(boxes)
    torch.testing.assert_close(box.to_original(box.to_input(points)), points, atol=1e-9, rtol=1e-12)
    torch.testing.assert_close(box.to_input(box.to_original(points)), points, atol=1e-9, rtol=1e-12)
    for i in range(6):  # a batch applies each image's own letterbox; float fields give the same numbers
        single = Letterbox(*boxes[i].tolist())
        assert torch.equal(single.to_input(points[i]), box.to_input(points)[i])
        assert torch.equal(Letterbox.from_tensor(boxes[i]).to_original(points[i]), box.to_original(points)[i])
    assert torch.equal(box.as_tensor(torch.float64), boxes)


def test_letterbox_defines_input_px_as_scale_times_original_plus_offset():
    box = Letterbox(0.5, 10.0, -4.0)
    torch.testing.assert_close(box.to_input(torch.tensor([[100.0, 40.0]])), torch.tensor([[60.0, 16.0]]))
    torch.testing.assert_close(box.to_original(torch.tensor([[60.0, 16.0]])), torch.tensor([[100.0, 40.0]]))


def test_letterbox_maps_intrinsics_consistently_with_points():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(50, 3, generator=gen, dtype=torch.float64) * 400 + torch.tensor([0.0, 0.0, 4000.0])
    real = Intrinsics(1497.0, 1521.0, 1100.0, 960.0)
    for params in _random_letterboxes(5, gen).tolist():
        box = Letterbox(*params)
        seen = box.intrinsics_to_input(real)
        torch.testing.assert_close(project(x, seen), box.to_input(project(x, real)))
        back = box.intrinsics_to_original(seen)
        assert back == pytest.approx(real, rel=1e-12)
        virtual = Intrinsics.for_image(224)  # the model's camera, as a camera of the original image
        torch.testing.assert_close(
            project(x, box.intrinsics_to_original(virtual)), box.to_original(project(x, virtual))
        )


def test_root_position_inverts_project_with_non_square_pixels():
    gen = torch.Generator().manual_seed(2)
    camera = Intrinsics(1405.0, 1390.0, 900.0, 560.0)
    roots = torch.randn(20, 3, generator=gen, dtype=torch.float64) * 500 + torch.tensor([0.0, 0.0, 4000.0])
    torch.testing.assert_close(root_position(project(roots, camera), roots[:, 2], camera), roots)
    assert camera.focal == pytest.approx((1405.0 * 1390.0) ** 0.5)
    assert Intrinsics.for_image(224).focal == 224.0


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_fit_letterbox_is_where_fit_image_puts_the_pixels(height, width, mode):
    box = fit_letterbox(height, width, 224, mode)
    image = torch.zeros(3, height, width)
    row, col = height // 2 + height // 7, width // 2 - width // 9
    image[:, row, col] = 1.0
    fitted = fit_image(image, 224, mode)
    assert fitted.image.shape == (3, 224, 224)
    torch.testing.assert_close(fitted.letterbox, box.as_tensor())
    expected = box.to_input(torch.tensor([[col + 0.5, row + 0.5]], dtype=torch.float64))[0]
    found = fitted.image[0]
    r, c = divmod(int(found.argmax()), 224)
    if 0 <= expected[0] < 224 and 0 <= expected[1] < 224 and found.max() > 0:
        assert abs(c + 0.5 - float(expected[0])) <= 1.0 and abs(r + 0.5 - float(expected[1])) <= 1.0
    side = min(height, width) if mode == "crop" else max(height, width)
    assert box.scale == pytest.approx(224 / side, rel=1e-12)
    assert float(box.offset_x).is_integer() and float(box.offset_y).is_integer()  # whole input pixels


def test_imageio_imports_no_lightning():
    code = "import sys, lightning_mp3d.imageio; sys.exit('pytorch_lightning' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
