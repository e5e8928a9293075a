"""One module per `videomae` subcommand, each with `NAME`, `HELP`, `add_arguments(parser)`, `check(args)`
(everything that can be validated before any file changes) and `run(args) -> exit status`."""

from videomae.commands import bench, data, evaluate, export, extract, finetune, info, predict, pretrain, visualize

SUBCOMMANDS = (pretrain, finetune, evaluate, visualize, extract, predict, export, info, bench, data)

__all__ = ["SUBCOMMANDS"]
