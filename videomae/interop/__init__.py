"""Other VideoMAE implementations and where their weights live: Hugging Face transformers (`hf`: key mapping and
config.json <-> our models), MAE-ST (`mae_st`), the Hugging Face Hub (`hub`: ids fetched through huggingface_hub)
and HF model folders or Hub ids into built, loaded models (`pretrained`: `from_pretrained`, `build_for_weights`)."""

from videomae.interop.hf import hf_to_official, official_to_hf
from videomae.interop.mae_st import mae_st_to_official

__all__ = ["hf_to_official", "mae_st_to_official", "official_to_hf"]
