"""Independent checks of rendered graphs: the renderer's JSON reading, SVG as XML, PNG decoded."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from astro_core.cloning.graphs import find_renderer

SVG = "{http://www.w3.org/2000/svg}"


@dataclass
class ParsedDot:
    nodes: dict[str, dict[str, Any]]  # by name
    edges: list[tuple[str, str, str]]  # (tail, head, class)


def parse_dot(dot: str) -> ParsedDot:
    """How Graphviz itself reads the DOT text: nodes by name, edges as (tail, head, class)."""
    result = subprocess.run(
        [find_renderer(), "-Tjson"], input=dot.encode(), capture_output=True, check=True
    )
    data = json.loads(result.stdout)
    names = {obj["_gvid"]: obj["name"] for obj in data.get("objects", [])}
    return ParsedDot(
        nodes={obj["name"]: obj for obj in data.get("objects", [])},
        edges=[
            (names[e["tail"]], names[e["head"]], e.get("class", "")) for e in data.get("edges", [])
        ],
    )


def svg_counts(path: Path) -> tuple[int, int]:
    """(nodes, edges) drawn in an SVG written by Graphviz."""
    root = ElementTree.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    groups = [g.get("class", "") for g in root.iter(f"{SVG}g")]
    return groups.count("node"), sum(c.startswith("edge") for c in groups)


def decode_png(path: Path) -> tuple[int, int, bytes]:
    """Width, height and raw scanlines of a PNG (8-bit; checks the layout as it decodes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    position, idat, header = 8, b"", None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    assert header is not None, "no IHDR"
    width, height, depth, colour_type = header[:4]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    raw = zlib.decompress(idat)
    assert depth == 8
    assert len(raw) == height * (1 + width * channels), "scanlines do not match the size"
    return width, height, raw
