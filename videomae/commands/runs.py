"""Checks on the run folder and the TrainState to resume, made before a run changes anything on disk."""

from __future__ import annotations

import os
from pathlib import Path

from videomae.commands._common import fail, say


def check_run_folder(args) -> None:
    """A folder another live run holds is refused, naming it. A used --output_dir needs --resume or --overwrite.
    --resume auto takes the newest *valid* checkpoint (saying which, and which newer ones it skipped), or starts a
    new run where none was saved yet (a run killed before its first checkpoint leaves only its logs); a folder whose
    checkpoints are all unreadable, or that holds exported weights, is not started over without --overwrite. A
    resume must keep the model and input geometry and states any change of schedule. Sets `args.resume_from`
    (None: a new run)."""
    from videomae.train import lock, state

    out = Path(args.output_dir)
    try:
        lock.check(out)
    except lock.FolderInUse as err:
        fail(args, str(err))
    used = state.run_files(out)
    args.resume_from = None
    if not args.resume:
        if used and not args.overwrite:
            names = ", ".join(p.name for p in used[:3]) + (", ..." if len(used) > 3 else "")
            fail(args, f"--output_dir {out} holds an earlier run ({names}): pass --resume auto to continue it, "
                 "--overwrite to replace it, or choose another --output_dir")
        return
    if args.resume == "auto":
        path, skipped = state.newest_valid(out)
        for bad, why in skipped:
            say(f"--resume auto: skipping {bad}: {why}")
        if path is None:
            weights = [p.name for p in used if p.name in ("model.pth", "model.safetensors")]
            if skipped or weights:
                what = f"{len(skipped)} unreadable checkpoint(s)" if skipped else f"exported weights ({weights[0]})"
                fail(args, f"--resume auto: {out} holds an earlier run with {what} and no valid checkpoint: pass "
                     "--overwrite to start over there, or choose another --output_dir")
            if used:
                say(f"--resume auto: no checkpoint in {out} (the earlier run saved none): starting a new run there")
            else:
                say(f"--resume auto: no checkpoint in {out} yet: starting a new run")
            return
        say(f"--resume auto: continuing from {path}")
    else:
        path = Path(args.resume)
        try:
            state.read(path)
        except state.UnreadableCheckpoint as err:
            fail(args, f"--resume {err}")
    if int(os.environ.get("WORLD_SIZE", "1")) != state.read(path)["world_size"]:
        fail(args, f"--resume {path}: written by {state.read(path)['world_size']} process(es), this run has "
             f"{os.environ.get('WORLD_SIZE', '1')}: the data order would differ; resume with the same world size")
    bad, changed = state.compare_args(state.read(path)["args"], args)
    if bad:
        fail(args, f"--resume {path}: the checkpoint's run had other {'; '.join(bad)}: resume with the same "
             "values, or start a new run in another --output_dir")
    if changed:
        say(f"--resume {path}: schedule changed since the checkpoint: {'; '.join(changed)}")
    args.resume_from = str(path)


def check_weights(args, name: str) -> None:
    """A weights flag (`--init`, `--finetune`, `--checkpoint`): the file or HF folder exists and reads."""
    from videomae.commands._common import need_file

    need_file(args, name, "weights", weights=True)
    from videomae.checkpoint import read_checkpoint

    try:
        read_checkpoint(getattr(args, name))
    except ValueError as err:
        fail(args, f"--{name} {str(err).splitlines()[0]}")


def check_fits(args, name: str, build) -> None:
    """The weights fit the model this run builds (`build()`, made on the meta device: no memory, no init)."""
    import torch

    from videomae.checkpoint import fitted_state_dict

    with torch.device("meta"):
        model = build()
    try:
        fitted_state_dict(model, getattr(args, name))
    except ValueError as err:
        fail(args, f"--{name} {str(err).splitlines()[0]}")


def steps_check(args, num_videos: int, clips_per_video: int = 1) -> None:
    """At least one optimizer step per epoch, as the loop will count them (per rank, full batches only)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_rank = -(-num_videos // world)
    if per_rank // args.batch_size // args.accum_iter < 1:
        fail(args, f"{num_videos} videos make no full step of --batch_size {args.batch_size} x --accum_iter "
             f"{args.accum_iter} x {world} process(es)")


def model_from_weights(args, name: str, kind: str) -> None:
    """`--model` absent: the model (and clip geometry not given) stored with the weights, else guessed from
    their shapes. One line when neither works."""
    from videomae.checkpoint import guess_model, read_checkpoint, stored_args, unwrap

    path = getattr(args, name)
    stored = stored_args(path)
    geometry = ("input_size", "num_frames", "tubelet_size")
    for key in geometry:
        if key in stored and key not in args._explicit and stored[key] is not None:
            setattr(args, key, int(stored[key]))
    if args.model is not None:
        return
    model = stored.get("model")
    if isinstance(model, str) and model.startswith("pretrain_") and kind == "vit":
        model = model.replace("pretrain_videomae_", "vit_")
    if not (isinstance(model, str) and model.startswith(kind)):
        from videomae.interop.hf import hf_to_official, is_hf_state_dict

        sd = unwrap(read_checkpoint(path), str(path))
        model = guess_model(hf_to_official(sd)[0] if is_hf_state_dict(sd) else sd, kind)
    if model is None:
        fail(args, f"--model is needed: {path} stores no model name and its size is not a registered one")
    args.model = model
    say(f"--model {model} (from {path})")
