"""VideoMAE pretraining model: an encoder over visible cubes and a shallow decoder over mask tokens.

Module names follow the official checkpoints (`encoder.patch_embed.proj`, `encoder.blocks.{i}`,
`encoder.norm`, `encoder_to_decoder`, `mask_token`, `decoder.blocks.{i}`, `decoder.norm`,
`decoder.head`), so official state dicts load without renaming. Positional tables are regenerated
per token grid and never stored.
"""

from __future__ import annotations

import torch
from torch import nn

from videomae import ops
from videomae.layers import Block, CubeEmbed, run_blocks, sinusoid_table, stochastic_depth, table_for_grid
from videomae.masking import TokenIds, check_mask, token_ids


def _xavier_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def trunc_normal_std_(t: torch.Tensor, std: float) -> torch.Tensor:
    """The official `trunc_normal_`: normal(0, std) truncated at ±1 std (not timm's ±2 absolute)."""
    return nn.init.trunc_normal_(t, mean=0.0, std=std, a=-std, b=std)


class PretrainEncoder(nn.Module):
    def __init__(
        self, *, img_size, patch_size, num_frames, tubelet_size, in_chans, embed_dim, depth, num_heads, mlp_ratio,
        qkv_bias, drop_rate, attn_drop_rate, drop_path_rate, init_values, norm_eps, use_learnable_pos_emb,
        grad_checkpointing,
    ):
        super().__init__()
        self.patch_embed = CubeEmbed(patch_size, tubelet_size, in_chans, embed_dim)
        self.grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        n = self.grid[0] * self.grid[1] * self.grid[2]
        if use_learnable_pos_emb:
            self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
        else:
            self.pos_embed = None
            self.register_buffer("pos_table", sinusoid_table(n, embed_dim), persistent=False)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dp, init_values, norm_eps)
            for dp in stochastic_depth(drop_path_rate, depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.grad_checkpointing = grad_checkpointing
        self.apply(_xavier_init)
        if use_learnable_pos_emb:
            trunc_normal_std_(self.pos_embed, 0.02)

    def pos(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """[1, T'H'W', D] for the token grid of the clip at hand."""
        if self.pos_embed is not None:
            return table_for_grid(self.pos_embed, self.grid, grid, learnable=True)
        # The official model feeds the fixed table detached: it is a constant, never trained.
        return table_for_grid(self.pos_table, self.grid, grid, learnable=False)

    def forward(self, videos: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """videos: [B, C, T, H, W], visible: [B, N_vis] int64 token ids -> [B, N_vis, D]"""
        x = self.patch_embed(videos, visible, self.pos(self.patch_embed.grid(videos.shape)))
        x = run_blocks(self.blocks, x, self.grad_checkpointing)
        return self.norm(x)


class PretrainDecoder(nn.Module):
    def __init__(
        self, *, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, out_dim, drop_rate, attn_drop_rate,
        drop_path_rate, init_values, norm_eps, final_norm_eps, grad_checkpointing,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dp, init_values, norm_eps)
            for dp in stochastic_depth(drop_path_rate, depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=final_norm_eps)
        self.head = nn.Linear(embed_dim, out_dim)
        self.grad_checkpointing = grad_checkpointing
        self.apply(_xavier_init)

    def forward(self, x: torch.Tensor, num_return: int) -> torch.Tensor:
        """x: [B, N_vis + N_dec, Dd] -> predictions for the last `num_return` tokens [B, N_dec, out_dim]"""
        x = run_blocks(self.blocks, x, self.grad_checkpointing)
        return self.head(self.norm(x[:, -num_return:]))


class PretrainVisionTransformer(nn.Module):
    """VideoMAE (V1/V2) pretraining model.

    forward(videos [B, 3, T, H, W], ids: TokenIds) -> pred [B, N_dec, 3*t*p*p] for the cubes `ids.decoded`
    (V1: the masked ones; V2: those the decode mask keeps), in raster order, each cube flattened as (t, p, p, c)
    with channel fastest. Every op is a `videomae.ops` call: the `torch` backend is the eager reference
    (`with ops.use_backend("torch"):`), the fused backends the fast path.

    `grad_checkpointing` recomputes the blocks' activations in backward (official name: `use_checkpoint`).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        encoder_embed_dim: int = 768,
        encoder_depth: int = 12,
        encoder_num_heads: int = 12,
        decoder_embed_dim: int = 384,
        decoder_depth: int = 4,
        decoder_num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        init_values: float = 0.0,
        norm_eps: float = 1e-6,
        decoder_norm_eps: float | None = None,
        use_learnable_pos_emb: bool = False,
        grad_checkpointing: bool = False,
        normalize_target: bool = True,
        use_checkpoint: bool | None = None,
    ):
        super().__init__()
        # `use_checkpoint`: the official name of grad_checkpointing. Which kernels run is the ops' dispatch
        # (`videomae.dispatch.use_backend`), not the model's.
        grad_checkpointing = grad_checkpointing or bool(use_checkpoint)
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        self.normalize_target = normalize_target
        self.encoder = PretrainEncoder(
            img_size=img_size, patch_size=patch_size, num_frames=num_frames, tubelet_size=tubelet_size,
            in_chans=in_chans, embed_dim=encoder_embed_dim, depth=encoder_depth, num_heads=encoder_num_heads,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, init_values=init_values, norm_eps=norm_eps,
            use_learnable_pos_emb=use_learnable_pos_emb, grad_checkpointing=grad_checkpointing,
        )
        self.decoder = PretrainDecoder(
            embed_dim=decoder_embed_dim, depth=decoder_depth, num_heads=decoder_num_heads, mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias, out_dim=in_chans * tubelet_size * patch_size**2, drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, init_values=init_values,
            # Hugging Face keeps the blocks at `norm_eps` but builds `decoder.norm` with eps 1e-5.
            norm_eps=norm_eps, final_norm_eps=norm_eps if decoder_norm_eps is None else decoder_norm_eps,
            grad_checkpointing=grad_checkpointing,
        )
        # Not covered by the encoder/decoder inits: keeps PyTorch's default Linear init, as the official model.
        self.encoder_to_decoder = nn.Linear(encoder_embed_dim, decoder_embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        trunc_normal_std_(self.mask_token, 0.02)
        n = self.encoder.grid[0] * self.encoder.grid[1] * self.encoder.grid[2]
        self.register_buffer("decoder_pos_table", sinusoid_table(n, decoder_embed_dim), persistent=False)

    # --------------------------------------------------------------------------
    # forward: encoder (visible cubes) -> decoder input (visible rows, then mask tokens) -> decoder -> loss

    def forward(
        self, videos: torch.Tensor, ids: TokenIds | torch.Tensor, decode_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """videos: [B, C, T, H, W]; ids: `TokenIds` (validated ones cost nothing; see `token_ids` below), or a Bool
        mask [B, N] True = masked, with an optional V2 decode_mask [B, N] True = not decoded (converted by
        `masking.token_ids`: it syncs, keep it out of a step) -> pred [B, N_dec, C*t*p*p]"""
        ids = self.token_ids(videos, ids, decode_mask)
        x_vis = self.encoder_to_decoder(self.encoder(videos, ids.visible))
        pos = table_for_grid(self.decoder_pos_table, self.encoder.grid, self.encoder.patch_embed.grid(videos.shape),
                             learnable=False)
        x = ops.decoder_input(x_vis, self.mask_token, pos, ids.visible, ids.decoded)
        return self.decoder(x, ids.decoded.shape[1])

    def forward_loss(
        self, videos: torch.Tensor, pred: torch.Tensor, ids: TokenIds | torch.Tensor,
        decode_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalized-pixel MSE over the reconstructed cubes (fp32) -> scalar; ids as in `forward`."""
        ids = self.token_ids(videos, ids, decode_mask)
        return ops.norm_pix_mse(pred, videos, ids.decoded, ids.scored, tubelet_size=self.tubelet_size,
                                patch_size=self.patch_size, normalize_target=self.normalize_target)

    def token_ids(self, videos: torch.Tensor, ids: TokenIds | torch.Tensor,
                  decode_mask: torch.Tensor | None = None) -> TokenIds:
        """The boundary for ids: `TokenIds` validated for this clip's grid pass as they are (an int compare, no
        host sync); ids built by hand are validated here (`TokenIds.validated`: a host read, a device wait for GPU
        tensors, refused inside torch.compile); Bool masks are checked and converted once by `token_ids`."""
        t, h, w = self.encoder.patch_embed.grid(videos.shape)
        n = t * h * w
        if isinstance(ids, TokenIds):
            if decode_mask is not None:
                raise ValueError("decode_mask must be None when ids are TokenIds (they carry the decoded ids)")
            if ids.validated_for is None:
                if torch.compiler.is_compiling():
                    raise ValueError("ids must be validated before a compiled step: make them with masking.token_ids "
                                     "or TokenIds.validated(num_tokens) where the batch is made")
                return ids.validated(n)
            if ids.validated_for != n:
                raise ValueError(f"ids were validated for {ids.validated_for} tokens, the clip has {n} ({t}x{h}x{w})")
            return ids
        check_mask(ids, videos.shape[0], n, "mask")
        if decode_mask is not None:
            check_mask(decode_mask, videos.shape[0], n, "decode_mask")
        return token_ids(ids, decode_mask)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token", "encoder.pos_embed"}
