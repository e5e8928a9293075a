"""Training machinery behind `videomae pretrain` and `videomae finetune`, one piece per module:
`step` (the step and its switches), `trainer` (the Trainer that owns a run: `fit`, `state_dict`), `recipe` (what
a run trains: model, loss, data, optimizer groups, schedule), `pretrain` / `finetune` (each command's recipe),
`run` (the process and the run folder, signals), `state` (checkpoint files), `lock` (the run folder's lock),
`evaluate`, `classifier`, `schedule`, `optim`, `distributed`, `logs`, `plots`."""
