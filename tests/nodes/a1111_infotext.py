"""An A1111 infotext reader for tests, written from the web UI's documented format and independent of nodes/:

    prompt (one or more lines)
    Negative prompt: negative (one or more lines)
    Key: value, Key: "quoted, value", ...      ← the last line, when it holds at least three pairs

A value holding a comma, colon or newline is a JSON string. LoRAs are ``<lora:name:te[:unet]>`` in the prompt."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

LORA_TAG = re.compile(r"<lora:([^:>]+):([^:>]+)(?::([^:>]+))?>")


@dataclass
class Infotext:
    prompt: str
    negative: str
    params: dict[str, str] = field(default_factory=dict)

    def loras(self) -> list[tuple[str, float, float]]:
        """(name, text-encoder weight, UNet weight) of every tag; one weight means both."""
        return [(name, float(te), float(unet or te)) for name, te, unet in LORA_TAG.findall(self.prompt)]

    def prompt_without_loras(self) -> str:
        return re.sub(r"\s*" + LORA_TAG.pattern, "", self.prompt)


def pairs(line: str) -> dict[str, str]:
    """``Key: value, ...`` read left to right; raises ValueError on anything else."""
    found: dict[str, str] = {}
    position = 0
    while position < len(line):
        colon = line.index(": ", position)
        key = line[position:colon].strip()
        position = colon + 2
        if line.startswith('"', position):
            value, end = json.JSONDecoder().raw_decode(line, position)
            position = end
        else:
            end = line.find(",", position)
            end = len(line) if end < 0 else end
            value, position = line[position:end], end
        if not key:
            raise ValueError(f"empty key in {line!r}")
        found[key] = value
        if line.startswith(",", position):
            position += 1
            while line.startswith(" ", position):
                position += 1
    return found


def read(text: str) -> Infotext:
    lines = text.split("\n")
    params: dict[str, str] = {}
    try:
        candidate = pairs(lines[-1])
        if len(candidate) >= 3:
            params = candidate
            lines = lines[:-1]
    except ValueError:
        pass
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    return Infotext("\n".join(prompt), "\n".join(negative), params)
