"""Masks: counts, tube structure, reproducibility, and V2's running cell against a literal
simulation of the official Cell queue."""

import pytest
import torch

from videomae.masking import (
    TokenIds,
    check_mask,
    frame_mask,
    make_mask,
    random_mask,
    running_cell_mask,
    token_ids,
    tube_mask,
)


def test_tube_mask_hides_int_ratio_per_frame_with_one_pattern():
    m = tube_mask(3, (8, 14, 14), 0.9, torch.Generator().manual_seed(0))
    assert m.shape == (3, 1568) and m.dtype == torch.bool
    per_frame = m.view(3, 8, 196)
    assert torch.all(per_frame.sum(-1) == 176)  # int(0.9 * 196); 160 visible tokens per clip
    assert torch.all(per_frame == per_frame[:, :1])
    assert not torch.equal(per_frame[0, 0], per_frame[1, 0])


def test_masks_are_reproducible_from_a_generator():
    for fn in (tube_mask, random_mask, frame_mask, running_cell_mask):
        a = fn(4, (4, 6, 6), 0.5, torch.Generator().manual_seed(7))
        b = fn(4, (4, 6, 6), 0.5, torch.Generator().manual_seed(7))
        assert torch.equal(a, b), fn.__name__


def test_random_mask_keeps_mae_st_count():
    m = random_mask(2, (8, 14, 14), 0.9, torch.Generator().manual_seed(0))
    assert torch.all((~m).sum(1) == int(1568 * (1 - 0.9)))  # mae_st's len_keep
    assert not torch.all(m.view(2, 8, 196) == m.view(2, 8, 196)[:, :1])


def test_frame_mask_hides_whole_temporal_slices():
    m = frame_mask(2, (8, 3, 3), 0.9, torch.Generator().manual_seed(0)).view(2, 8, 9)
    assert torch.all(m.all(-1) | (~m).all(-1))
    assert torch.all(m.all(-1).sum(-1) == 7)  # int(0.9 * 8): the paper's 87.5%


def official_running_cell(frames, height, width, ratio, phase):
    """Literal walk of VideoMAE V2's Cell: ptr set to `phase`, advanced once before each frame,
    cell[i] = queue[(i + ptr) % 4], reshaped 2x2 and tiled over the frame."""
    m = int(4 * ratio)
    queue = [1] * m + [0] * (4 - m)
    ptr = phase
    out = []
    for _ in range(frames):
        ptr += 1
        cell = [queue[(i + ptr) % 4] for i in range(4)]
        for h in range(height):
            for w in range(width):
                out.append(bool(cell[(h % 2) * 2 + (w % 2)]))
    return torch.tensor(out)


def test_running_cell_matches_official_cell_for_every_phase():
    m = running_cell_mask(64, (4, 4, 6), 0.5, torch.Generator().manual_seed(0))
    phases = {official_running_cell(4, 4, 6, 0.5, p).tolist().__repr__(): p for p in range(4)}
    seen = set()
    for row in m:
        key = row.tolist().__repr__()
        assert key in phases
        seen.add(phases[key])
    assert seen == {0, 1, 2, 3}
    assert torch.all(m.sum(1) == 4 * 24 // 2)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="ratio"):
        tube_mask(1, (2, 2, 2), 1.0)
    with pytest.raises(ValueError, match="grid"):
        tube_mask(1, (2, 2), 0.5)
    with pytest.raises(ValueError, match="even"):
        running_cell_mask(1, (2, 3, 2), 0.5)
    with pytest.raises(ValueError, match="mask_type"):
        make_mask("block", 1, (2, 2, 2), 0.5)
    with pytest.raises(ValueError, match="same number"):
        check_mask(torch.tensor([[True, False], [True, True]]), 2, 2)


def test_token_ids_hand_computed_v1_and_v2():
    mask = torch.tensor([[False, True, False, True], [True, True, False, False]])
    ids = token_ids(mask)
    assert ids.visible.tolist() == [[0, 2], [2, 3]] and ids.decoded.tolist() == [[1, 3], [0, 1]]
    assert ids.scored is None and ids.visible.dtype == ids.decoded.dtype == torch.int64
    # V2: decoded = not decode-masked (may include visible tokens); scored = decoded and masked.
    decode_mask = torch.tensor([[True, False, False, True], [False, True, True, False]])
    ids = token_ids(mask, decode_mask)
    assert ids.decoded.tolist() == [[1, 2], [0, 3]]
    assert ids.scored.tolist() == [[True, False], [True, False]]
    assert torch.equal(ids.mask(4), mask)


def test_token_ids_round_trip_and_validation():
    mask = tube_mask(3, (2, 4, 4), 0.75, torch.Generator().manual_seed(0))
    ids = token_ids(mask)
    assert isinstance(ids, TokenIds) and ids.visible.shape == (3, 8) and ids.decoded.shape == (3, 24)
    assert torch.equal(ids.mask(32), mask)
    assert torch.equal(ids.to("cpu").visible, ids.visible)
    uneven = mask.clone()
    uneven[0, ~mask[0]] = True
    with pytest.raises(ValueError, match="same number"):
        token_ids(uneven)
    with pytest.raises(ValueError, match="decode_mask"):
        token_ids(mask, torch.zeros(3, 31, dtype=torch.bool))
