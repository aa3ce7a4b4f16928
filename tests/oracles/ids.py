#!/usr/bin/env python3
"""Recomputes the id of every cyber-observable object in STIX JSON Lines files with OASIS
python-stix2 and compares it with the id the file holds.

Prints {"checked": {type: count}, "mismatches": [first 20]} and exits 1 on any mismatch."""
import json
import sys

import stix2

SCO_TYPES = {"ipv4-addr", "ipv6-addr", "domain-name", "mac-addr", "url", "artifact", "network-traffic",
             "email-addr", "file", "autonomous-system"}


def main(paths):
    checked, mismatches = {}, []
    for path in paths:
        with open(path, encoding="utf-8") as fp:
            for line in fp:
                if not line.strip():
                    continue
                obj = json.loads(line)
                if obj.get("type") not in SCO_TYPES:
                    continue
                ours = obj.pop("id")
                theirs = stix2.parse(obj, allow_custom=True, version="2.1").id
                checked[obj["type"]] = checked.get(obj["type"], 0) + 1
                if ours != theirs and len(mismatches) < 20:
                    mismatches.append({"ours": ours, "python_stix2": theirs, "object": obj})
    json.dump({"checked": checked, "mismatches": mismatches}, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
