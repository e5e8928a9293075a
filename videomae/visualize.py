"""Reconstruction pictures: original | masked | reconstruction, as a PNG grid and an animated GIF.

Un-normalization follows the official `run_videomae_vis.py`: the clip is ImageNet-un-normalized to
[0, 1], cut into cubes, each cube normalized with its own per-channel mean and unbiased std; the
decoder's predictions overwrite the masked cubes; each cube is mapped back with *its own* statistics
`x * (std + 1e-6) + mean`; the cubes are folded back into frames. So a masked cube's colour and contrast are
the original clip's, and only its pattern is the model's: the picture says so in its title.

`raw=True` (`videomae visualize --raw`) shows the model's output as it is instead: the per-cube normalized
target and the prediction in the same units z, drawn by one fixed affine, `raw_display(z) = 0.5 + z / 6`
(-3 to +3 standard deviations of a cube span black to white), with no statistics of the original clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.masking import make_mask
from videomae.ops.norm_pix_mse import patchify

MASK_SHADE = 0.35  # masked cubes are drawn in this gray, so holes are visible on dark and light frames
RAW_CENTER, RAW_SPAN = 0.5, 6.0  # raw_display: z -> RAW_CENTER + z / RAW_SPAN
LABEL_W, TITLE_H = 104, 16  # the pictures' row-label column and the GIF's label band, in pixels
LINE_H = 12  # one line of the PNG's title

UNNORMALIZED = ("Reconstruction: each masked cube's colour and contrast (its per-channel mean and std) come from "
                "the original clip, as the official code un-normalizes; the model predicts only the normalized "
                "pattern (--raw shows the prediction as it is).")
RAW_NORMALIZED = (f"--raw: target and prediction in the model's per-cube normalized units z, drawn as "
                  f"{RAW_CENTER:g} + z/{RAW_SPAN:g} (black to white: -3 to +3 std of each cube); masked cubes hold "
                  f"the prediction, nothing is taken from the original clip.")
PIXELS = "The masked cubes show the predicted pixels as they are (the model regresses raw pixels)."


def _text(canvas: np.ndarray, xy: tuple[int, int], text: str) -> np.ndarray:
    """Black text drawn onto a uint8 [H, W, 3] canvas with PIL's built-in font."""
    image = Image.fromarray(canvas)
    ImageDraw.Draw(image).text(xy, text, fill=(0, 0, 0))
    return np.asarray(image).copy()


def wrap(text: str, width: int) -> list[str]:
    """Words of `text` in lines at most `width` pixels wide in PIL's built-in font (a longer word stands alone)."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(trial) <= width:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines


def caption(model, mask: torch.Tensor, mask_type: str | None = None, raw: bool = False) -> str:
    """The picture's title: 'mask ratio 0.90 (tube), target: per-cube normalized pixels.' and what the
    reconstruction row shows (where its colours come from)."""
    ratio = mask.float().mean().item()
    normalized = getattr(model, "normalize_target", True)
    target = "per-cube normalized pixels" if normalized else "raw pixels"
    head = f"mask ratio {ratio:.2f}" + (f" ({mask_type})" if mask_type else "") + f", target: {target}."
    return f"{head} {(RAW_NORMALIZED if raw else UNNORMALIZED) if normalized else PIXELS}"


def raw_display(z: torch.Tensor) -> torch.Tensor:
    """Per-cube normalized values -> display values in [0, 1]: `RAW_CENTER + z / RAW_SPAN`, clamped."""
    return (RAW_CENTER + z / RAW_SPAN).clamp(0, 1)


def unnormalize(videos: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalized [B, 3, T, H, W] -> pixels in [0, 1] (fp32)."""
    m = torch.tensor(IMAGENET_MEAN, device=videos.device).view(1, 3, 1, 1, 1)
    s = torch.tensor(IMAGENET_STD, device=videos.device).view(1, 3, 1, 1, 1)
    return videos.float() * s + m


