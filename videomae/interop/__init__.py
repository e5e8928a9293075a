"""Converters from other VideoMAE implementations' state dicts to the official layout our models use."""

from videomae.interop.hf import from_pretrained, hf_to_official, model_from_hf_config, official_to_hf
from videomae.interop.mae_st import mae_st_to_official

__all__ = ["from_pretrained", "hf_to_official", "mae_st_to_official", "model_from_hf_config", "official_to_hf"]
