#!/usr/bin/env python3
"""Writes a kine SQLite file (k3s's state.db) holding the keys of an etcd dump, for the
offline kine benchmarks of docs/performance.md ("kine files at scale").

    etcdctl --endpoints $EP get --prefix /registry/ -w json > dump.json
    benches/kine_db.py dump.json COPIES out.db

Every key of the dump is written COPIES times (copy i > 0 under the namespace `<ns>-c<i>`,
the same value: aescbc binds no key name), one row each as kine writes a create, in a
shuffled order (a cluster's rows are in the order they were written, not in key order).
The schema and indexes are kine's own (k3s-io/kine pkg/drivers/sqlite). The output must not
exist."""

import base64
import json
import os
import random
import sqlite3
import sys

SCHEMA = """
CREATE TABLE kine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT,
    created INTEGER,
    deleted INTEGER,
    create_revision INTEGER,
    prev_revision INTEGER,
    lease INTEGER,
    value BLOB,
    old_value BLOB
);
CREATE INDEX kine_name_index ON kine (name);
CREATE INDEX kine_name_id_index ON kine (name,id);
CREATE INDEX kine_id_deleted_index ON kine (id,deleted);
CREATE INDEX kine_prev_revision_index ON kine (prev_revision);
CREATE UNIQUE INDEX kine_name_prev_revision_uindex ON kine (name, prev_revision);
CREATE INDEX kine_id_compact_rev_key_with_prev_revision_index ON kine(id, name, prev_revision)
    WHERE name != 'compact_rev_key' AND prev_revision != 0;
"""


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    dump, copies, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if os.path.exists(out):
        sys.exit(f"{out} exists")
    kvs = [
        (base64.b64decode(kv["key"]).decode(), base64.b64decode(kv["value"]))
        for kv in json.load(open(dump))["kvs"]
    ]
    rows = []
    for i in range(copies):
        for key, value in kvs:
            if i:
                parts = key.split("/")
                if len(parts) > 4:
                    parts[3] = f"{parts[3]}-c{i}"
                else:
                    parts[-1] = f"{parts[-1]}-c{i}"
                key = "/".join(parts)
            rows.append((key, value))
    random.seed(1)
    random.shuffle(rows)
    db = sqlite3.connect(out)
    db.executescript(SCHEMA)
    db.execute(
        "INSERT INTO kine(name, created, deleted, create_revision, prev_revision, lease, value,"
        " old_value) VALUES ('compact_rev_key', 0, 0, 0, 0, 0, '', '')"
    )
    db.executemany(
        "INSERT INTO kine(name, created, deleted, create_revision, prev_revision, lease, value,"
        " old_value) VALUES (?, 1, 0, 0, 0, 0, ?, NULL)",
        rows,
    )
    db.commit()
    db.close()
    print(f"{out}: {len(rows)} rows", file=sys.stderr)


main()
