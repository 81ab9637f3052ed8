"""Look at `sedi report` the way a person would: render synthetic runs and screenshot the pages headless.

    python scripts/screenshot_report.py [--out /tmp/report-shots] [--height 7000] [--tile 1600]

Three pages are written from the synthetic runs of ``benchmarks.sample_run`` (real RunStore schema, the runs the
report tests use): one finished run, a comparison of self-instruct and sedi, and a run that has only made
teacher calls (every plot but one empty). Each page is screenshotted full height with Debian's ``chromium``
and cut into tiles short enough to read at a glance (``<name>-1.png``, ``<name>-2.png``, ...). Nothing here
needs a network.

Optional: without a chromium binary on PATH it prints why and exits 0, having written the HTML pages only.
The test suite never calls it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.sample_run import write_sample_run
from sedi.report.page import write_report

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def make_pages(work: Path) -> dict[str, Path]:
    """The three report pages, by name."""
    single = write_sample_run(work / "run-a", "sedi")
    baseline = write_sample_run(work / "baseline", "self-instruct", seed=1)
    sedi = write_sample_run(work / "sedi-run", "sedi", seed=2)
    partial = write_sample_run(work / "calls-only", "self-instruct", training=False)
    return {
        "single": write_report([single], work / "out-single"),
        "compare": write_report([baseline, sedi], work / "out-compare"),
        "partial": write_report([partial], work / "out-partial"),
    }


def screenshot(browser: str, page: Path, png: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", page.resolve().as_uri()]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def tiles(png: Path, tile: int) -> list[Path]:
    """Cut a tall screenshot into ``tile``-pixel-high pieces, dropping the blank space below the page."""
    from PIL import Image

    for stale in png.parent.glob(f"{png.stem}-*.png"):  # from an earlier, longer page
        stale.unlink()
    with Image.open(png) as image:
        rgb = image.convert("RGB")
        # The page ends where the last non-white row is; the window is taller than the page.
        box = Image.eval(rgb, lambda v: 255 - v).getbbox()
        bottom = min(rgb.height, (box[3] if box else rgb.height) + 40)
        out = []
        for i, top in enumerate(range(0, bottom, tile), start=1):
            piece = png.with_name(f"{png.stem}-{i}.png")
            rgb.crop((0, top, rgb.width, min(top + tile, bottom))).save(piece)
            out.append(piece)
    if bottom >= rgb.height - 40:
        print(f"warning: {png.name} may be cut off: rerun with a larger --height", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/report-shots"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=7000, help="Window height: taller than the longest page.")
    parser.add_argument("--tile", type=int, default=1600, help="Height of each screenshot piece.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pages = make_pages(Path(tempfile.mkdtemp(prefix="sedi-report-")))
    for name, page in pages.items():
        kept = args.out / f"{name}.html"
        shutil.copyfile(page, kept)
        print(f"{name}: {kept}")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("skipped screenshots: no chromium on PATH (Debian: apt-get install -y chromium)", file=sys.stderr)
        return
    for name in pages:
        full = args.out / f"{name}.png"
        screenshot(browser, args.out / f"{name}.html", full, args.width, args.height)
        print(f"{name}: {full} -> " + " ".join(str(p) for p in tiles(full, args.tile)))


if __name__ == "__main__":
    main()
