#!/usr/bin/env python
"""Convert COCO panoptic / ADE20K / COCO instances to class-agnostic EntitySeg-format json.

Examples:
  python scripts/convert_to_entity.py coco-panoptic --panoptic-json panoptic_val2017.json \
      --panoptic-dir panoptic_val2017 --out entity_val2017.json [--file-prefix val2017/]
  python scripts/convert_to_entity.py ade20k --root ADEChallengeData2016 --split validation \
      --out entity_validation.json
  python scripts/convert_to_entity.py ade20k-full --root ADE20K_2021_17_01/images --out ade.json
  python scripts/convert_to_entity.py coco --annotations instances.json --out entity.json

Output: compressed RLE, area = mask area, bbox from the mask, non-overlapping masks, iscrowd kept,
file_name relative to the image root (for ade20k: ROOT/images; ade20k-full: ROOT; coco: as in
the input json; coco-panoptic: as in the json plus --file-prefix).
"""

from __future__ import annotations

import argparse
import sys

from cropformer.data.convert import ConversionReport, records_to_entityseg, write_json
from cropformer.data.formats.ade20k import read_ade20k_challenge, read_ade20k_full
from cropformer.data.formats.coco_json import read_coco_json
from cropformer.data.formats.coco_panoptic import read_coco_panoptic


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="source", required=True)
    a = sub.add_parser("coco-panoptic", help="COCO panoptic PNG + json")
    a.add_argument("--panoptic-json", required=True)
    a.add_argument("--panoptic-dir", required=True)
    a.add_argument("--file-prefix", default="", help="prepended to image file names")
    a.add_argument("--out", required=True)
    b = sub.add_parser("ade20k", help="ADEChallengeData2016 (annotations_instance)")
    b.add_argument("--root", required=True)
    b.add_argument("--split", default="validation", choices=["training", "validation"])
    b.add_argument(
        "--no-stuff", action="store_true", help="instances only (no stuff from annotations/)"
    )
    b.add_argument("--out", required=True)
    c = sub.add_parser("ade20k-full", help="full ADE20K release (*_seg.png beside *.jpg)")
    c.add_argument("--root", required=True)
    c.add_argument("--out", required=True)
    d = sub.add_parser("coco", help="COCO instance json (polygons/RLE; overlaps resolved)")
    d.add_argument("--annotations", required=True)
    d.add_argument("--out", required=True)
    args = p.parse_args(argv)

    try:
        if args.source == "coco-panoptic":
            records = read_coco_panoptic(
                args.panoptic_json, args.panoptic_dir, ".", file_prefix=args.file_prefix
            )
        elif args.source == "ade20k":
            records = read_ade20k_challenge(args.root, args.split, with_stuff=not args.no_stuff)
        elif args.source == "ade20k-full":
            records = read_ade20k_full(args.root)
        else:
            records = read_coco_json(args.annotations, ".")
        report = ConversionReport()
        data = records_to_entityseg(records, report)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = write_json(data, args.out)
    for line in report.lines():
        print(line)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
