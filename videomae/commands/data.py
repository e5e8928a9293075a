"""`videomae data synth|prep`: dataset tools."""

from __future__ import annotations

from videomae.commands import _common as c

NAME = "data"
USAGE = None  # argparse's own: the tools' parsers build their names from it
HELP = "dataset tools (`videomae data synth`, `videomae data prep`)"
DESCRIPTION = "Dataset tools."


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="TOOL", parser_class=c.Parser)
    sub.required = True
    s = sub.add_parser("synth", help="write the built-in synthetic motion dataset (H.264 mp4 + list files)",
                       description="Write the synthetic temporal dataset: textured shapes whose class is their "
                       "motion; train.txt / val.txt / classes.txt in the official `path label` format.")
    c.flag(s, "--output_dir", "--root", dest="output_dir", default="data/synth", help="dataset folder")
    c.flag(s, "--num_train", type=int, default=160, help="training videos")
    c.flag(s, "--num_val", type=int, default=40, help="validation videos")
    c.flag(s, "--num_test", type=int, default=0, help="test videos (styles ssm, tiles and motion only: an "
           "untouched test split)")
    c.flag(s, "--num_frames", type=int, default=32, help="frames per video")
    c.flag(s, "--size", type=int, default=64, help="frame height and width (even)")
    c.flag(s, "--fps", type=int, default=25, help="frames per second")
    c.flag(s, "--seed", type=int, default=0, help="seed (same seed, same pixels)")
    c.flag(s, "--style", default="texture", help="texture: gratings and striped shapes; smooth: low-frequency "
           "backgrounds and two-tone shapes (both H.264); ssm: a miniature Something-Something, 12 classes in "
           "time-reversal pairs; tiles: the demo's clips, a background repeating every 16 px under a sliding striped "
           "shape; motion: the study's clips, three textured objects drifting 2-4 px per sampled frame over a textured "
           "background, their direction the class (ssm, tiles and motion are stored as raw uint8 .npy clips, no "
           "codec)")
    from videomae.data import prep

    q = sub.add_parser("prep", help="re-encode a dataset's videos for fast decoding: train/val/test lists + manifest",
                       description=(prep.__doc__ or "").strip(), usage="%(prog)s INPUT [INPUT ...] --output_dir DIR "
                       "[flags]")
    prep.add_prep_arguments(q)


def check(args) -> None:
    if args.data_command == "prep":
        from videomae.data.prep import PrepError, resolve

        try:
            args.splits = resolve(args)
        except PrepError as err:
            raise c.UsageError(f"videomae data prep: error: {err}") from None
        return
    if args.data_command == "synth":
        from videomae.data.synth import RAW_STYLES, STYLES

        if args.style not in STYLES:
            c.fail(args, f"--style {args.style}: choose from {', '.join(STYLES)}")
        if args.size % 2 and args.style not in RAW_STYLES:
            c.fail(args, f"--size must be even (H.264 yuv420p), got {args.size}")
        if args.num_test and args.style not in RAW_STYLES:
            c.fail(args, f"--num_test: only --style {' and '.join(RAW_STYLES)} have a test split, got --style "
                   f"{args.style}")
        c.check_positive(args, "num_train", "num_frames", "size", "fps")


def run(args) -> int:
    if args.data_command == "prep":
        from videomae.data.prep import run_prep

        return run_prep(args, args.splits)
    from videomae.data.synth import write_synthetic_dataset

    paths = write_synthetic_dataset(args.output_dir, num_train=args.num_train, num_val=args.num_val,
                                    num_frames=args.num_frames, size=args.size, fps=args.fps, seed=args.seed,
                                    style=args.style, num_test=args.num_test)
    print("wrote " + ", ".join(f"{k}: {v}" for k, v in paths.items()))
    return 0
