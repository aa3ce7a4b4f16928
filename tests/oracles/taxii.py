#!/usr/bin/env python3
"""Drives a br-cti node with the OASIS taxii2-client (TAXII 2.1) and prints what it saw as one
JSON object on stdout. The Rust test (tests/taxii.rs) starts the node and checks the result.

Usage: taxii.py BASE_URL USER TOKEN INBOX_ID DATASETS_ID HIDDEN_DANGERS_ID
"""
import json
import sys
import uuid

import requests
from taxii2client.exceptions import AccessError
from taxii2client.v21 import Collection, Server, as_pages

NS = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")


def indicator(i, modified="2024-01-01T00:00:00.000Z"):
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--" + str(uuid.uuid5(NS, "oracle-%d" % i)),
        "created": "2024-01-01T00:00:00.000Z",
        "modified": modified,
        "name": "oracle indicator %d" % i,
        "pattern": "[ipv4-addr:value = '198.51.100.%d']" % (i % 250),
        "pattern_type": "stix",
        "valid_from": "2024-01-01T00:00:00Z",
    }


def main(base, user, token, inbox_id, datasets_id, hd_id):
    out = {}
    server = Server(base + "/taxii2/", user=user, password=token)
    out["title"] = server.title
    out["api_roots"] = [r.url for r in server.api_roots]
    root = server.default
    out["versions"] = root.versions
    out["max_content_length"] = root.max_content_length
    out["collections"] = {
        c.id: {"title": c.title, "can_read": c.can_read, "can_write": c.can_write}
        for c in root.collections
    }

    inbox = Collection(root.url + "collections/" + inbox_id + "/", user=user, password=token)
    objects = [indicator(i) for i in range(10000)]
    bad = [
        {"type": "indicator", "spec_version": "2.1", "id": "indicator--not-a-uuid",
         "created": "2024-01-01T00:00:00Z", "modified": "2024-01-01T00:00:00Z"},
        dict(indicator(99999), spec_version="2.0"),
        dict(indicator(99998), id="malware--" + str(uuid.uuid5(NS, "x"))),
        dict(indicator(99997), modified="2023-01-01T00:00:00.000Z"),
    ]
    statuses = []
    for chunk in (objects[:5000] + bad, objects[5000:]):
        s = inbox.add_objects({"objects": chunk}, wait_for_completion=True, poll_interval=1, timeout=30)
        statuses.append({
            "status": s.status, "total": s.total_count, "success": s.success_count,
            "failure": s.failure_count, "failures": [f.get("message") for f in s.failures or []],
        })
    out["statuses"] = statuses

    seen, pages = [], 0
    for envelope in as_pages(inbox.get_objects, per_request=1000):
        pages += 1
        seen.extend(o["id"] for o in envelope.get("objects", []))
    out["paged"] = {
        "pages": pages, "count": len(seen), "distinct": len(set(seen)),
        "all_sent": set(seen) == {o["id"] for o in objects},
    }
    manifest_ids = []
    for envelope in as_pages(inbox.get_manifest, per_request=3000):
        manifest_ids.extend(m["id"] for m in envelope.get("objects", []))
    out["manifest_count"] = len(manifest_ids)

    # A second version of one object; the filters.
    first = objects[7]
    newer = dict(first, modified="2024-06-01T00:00:00.000Z", name="updated")
    inbox.add_objects({"objects": [newer]}, wait_for_completion=True)
    oid = first["id"]
    out["versions_of_one"] = inbox.object_versions(oid).get("versions", [])
    out["last"] = [o["name"] for o in inbox.get_object(oid).get("objects", [])]
    out["first"] = [o["name"] for o in inbox.get_object(oid, version="first").get("objects", [])]
    out["all"] = len(inbox.get_object(oid, version="all").get("objects", []))
    out["at"] = [o["name"] for o in inbox.get_object(oid, version="2024-01-01T00:00:00.000Z").get("objects", [])]
    out["by_type"] = len(inbox.get_objects(type="indicator", limit=10).get("objects", []))
    out["by_other_type"] = len(inbox.get_objects(type="malware").get("objects", []))
    out["by_id"] = [o["id"] for o in inbox.get_objects(id=[objects[1]["id"], objects[2]["id"]]).get("objects", [])]
    out["spec_21"] = len(inbox.get_objects(spec_version="2.1", limit=5).get("objects", []))
    page = inbox.get_manifest(limit=2)
    last_added = page["objects"][-1]["date_added"]
    after = inbox.get_manifest(added_after=last_added, limit=2)
    out["added_after_first"] = after["objects"][0]["date_added"] > last_added

    # Delete.
    inbox.delete_object(objects[3]["id"])
    try:
        inbox.get_object(objects[3]["id"])
        out["deleted_gone"] = False
    except requests.exceptions.HTTPError as e:
        out["deleted_gone"] = e.response.status_code == 404

    # The node's own collections: readable, not writable.
    datasets = Collection(root.url + "collections/" + datasets_id + "/", user=user, password=token)
    out["datasets_objects"] = sum(len(e.get("objects", [])) for e in as_pages(datasets.get_objects, per_request=50))
    try:
        datasets.add_objects({"objects": [indicator(1)]})
        out["datasets_write"] = "accepted"
    except AccessError:
        out["datasets_write"] = "refused"
    hd = Collection(root.url + "collections/" + hd_id + "/", user=user, password=token)
    out["hidden_danger_types"] = sorted({o["type"] for o in hd.get_objects().get("objects", [])})

    # Authentication failures.
    try:
        Server(base + "/taxii2/", user=user, password="wrong").title
        out["bad_password"] = "accepted"
    except requests.exceptions.HTTPError as e:
        out["bad_password"] = e.response.status_code
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:7])
