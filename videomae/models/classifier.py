"""VideoMAE fine-tuning model: a ViT over all cubes, mean-pooled, `fc_norm`, dropout, linear head.

Module names follow the official fine-tuned checkpoints (`patch_embed.proj`, `blocks.{i}`,
`fc_norm`, `head`); the fixed positional table is regenerated, never stored.
"""

from __future__ import annotations

import torch
from torch import nn

from videomae.layers import Block, CubeEmbed, run_blocks, sinusoid_table, stochastic_depth, table_for_grid
from videomae.models.pretrain import trunc_normal_std_


def _trunc_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_std_(m.weight, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class VisionTransformer(nn.Module):
    """forward(videos [B, 3, T, H, W]) -> logits [B, num_classes]"""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        num_classes: int = 400,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        fc_drop_rate: float = 0.0,
        init_values: float = 0.0,
        init_scale: float = 0.001,
        norm_eps: float = 1e-6,
        fc_norm_eps: float | None = None,
        use_learnable_pos_emb: bool = False,
        grad_checkpointing: bool = False,
        use_checkpoint: bool | None = None,
    ):
        super().__init__()
        # `use_checkpoint`: the official name of grad_checkpointing.
        grad_checkpointing = grad_checkpointing or bool(use_checkpoint)
        self.num_classes = num_classes
        self.patch_embed = CubeEmbed(patch_size, tubelet_size, in_chans, embed_dim)
        self.grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        n = self.grid[0] * self.grid[1] * self.grid[2]
        if use_learnable_pos_emb:
            self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
        else:
            self.pos_embed = None
            self.register_buffer("pos_table", sinusoid_table(n, embed_dim), persistent=False)
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dp, init_values, norm_eps)
            for dp in stochastic_depth(drop_path_rate, depth)
        )
        # Hugging Face builds `fc_norm` with eps 1e-5 whatever its blocks use; official: `norm_eps`.
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps if fc_norm_eps is None else fc_norm_eps)
        self.fc_dropout = nn.Dropout(fc_drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.grad_checkpointing = grad_checkpointing
        if use_learnable_pos_emb:
            trunc_normal_std_(self.pos_embed, 0.02)
        self.apply(_trunc_init)
        if num_classes > 0:
            # A near-zero head keeps the first fine-tuning steps from disturbing the pretrained features.
            self.head.weight.data.mul_(init_scale)
            self.head.bias.data.mul_(init_scale)

    def pos(self, grid: tuple[int, int, int]) -> torch.Tensor:
        if self.pos_embed is not None:
            return table_for_grid(self.pos_embed, self.grid, grid, learnable=True)
        return table_for_grid(self.pos_table, self.grid, grid, learnable=False)

    def forward_tokens(self, videos: torch.Tensor) -> torch.Tensor:
        """videos: [B, C, T, H, W] -> the last block's tokens [B, N, D], (t, h, w) raster order"""
        grid = self.patch_embed.grid(videos.shape)
        x = self.pos_drop(self.patch_embed(videos, pos=self.pos(grid)))
        return run_blocks(self.blocks, x, self.grad_checkpointing)

    def forward_features(self, videos: torch.Tensor) -> torch.Tensor:
        """videos: [B, C, T, H, W] -> pooled features [B, D]"""
        return self.fc_norm(self.forward_tokens(videos).mean(dim=1))

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc_dropout(self.forward_features(videos)))

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter grouping, with the official fine-tuning layer ids: the embedding 0, block i i + 1, the
        rest (fc_norm, head) last; `timm.optim.param_groups_layer_decay` / `create_optimizer_v2(layer_decay=...)`
        read it."""
        return {"stem": r"^cls_token|^pos_embed|^patch_embed", "blocks": [(r"^blocks\.(\d+)", None)]}
