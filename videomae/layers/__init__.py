"""Building blocks shared by the pretraining and classification models, one concept per file."""

from videomae.layers.attention import Attention
from videomae.layers.block import Block, Mlp, run_blocks, stochastic_depth
from videomae.layers.drop import DropPath
from videomae.layers.patch_embed import CubeEmbed
from videomae.layers.pos_embed import resize_pos_embed, sinusoid_table, table_for_grid

__all__ = [
    "Attention", "Block", "CubeEmbed", "DropPath", "Mlp", "resize_pos_embed", "run_blocks", "sinusoid_table",
    "stochastic_depth", "table_for_grid",
]
