"""Reconstruction pictures: original | masked | reconstruction, as a PNG grid and an animated GIF.

Un-normalization follows the official `run_videomae_vis.py`: the clip is ImageNet-un-normalized to
[0, 1], cut into cubes, each cube normalized with its own per-channel mean and unbiased std; the
decoder's predictions overwrite the masked cubes; each cube is mapped back with *its own* statistics
`x * (std + 1e-6) + mean`; the cubes are folded back into frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.masking import make_mask
from videomae.ops.norm_pix_mse import patchify

MASK_SHADE = 0.35  # masked cubes are drawn in this gray, so holes are visible on dark and light frames
ROWS = ("original", "masked", "reconstruction")
LABEL_W, TITLE_H = 104, 16  # the PNG's row-label column and title band, in pixels


def _text(canvas: np.ndarray, xy: tuple[int, int], text: str) -> np.ndarray:
    """Black text drawn onto a uint8 [H, W, 3] canvas with PIL's built-in font."""
    from PIL import ImageDraw

    image = Image.fromarray(canvas)
    ImageDraw.Draw(image).text(xy, text, fill=(0, 0, 0))
    return np.asarray(image).copy()


def caption(model, mask: torch.Tensor, mask_type: str | None = None) -> str:
    """'mask ratio 0.90 (tube), target: per-cube normalized pixels' for the picture's title."""
    ratio = mask.float().mean().item()
    target = "per-cube normalized pixels" if getattr(model, "normalize_target", True) else "raw pixels"
    return f"mask ratio {ratio:.2f}" + (f" ({mask_type})" if mask_type else "") + f", target: {target}"


