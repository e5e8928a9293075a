"""`python -m videomae ...` (so `torchrun -m videomae ...` works)."""

from videomae.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
