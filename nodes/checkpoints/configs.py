"""A module's config, assembled: the shipped config of the family's variant, adapted to the sizes in the weights."""
from __future__ import annotations

import json
from typing import Any

from .common import METADATA_PREFIX


def size_defaults(component: str, base: dict[str, Any], derived: dict[str, Any]) -> dict[str, Any]:
    """Attention head counts are invisible in the weights. Full-size models keep the shipped config's;
    other sizes get the SD rule: CLIP heads and SD2 UNet heads are 64 wide, SD1 UNets have 8 heads."""
    if component == "unet" and derived["block_out_channels"] != base["block_out_channels"]:
        if isinstance(base["attention_head_dim"], list):
            return {"attention_head_dim": [max(1, c // 64) for c in derived["block_out_channels"]]}
    if component.startswith("text_encoder") and derived["hidden_size"] != base["hidden_size"]:
        return {"num_attention_heads": max(1, derived["hidden_size"] // 64)}
    return {}


def stored_config(metadata: dict[str, str], component: str) -> dict[str, Any]:
    """The full config graphflow wrote into a file's metadata (the values shapes cannot show)."""
    return json.loads(metadata.get(f"{METADATA_PREFIX}{component}_config", "{}"))


def assemble_config(component: str, base: dict[str, Any], derived: dict[str, Any], metadata: dict[str, str]) -> dict[str, Any]:
    """Shipped config < size-adapted head counts < config stored in the file < sizes read from the weights."""
    return {**base, **size_defaults(component, base, derived), **stored_config(metadata, component), **derived}
