"""A toy node that takes wall time inside whichever process runs it (a Ray worker's too, where tests cannot
patch module hooks): it reports progress every 20 ms and stops when cancelled."""
from __future__ import annotations

import time

from pydantic import Field

from graphflow.node import Input, node


@node(outputs={"value": "NUMBER"}, category="test")
def Wait(value=Input("NUMBER"), seconds: float = Field(1.0, ge=0, le=600), *, ctx):
    """Passes ``value`` on after ``seconds``."""
    steps = max(1, round(seconds / 0.02))
    for step in range(steps):
        time.sleep(seconds / steps)
        ctx.progress(step + 1, steps)
    return value