def unnormalize(videos: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalized [B, 3, T, H, W] -> pixels in [0, 1] (fp32)."""
    m = torch.tensor(IMAGENET_MEAN, device=videos.device).view(1, 3, 1, 1, 1)
    s = torch.tensor(IMAGENET_STD, device=videos.device).view(1, 3, 1, 1, 1)
    return videos.float() * s + m


@torch.no_grad()
def reconstruct(model: torch.nn.Module, videos: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """videos [B, 3, T, H, W] ImageNet-normalized, mask Bool [B, N] True = masked ->
    {'original', 'masked', 'reconstruction'}: [B, 3, T, H, W] in [0, 1]."""
    was_training = model.training
    model.eval()
    pred = model(videos, mask).float()  # [B, N_masked, t*p*p*3], channel fastest
    model.train(was_training)
    t, p = model.tubelet_size, model.patch_size
    b, _, frames, h, w = videos.shape
    grid = (frames // t, h // p, w // p)
    pixels = unnormalize(videos)
    cubes = patchify(pixels, t, p)  # [B, N, t*p*p, 3]
    pred = rearrange(pred, "b n (q c) -> b n q c", c=3)
    if model.normalize_target:
        mean = cubes.mean(dim=-2, keepdim=True)
        std = cubes.var(dim=-2, unbiased=True, keepdim=True).sqrt()
        normed = (cubes - mean) / (std + 1e-6)
        normed[mask] = pred.reshape(-1, *pred.shape[2:])
        rec = normed * (std + 1e-6) + mean  # each cube back with its own statistics
    else:
        rec = cubes.clone()
        rec[mask] = pred.reshape(-1, *pred.shape[2:])
    shaded = cubes.clone()
    shaded[mask] = MASK_SHADE
    fold = lambda x: rearrange(x, "b (t h w) (p0 p1 p2) c -> b c (t p0) (h p1) (w p2)",
                               t=grid[0], h=grid[1], w=grid[2], p0=t, p1=p, p2=p)
    return {"original": pixels.clamp(0, 1), "masked": fold(shaded).clamp(0, 1),
            "reconstruction": fold(rec).clamp(0, 1)}


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] in [0, 1] -> uint8 [T, H, W, 3]"""
    return (x.permute(1, 2, 3, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def _upscale(frames: np.ndarray, min_side: int = 160) -> np.ndarray:
    """Nearest-neighbour enlargement of small clips, so cube edges stay visible in the pictures."""
    k = max(1, -(-min_side // frames.shape[1]))
    return frames.repeat(k, axis=1).repeat(k, axis=2) if k > 1 else frames


def grid_png(views: dict[str, torch.Tensor], path: str | Path, index: int = 0, gap: int = 2,
             title: str = "") -> Path:
    """Rows original / masked / reconstruction (labeled at the left), one column per frame, `title` on top."""
    rows = [_upscale(_to_uint8(views[k][index])) for k in ROWS]
    t, h, w, _ = rows[0].shape
    canvas = np.full((TITLE_H + 3 * h + 2 * gap, LABEL_W + t * w + (t - 1) * gap, 3), 255, np.uint8)
    for r, frames in enumerate(rows):
        top = TITLE_H + r * (h + gap)
        for i in range(t):
            left = LABEL_W + i * (w + gap)
            canvas[top:top + h, left:left + w] = frames[i]
        canvas = _text(canvas, (4, top + h // 2 - 5), ROWS[r])
    if title:
        canvas = _text(canvas, (LABEL_W, 2), title)
    Image.fromarray(canvas).save(path)
    return Path(path)


def animation_gif(views: dict[str, torch.Tensor], path: str | Path, index: int = 0, fps: int = 4,
                  gap: int = 2) -> Path:
    """Each GIF frame: original | masked | reconstruction side by side, each labeled above."""
    cols = [_upscale(_to_uint8(views[k][index])) for k in ROWS]
    t, h, w, _ = cols[0].shape
    header = np.full((TITLE_H, 3 * w + 2 * gap, 3), 255, np.uint8)
    for c, name in enumerate(ROWS):
        header = _text(header, (c * (w + gap) + 2, 2), name)
    images = []
    for i in range(t):
        canvas = np.full((TITLE_H + h, 3 * w + 2 * gap, 3), 255, np.uint8)
        canvas[:TITLE_H] = header
        for c, frames in enumerate(cols):
            canvas[TITLE_H:, c * (w + gap):c * (w + gap) + w] = frames[i]
        images.append(Image.fromarray(canvas))
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return Path(path)


def load_clip(path: str, num_frames: int, sampling_rate: int, input_size: int) -> torch.Tensor:
    """A centered clip of `num_frames` frames every `sampling_rate`, short side resized to `input_size`,
    center-cropped, ImageNet-normalized -> [3, T, S, S]. Raises VideoReadError for unusable files."""
    from videomae.data import sampling
    from videomae.data import transforms as TF
    from videomae.data.decode import read_frames

    (frames,) = read_frames(path, lambda n: [sampling.dense_test(n, num_frames, sampling_rate, 0, 1)])
    clip = TF.as_tchw(frames)
    h, w = TF.short_side_hw(clip.shape[-2], clip.shape[-1], input_size)
    clip = TF.resize(clip, (h, w))
    return TF.normalize(TF.crop_resize(clip, TF.center_crop_box(h, w, input_size), input_size))


def preview_mask(model: torch.nn.Module, videos: torch.Tensor, mask_type: str, mask_ratio: float,
                 seed: int = 0) -> torch.Tensor:
    """A mask drawn from its own generator: pictures never disturb the training RNG."""
    grid = model.encoder.patch_embed.grid(videos.shape)
    return make_mask(mask_type, videos.shape[0], grid, mask_ratio, torch.Generator().manual_seed(seed))


def save_reconstruction(model: torch.nn.Module, videos: torch.Tensor, mask: torch.Tensor, png: str | Path | None,
                        gif: str | Path | None = None, fps: int = 4, mask_type: str | None = None,
                        ) -> dict[str, torch.Tensor]:
    views = reconstruct(model, videos, mask)
    if png is not None:
        grid_png(views, png, title=caption(model, mask, mask_type))
    if gif is not None:
        animation_gif(views, gif, fps=fps)
    return views


def main(args) -> list[Path]:
    """`videomae visualize`: writes OUTPUT_DIR/<video stem>.png and .gif, prints their paths."""
    from videomae.checkpoint import load_checkpoint
    from videomae.data.decode import VideoReadError
    from videomae.registry import create_model

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    depth = {} if args.decoder_depth is None else {"decoder_depth": args.decoder_depth}
    model = create_model(args.model, num_frames=args.num_frames, img_size=args.input_size,
                         tubelet_size=args.tubelet_size, normalize_target=args.normlize_target, **depth)
    if args.checkpoint:
        report = load_checkpoint(model, args.checkpoint)
        if report.missing:
            raise ValueError(f"--checkpoint {args.checkpoint} does not fit {args.model} (missing "
                             f"{', '.join(report.missing[:4])}); pass the matching --model / --decoder_depth")
    else:
        print("no --checkpoint given: reconstructing with randomly initialized weights")
    model = model.to(device)
    try:
        clip = load_clip(args.video, args.num_frames, args.sampling_rate, args.input_size)[None].to(device)
    except VideoReadError as err:
        raise ValueError(f"--video {args.video}: {err.reason}") from None
    mask = preview_mask(model, clip, args.mask_type, args.mask_ratio, seed=args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.video).stem
    png, gif = out / f"{stem}.png", out / f"{stem}.gif"
    save_reconstruction(model, clip, mask, png, gif, fps=args.fps, mask_type=args.mask_type)
    print(f"wrote original | masked | reconstruction:\n  {png}\n  {gif}")
    return [png, gif]
