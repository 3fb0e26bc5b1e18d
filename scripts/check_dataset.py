#!/usr/bin/env python
"""Check an image folder + EntitySeg-format json: counts, resolutions, and every problem.

  python scripts/check_dataset.py --images DIR --annotations JSON [--no-decode]

Problems: missing or unreadable image, size mismatch between json and file, overlapping masks,
empty masks, invalid RLE/polygons. Exit status 1 when any problem is found.
"""

from __future__ import annotations

import argparse
import sys

from cropformer.data.check import check_dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", required=True, help="image root (file_name is relative to it)")
    p.add_argument("--annotations", required=True, help="EntitySeg-format (COCO) json")
    p.add_argument(
        "--no-decode",
        action="store_true",
        help="read image headers only (faster, misses truncation)",
    )
    args = p.parse_args(argv)
    try:
        report = check_dataset(args.images, args.annotations, decode=not args.no_decode)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
