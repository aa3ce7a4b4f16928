#!/usr/bin/env python3
"""Imports STIX 2.1 bundles into MISP events with misp-stix (the MISP project's converter), as a
MISP instance would, and reports what it made of them.

Prints {"bundles", "errors": [first 20], "warnings": n, "attributes": n, "to_ids": [values],
"events": [titles]} (attributes of the events and of their objects; `to_ids` are the values MISP
would use for detection; `events` the `info` of each event made, in order) and exits 1 on any
error."""
import json
import sys

from misp_stix_converter import ExternalSTIX2toMISPParser
from stix2.parsing import parse as stix2_parse


def main(paths):
    out = {"bundles": 0, "errors": [], "warnings": 0, "attributes": 0, "to_ids": [], "events": []}
    to_ids = set()
    for path in paths:
        with open(path, encoding="utf-8") as fp:
            bundle = stix2_parse(json.load(fp), allow_custom=True, interoperability=True)
        parser = ExternalSTIX2toMISPParser()
        parser.load_stix_bundle(bundle)
        parser.parse_stix_bundle()
        out["bundles"] += 1
        for key, messages in parser.errors.items():
            for m in messages:
                if len(out["errors"]) < 20:
                    out["errors"].append(f"{path}: {key}: {m}")
        out["warnings"] += sum(len(v) for v in parser.warnings.values())
        events = parser.misp_events if isinstance(parser.misp_events, list) else [parser.misp_event]
        for event in events:
            out["events"].append(event.info)
            attributes = list(event.attributes)
            for obj in event.objects:
                attributes.extend(obj.attributes)
            out["attributes"] += len(attributes)
            to_ids.update(str(a.value) for a in attributes if a.to_ids)
    out["to_ids"] = sorted(to_ids)
    json.dump(out, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