@torch.no_grad()
def reconstruct(model: torch.nn.Module, videos: torch.Tensor, mask: torch.Tensor,
                raw: bool = False) -> dict[str, torch.Tensor]:
    """videos [B, 3, T, H, W] ImageNet-normalized, mask Bool [B, N] True = masked -> views [B, 3, T, H, W] in
    [0, 1], in the pictures' row order: 'original', 'masked' (masked cubes grey), then 'reconstruction' (the
    official per-cube un-normalization), or with `raw` 'target' and 'prediction' in the model's target units
    (per-cube normalized: through `raw_display`; raw pixels: as they are), visible cubes showing the target."""
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
        target = (cubes - mean) / (std + 1e-6)
    else:
        target = cubes
    filled = target.clone()
    filled[mask] = pred.reshape(-1, *pred.shape[2:])
    shaded = cubes.clone()
    shaded[mask] = MASK_SHADE
    fold = lambda x: rearrange(x, "b (t h w) (p0 p1 p2) c -> b c (t p0) (h p1) (w p2)",
                               t=grid[0], h=grid[1], w=grid[2], p0=t, p1=p, p2=p).clamp(0, 1)
    views = {"original": pixels.clamp(0, 1), "masked": fold(shaded)}
    if raw:
        show = raw_display if model.normalize_target else (lambda x: x)
        views.update(target=fold(show(target)), prediction=fold(show(filled)))
    else:
        views["reconstruction"] = fold(filled * (std + 1e-6) + mean if model.normalize_target else filled)
    return views


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] in [0, 1] -> uint8 [T, H, W, 3]"""
    return (x.permute(1, 2, 3, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def _upscale(frames: np.ndarray, min_side: int = 160) -> np.ndarray:
    """Nearest-neighbour enlargement of small clips, so cube edges stay visible in the pictures."""
    k = max(1, -(-min_side // frames.shape[1]))
    return frames.repeat(k, axis=1).repeat(k, axis=2) if k > 1 else frames


def grid_png(views: dict[str, torch.Tensor], path: str | Path, index: int = 0, gap: int = 2,
             title: str = "") -> Path:
    """One row per view (labeled at the left), one column per frame, `title` wrapped on top and stored as the
    PNG's 'Title' text."""
    names = list(views)
    rows = [_upscale(_to_uint8(views[k][index])) for k in names]
    t, h, w, _ = rows[0].shape
    width = LABEL_W + t * w + (t - 1) * gap
    lines = wrap(title, width - 8)
    top0 = 4 + LINE_H * len(lines) if lines else 0
    canvas = np.full((top0 + len(rows) * h + (len(rows) - 1) * gap, width, 3), 255, np.uint8)
    for r, frames in enumerate(rows):
        top = top0 + r * (h + gap)
        for i in range(t):
            left = LABEL_W + i * (w + gap)
            canvas[top:top + h, left:left + w] = frames[i]
        canvas = _text(canvas, (4, top + h // 2 - 5), names[r])
    for i, line in enumerate(lines):
        canvas = _text(canvas, (4, 2 + i * LINE_H), line)
    info = PngInfo()
    if title:
        info.add_text("Title", title)
    Image.fromarray(canvas).save(path, pnginfo=info)
    return Path(path)


def animation_gif(views: dict[str, torch.Tensor], path: str | Path, index: int = 0, fps: int = 4,
                  gap: int = 2, title: str = "") -> Path:
    """Each GIF frame: the views side by side, each labeled above; `title` as the GIF's comment."""
    names = list(views)
    cols = [_upscale(_to_uint8(views[k][index])) for k in names]
    t, h, w, _ = cols[0].shape
    width = len(cols) * w + (len(cols) - 1) * gap
    header = np.full((TITLE_H, width, 3), 255, np.uint8)
    for c, name in enumerate(names):
        header = _text(header, (c * (w + gap) + 2, 2), name)
    images = []
    for i in range(t):
        canvas = np.full((TITLE_H + h, width, 3), 255, np.uint8)
        canvas[:TITLE_H] = header
        for c, frames in enumerate(cols):
            canvas[TITLE_H:, c * (w + gap):c * (w + gap) + w] = frames[i]
        images.append(Image.fromarray(canvas))
    extra = {"comment": title.encode()} if title else {}
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0, **extra)
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
                        raw: bool = False) -> dict[str, torch.Tensor]:
    views = reconstruct(model, videos, mask, raw=raw)
    title = caption(model, mask, mask_type, raw=raw)
    if png is not None:
        grid_png(views, png, title=title)
    if gif is not None:
        animation_gif(views, gif, fps=fps, title=title)
    return views


def main(args) -> list[Path]:
    """`videomae visualize`: writes OUTPUT_DIR/<video stem>.png and .gif, prints their paths."""
    from videomae.checkpoint import load_checkpoint
    from videomae.data.decode import VideoReadError
    from videomae.interop.pretrained import build_for_weights  # an HF folder / Hub id: its config's model

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    depth = {} if args.decoder_depth is None else {"decoder_depth": args.decoder_depth}
    model = build_for_weights(args.checkpoint, args.model, given=getattr(args, "_explicit", None),
                              num_frames=args.num_frames, img_size=args.input_size, tubelet_size=args.tubelet_size,
                              normalize_target=args.normlize_target, **depth)
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
    raw = getattr(args, "raw", False)
    views = save_reconstruction(model, clip, mask, png, gif, fps=args.fps, mask_type=args.mask_type, raw=raw)
    print(f"wrote {' | '.join(views)}:\n  {png}\n  {gif}")
    return [png, gif]
