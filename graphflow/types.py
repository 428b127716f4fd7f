"""Socket type names and the rule for which output may feed which input.

Socket types are plain upper-case strings ("NUMBER", "IMAGE", ...): the engine does not know what
they mean, only whether two of them may be linked. ``ANY`` on either side accepts everything.
"""
from __future__ import annotations

ANY = "*"


def is_compatible(output_type: str, input_type: str) -> bool:
    """May an output of ``output_type`` be linked to an input of ``input_type``?"""
    return output_type == input_type or ANY in (output_type, input_type)


def check_type_name(name: str) -> str:
    if name != ANY and not (name.isupper() and name.replace("_", "").isalnum()):
        raise ValueError(f"socket type names are UPPER_CASE words, got {name!r}")
    return name
