import torch

from sam2_video.model import prompts


def _rect(h0, h1, w0, w1, size=32):
    m = torch.zeros(1, size, size, dtype=torch.bool)
    m[0, h0:h1, w0:w1] = True
    return m


def test_center_point_is_deepest_pixel():
    xy = prompts.center_points(_rect(10, 21, 4, 15))  # 11 x 11 square, centre (9, 15)
    assert xy.tolist() == [[[9.0, 15.0]]]


def test_box_without_jitter_is_exact_box_in_xy():
    coords, labels = prompts.box_prompts(_rect(10, 21, 4, 15), 0.0, torch.Generator())
    assert coords.tolist() == [[[4.0, 10.0], [14.0, 20.0]]]
    assert labels.tolist() == [[2, 3]]


def test_points_lie_inside_and_empty_objects_are_padding():
    masks = torch.cat([_rect(10, 21, 4, 15), torch.zeros(1, 32, 32, dtype=torch.bool)])
    coords, labels = prompts.point_prompts(masks, 5, False, torch.Generator().manual_seed(0))
    xs, ys = coords[0, :, 0].long(), coords[0, :, 1].long()
    assert bool(masks[0, ys, xs].all())
    assert labels.tolist() == [[1] * 5, [-1] * 5]


def test_correction_click_labels_follow_the_error_type():
    gt = torch.cat([_rect(0, 8, 0, 8), torch.zeros(1, 32, 32, dtype=torch.bool)])
    pred = torch.cat([torch.zeros(1, 32, 32, dtype=torch.bool), _rect(20, 24, 20, 24)])
    coords, labels = prompts.correction_clicks(gt, pred, torch.Generator().manual_seed(1))
    assert labels.tolist() == [[1], [0]]  # missed object -> positive, false alarm -> negative
    x0, y0 = coords[0, 0].long().tolist()
    x1, y1 = coords[1, 0].long().tolist()
    assert gt[0, y0, x0] and pred[1, y1, x1]


def test_same_generator_seed_gives_same_prompts():
    m = _rect(3, 20, 3, 20)
    a = prompts.point_prompts(m, 3, True, torch.Generator().manual_seed(7))
    b = prompts.point_prompts(m, 3, True, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0])


def test_pixels_are_drawn_uniformly_from_the_region_and_empty_gives_origin():
    region = torch.zeros((2, 8, 8), dtype=torch.bool)
    inside = [(1, 2), (1, 7), (5, 0), (7, 7)]  # (y, x)
    for y, x in inside:
        region[0, y, x] = True
    xy = prompts._sample_pixels(region, 40_000, torch.Generator().manual_seed(0))  # (2, num, 2)
    picked = [(int(y), int(x)) for x, y in xy[0].tolist()]
    counts = {p: picked.count(p) for p in set(picked)}
    assert set(counts) == set(inside)  # never outside the region
    for n in counts.values():  # 10,000 expected each, standard deviation 87 (binomial)
        assert abs(n - 10_000) < 300
    assert torch.equal(xy[1], torch.zeros((40_000, 2)))  # empty region


def test_object_without_errors_gets_a_positive_click_inside_or_padding_when_absent():
    gt = torch.cat([_rect(4, 12, 6, 20), torch.zeros(1, 32, 32, dtype=torch.bool)])
    pred = gt.clone()  # nothing to correct on either object
    for seed in range(20):
        coords, labels = prompts.correction_clicks(gt, pred, torch.Generator().manual_seed(seed))
        x, y = coords[0, 0].long().tolist()
        assert gt[0, y, x] and labels.tolist() == [[1], [-1]]
    assert torch.equal(pred, gt)  # the inputs are not modified
