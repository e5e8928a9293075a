"""Registered factories with every size hyperparameter spelled out (official values).

Pretraining decoder depth defaults to 4 as in the official pretraining scripts (which pass 12 for
large/huge in some recipes: use `decoder_depth=12`). ViT-g (VideoMAE V2) uses patch 14 and MLP 6144.
"""

from __future__ import annotations

from videomae.models.classifier import VisionTransformer
from videomae.models.pretrain import PretrainVisionTransformer
from videomae.registry import register_model


def _pretrain(overrides: dict, **defaults) -> PretrainVisionTransformer:
    return PretrainVisionTransformer(**{"decoder_depth": 4, **defaults, **overrides})


def _classifier(overrides: dict, **defaults) -> VisionTransformer:
    return VisionTransformer(**{**defaults, **overrides})


@register_model
def pretrain_videomae_small_patch16_224(**overrides) -> PretrainVisionTransformer:
    return _pretrain(overrides, img_size=224, patch_size=16, encoder_embed_dim=384, encoder_depth=12,
                     encoder_num_heads=6, decoder_embed_dim=192, decoder_num_heads=3, mlp_ratio=4.0)


@register_model
def pretrain_videomae_base_patch16_224(**overrides) -> PretrainVisionTransformer:
    return _pretrain(overrides, img_size=224, patch_size=16, encoder_embed_dim=768, encoder_depth=12,
                     encoder_num_heads=12, decoder_embed_dim=384, decoder_num_heads=6, mlp_ratio=4.0)


@register_model
def pretrain_videomae_large_patch16_224(**overrides) -> PretrainVisionTransformer:
    return _pretrain(overrides, img_size=224, patch_size=16, encoder_embed_dim=1024, encoder_depth=24,
                     encoder_num_heads=16, decoder_embed_dim=512, decoder_num_heads=8, mlp_ratio=4.0)


@register_model
def pretrain_videomae_huge_patch16_224(**overrides) -> PretrainVisionTransformer:
    return _pretrain(overrides, img_size=224, patch_size=16, encoder_embed_dim=1280, encoder_depth=32,
                     encoder_num_heads=16, decoder_embed_dim=640, decoder_num_heads=8, mlp_ratio=4.0)


@register_model
def pretrain_videomae_giant_patch14_224(**overrides) -> PretrainVisionTransformer:
    return _pretrain(overrides, img_size=224, patch_size=14, encoder_embed_dim=1408, encoder_depth=40,
                     encoder_num_heads=16, decoder_embed_dim=512, decoder_num_heads=8, mlp_ratio=48 / 11)


@register_model
def vit_small_patch16_224(**overrides) -> VisionTransformer:
    return _classifier(overrides, img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0)


@register_model
def vit_base_patch16_224(**overrides) -> VisionTransformer:
    return _classifier(overrides, img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0)


@register_model
def vit_large_patch16_224(**overrides) -> VisionTransformer:
    return _classifier(overrides, img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0)


@register_model
def vit_huge_patch16_224(**overrides) -> VisionTransformer:
    return _classifier(overrides, img_size=224, patch_size=16, embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0)


@register_model
def vit_giant_patch14_224(**overrides) -> VisionTransformer:
    return _classifier(overrides, img_size=224, patch_size=14, embed_dim=1408, depth=40, num_heads=16,
                       mlp_ratio=48 / 11)


@register_model
def pretrain_videomae_tiny_patch16_224(**overrides) -> PretrainVisionTransformer:
    """Not an official size: a 2-block, width-192 model for CPU demos, tests and studies."""
    return _pretrain(overrides, img_size=224, patch_size=16, encoder_embed_dim=192, encoder_depth=2,
                     encoder_num_heads=3, decoder_embed_dim=96, decoder_num_heads=3, mlp_ratio=4.0, decoder_depth=1)


@register_model
def vit_tiny_patch16_224(**overrides) -> VisionTransformer:
    """Not an official size: the classifier matching `pretrain_videomae_tiny_patch16_224`."""
    return _classifier(overrides, img_size=224, patch_size=16, embed_dim=192, depth=2, num_heads=3, mlp_ratio=4.0)
