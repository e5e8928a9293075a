"""Pure state-dict mappings from other VideoMAE implementations to the official layout our models use.
Building models from their configs and reading files live in `videomae.checkpoint`."""

from videomae.interop.hf import hf_to_official, official_to_hf
from videomae.interop.mae_st import mae_st_to_official

__all__ = ["hf_to_official", "mae_st_to_official", "official_to_hf"]
