"""Three small bugs, planted in our side of the training parity to show that its gates catch them (the script
records where, tests/test_train_parity.py asserts it). Each is a context manager that swaps one library function
for a subtly wrong copy and puts the original back on exit; the official side is never touched.

- `warmup_off_by_one`: the warm-up counted from step 1 (`linspace(0, lr, W + 1)[1:]`): every warm-up lr one step
  ahead, the first one not 0.
- `biased_target_variance`: the normalized-pixel target divided by the population std (`var(unbiased=False)`)
  instead of the unbiased one: targets 1 / (2 x 127) larger, about 0.4%.
- `decay_everything`: weight decay on every parameter, biases, norms and the mask token included.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from unittest import mock

import numpy as np

import videomae.ops.torch_backend as torch_backend
import videomae.train.optim as optim
import videomae.train.recipe as recipe

# The module, not the function `videomae.ops.norm_pix_mse` that the package exports under the same name.
norm_pix_mse_op = importlib.import_module("videomae.ops.norm_pix_mse")


@contextlib.contextmanager
def warmup_off_by_one() -> Iterator[None]:
    original = recipe.cosine_schedule

    def shifted(base_value, final_value, epochs, steps_per_epoch, warmup_epochs=0, start_warmup_value=0.0,
                warmup_steps=-1):
        out = original(base_value, final_value, epochs, steps_per_epoch, warmup_epochs, start_warmup_value,
                       warmup_steps)
        warm = warmup_steps if warmup_steps > 0 else warmup_epochs * steps_per_epoch
        out[:warm] = np.linspace(start_warmup_value, base_value, warm + 1)[1:]
        return out

    with mock.patch.object(recipe, "cosine_schedule", shifted):
        yield


@contextlib.contextmanager
def biased_target_variance() -> Iterator[None]:
    """Under the torch ops backend: its forward and backward both build the target with `pixel_targets`."""
    original = norm_pix_mse_op.pixel_targets

    def biased(videos, *, normalize_target=True, style="videomae", **kwargs):
        if not normalize_target or style != "videomae":
            return original(videos, normalize_target=normalize_target, style=style, **kwargs)
        pixels = original(videos, normalize_target=False, style=style, **kwargs)  # [B, N, P * C], channel fastest
        cubes = pixels.unflatten(-1, (-1, videos.shape[1]))  # [B, N, P, C]
        mu = cubes.mean(dim=-2, keepdim=True)
        sd = cubes.var(dim=-2, unbiased=False, keepdim=True).sqrt()
        return ((cubes - mu) / (sd + 1e-6)).flatten(-2)

    with mock.patch.object(norm_pix_mse_op, "pixel_targets", biased), \
            mock.patch.object(torch_backend, "pixel_targets", biased):
        yield


@contextlib.contextmanager
def decay_everything() -> Iterator[None]:
    original = optim.param_groups

    def decay_all(model, weight_decay, layer_decay=None):
        groups = original(model, weight_decay, layer_decay)
        for group in groups:
            group["weight_decay"] = weight_decay
        return groups

    with mock.patch.object(optim, "param_groups", decay_all):
        yield


PLANTED = {"warmup_off_by_one": warmup_off_by_one, "biased_target_variance": biased_target_variance,
           "decay_everything": decay_everything}
