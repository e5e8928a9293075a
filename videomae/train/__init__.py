"""Training machinery behind the `videomae` command: optimizer and schedule (official recipes),
the pretrain/finetune/eval loops, resumable checkpoints, distributed setup, progress and plots."""
