#!/usr/bin/env python3
"""Checks the intelligence objects of STIX JSON Lines files with the OASIS tools: every
indicator's pattern passes the STIX pattern validator (stix2-patterns), python-stix2 parses every
indicator, relationship and sighting with allow_custom=False, every reference of a relationship
or sighting resolves inside its file, and every sighting has `count` and `where_sighted_refs`.

Prints {"indicators": {id: pattern}, "sightings_of": {indicator id: [file, ...]},
"objects": {type: n}, "errors": [first 20]} and exits 1 on any error."""
import json
import sys

import stix2
from stix2patterns.validator import run_validator


def main(paths):
    indicators, sightings_of, counts, errors = {}, {}, {}, []

    def error(msg):
        if len(errors) < 20:
            errors.append(msg)

    for path in paths:
        with open(path, encoding="utf-8") as fp:
            objects = [json.loads(line) for line in fp if line.strip()]
        ids = {o["id"] for o in objects}
        for o in objects:
            ty = o["type"]
            counts[ty] = counts.get(ty, 0) + 1
            if ty not in ("indicator", "relationship", "sighting"):
                continue
            try:
                stix2.parse(o, allow_custom=False, version="2.1")
            except Exception as e:  # noqa: BLE001 - any refusal is a finding
                error(f"{path}: {o['id']}: python-stix2: {e}")
            if ty == "indicator":
                problems = run_validator(o["pattern"], stix_version="2.1")
                if problems:
                    error(f"{path}: {o['id']}: pattern {o['pattern']!r}: {problems}")
                indicators[o["id"]] = o["pattern"]
            elif ty == "relationship":
                for k in ("source_ref", "target_ref"):
                    if o[k] not in ids:
                        error(f"{path}: {o['id']}: {k} {o[k]} is not in the file")
            else:
                refs = [o["sighting_of_ref"]] + o.get("observed_data_refs", []) + o.get("where_sighted_refs", [])
                for r in refs:
                    if r not in ids:
                        error(f"{path}: {o['id']}: {r} is not in the file")
                if "count" not in o or not o.get("where_sighted_refs"):
                    error(f"{path}: {o['id']}: a sighting without count or where_sighted_refs")
                if o["sighting_of_ref"].startswith("indicator--"):
                    sightings_of.setdefault(o["sighting_of_ref"], []).append(path)
    json.dump({"indicators": indicators, "sightings_of": sightings_of, "objects": counts,
               "errors": errors}, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
