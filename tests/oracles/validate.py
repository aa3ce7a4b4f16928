#!/usr/bin/env python3
"""Runs the OASIS stix2-validator (STIX 2.1) over STIX files: JSON Lines files (every line one
object; the file's objects are validated together as one bundle) and JSON bundles.

Prints one JSON summary on stdout: {"files", "objects", "errors": [...], "warnings": {code: n}}
and exits 1 when there is any error. Warnings are counted by their code (e.g. 301)."""
import json
import re
import sys
import uuid

from stix2validator import ValidationOptions, validate_instance


def load(path):
    with open(path, encoding="utf-8") as fp:
        text = fp.read()
    if path.endswith(".jsonl"):
        objects = [json.loads(line) for line in text.split("\n") if line.strip()]
        return {"type": "bundle", "id": "bundle--" + str(uuid.uuid4()), "objects": objects}
    return json.loads(text)


def main(paths):
    options = ValidationOptions(version="2.1")
    summary = {"files": 0, "objects": 0, "errors": [], "warnings": {}}
    for path in paths:
        bundle = load(path)
        summary["files"] += 1
        summary["objects"] += len(bundle.get("objects", []))
        results = validate_instance(bundle, options)
        for obj in results.object_results if hasattr(results, "object_results") else [results]:
            for e in obj.errors:
                summary["errors"].append(f"{path}: {obj.object_id}: {e}")
            for w in obj.warnings:
                m = re.search(r"\{(\d+)\}", str(w))
                code = m.group(1) if m else str(w)
                summary["warnings"][code] = summary["warnings"].get(code, 0) + 1
                if len(summary.setdefault("warning_samples", {}).setdefault(code, [])) < 2:
                    summary["warning_samples"][code].append(f"{obj.object_id}: {w}")
        if not results.is_valid and not summary["errors"]:
            summary["errors"].append(f"{path}: invalid")
    json.dump(summary, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
