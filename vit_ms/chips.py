"""What each chip can run: the facts the run plan (`vit_ms.plan`) decides from.

Ascend chips are named as MindSpore names them (its SoC version, read by `vit_ms.runtime`):

    ascend910     Atlas training series, first generation ("910A": Ascend910A/B/ProA/ProB/PremiumA)
    ascend910b    Atlas A2 training series (Ascend910B1-B4)
    ascend910_93  Atlas A3 training series ("910C", Ascend910_93xx)

GPUs by CUDA compute capability, "sm_<major><minor>" (sm_80 A100, sm_90 H100/H200); CPU has no chip name.
Sources: CANN's FlashAttentionScore lists Atlas A2/A3 training products only (not the first-generation Atlas training
series); MindSpore 2.10 documents `ops.flash_attention_score` for Ascend only, with head size a multiple of 16 up to
512 and at most 256 heads; bfloat16 matmuls exist in CANN for Atlas A2/A3, while MindSpore 2.10's CPU and GPU
MatMul kernels take float16/float32 only.
"""
from typing import Optional

ASCEND_CHIPS = {
    "ascend910": "Ascend 910A (Atlas training series, first generation)",
    "ascend910b": "Ascend 910B (Atlas A2)",
    "ascend910_93": "Ascend 910C (Atlas A3)",
}
FLASH_ATTENTION_CHIPS = ("ascend910b", "ascend910_93")  # CANN's FlashAttentionScore kernel exists here only
BFLOAT16_CHIPS = ("ascend910b", "ascend910_93")
FLASH_HEAD_DIM_MULTIPLE, FLASH_HEAD_DIM_MAX, FLASH_MAX_HEADS = 16, 512, 256


def chip_label(device: str, chip: str) -> str:
    """How logs and errors name the chip: 'Ascend 910B (Atlas A2)', 'GPU sm_90', 'CPU'."""
    if device == "Ascend":
        return ASCEND_CHIPS.get(chip, f"Ascend {chip}" if chip else "Ascend (chip not reported by MindSpore)")
    if device == "GPU":
        return f"GPU {chip}" if chip else "GPU"
    return device


def has_flash_attention(device: str, chip: str) -> bool:
    return device == "Ascend" and chip in FLASH_ATTENTION_CHIPS


def has_bfloat16(device: str, chip: str) -> bool:
    return device == "Ascend" and chip in BFLOAT16_CHIPS


def flash_attention_limit(head_dim: int, num_heads: int) -> Optional[str]:
    """Why FlashAttentionScore cannot take this attention shape, or None when it can."""
    if head_dim % FLASH_HEAD_DIM_MULTIPLE or head_dim > FLASH_HEAD_DIM_MAX:
        return (f"head dim {head_dim} (embed_dim / num_heads) is not a multiple of {FLASH_HEAD_DIM_MULTIPLE} up to "
                f"{FLASH_HEAD_DIM_MAX}")
    if num_heads > FLASH_MAX_HEADS:
        return f"{num_heads} heads is more than the kernel's {FLASH_MAX_HEADS}"
    return None
