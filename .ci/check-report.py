#!/usr/bin/env python3
"""Opens a simulation report in a real browser (headless Chromium) and
fails if the page is blank or its charts are missing.

usage: check-report.py REPORT_DIR

- `--dump-dom`: the page as the browser built it must hold the three
  charts (inline <svg> with drawn lines) and the summary table.
- `--screenshot`: the rendered page must not be blank: the PNG is decoded
  here (zlib and the PNG filters; no imaging library needed) and must show
  many colours and a fair share of non-white pixels.
"""
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

BROWSER = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def fail(msg):
    print(f"report check FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def png_pixels(path):
    """(width, height, rows of RGBA/RGB tuples) of an 8-bit PNG."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(f"{path} is not a PNG")
    pos, idat, width = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if depth != 8 or colour not in (2, 6):
                fail(f"unexpected PNG format depth={depth} colour={colour}")
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        f, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def main():
    if len(sys.argv) != 2:
        fail("usage: check-report.py REPORT_DIR")
    page = os.path.abspath(os.path.join(sys.argv[1], "report.html"))
    if not os.path.exists(page):
        fail(f"{page} does not exist")
    url = "file://" + page

    dom = subprocess.run(
        BROWSER + ["--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    charts = len(re.findall(r"<svg", dom))
    lines = len(re.findall(r"<polyline|<path", dom))
    if charts != 3:
        fail(f"the browser's DOM holds {charts} charts, expected 3")
    if lines < 6:
        fail(f"the charts hold only {lines} drawn lines")
    for text in ["Workers against load", "Queue depth", "Queue wait", "Little's law"]:
        if text not in dom:
            fail(f"the page lacks {text!r}")

    with tempfile.TemporaryDirectory() as tmp:
        shot = os.path.join(tmp, "shot.png")
        subprocess.run(
            BROWSER + [f"--screenshot={shot}", "--window-size=1100,1500", url],
            capture_output=True,
            timeout=120,
        )
        if not os.path.exists(shot):
            fail("the browser made no screenshot")
        width, height, bpp, rows = png_pixels(shot)
        colours, ink = set(), 0
        for row in rows[::3]:
            for x in range(0, width * bpp, bpp * 3):
                px = row[x : x + 3]
                colours.add(px)
                if px != b"\xff\xff\xff":
                    ink += 1
        sampled = len(rows[::3]) * len(range(0, width * bpp, bpp * 3))
        share = ink / sampled
        if len(colours) < 8 or share < 0.01:
            fail(f"the page looks blank: {len(colours)} colours, {share:.1%} non-white")
        print(
            f"report check: 3 charts, {lines} drawn lines; screenshot {width}x{height}, "
            f"{len(colours)} colours, {share:.1%} non-white"
        )


main()
