#!/usr/bin/env python3
"""Rebuild shared/fingerprint/data/ieee-oui.tsv.gz from the IEEE registries.

Input: the CSV exports of the IEEE Registration Authority (MA-L oui.csv, MA-M
mam.csv, MA-S oui36.csv, and the retired IAB iab.csv), as Debian's ieee-data
package installs them in /usr/share/ieee-data (or a folder given as the first
argument). Output: one line per assignment, `PREFIX<TAB>ORGANIZATION`, PREFIX
in upper-case hex of 6 (MA-L), 7 (MA-M) or 9 (MA-S, IAB) digits, sorted, gzip
with a fixed timestamp so the same registries give the same bytes. Addresses
are left out: only the organization name is used. The build script of
heimdall-fingerprint turns this file into the lookup table.
"""
import csv
import gzip
import io
import os
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/ieee-data"
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "fingerprint",
                   "data", "ieee-oui.tsv.gz")
rows = {}
for name, digits in (("oui.csv", 6), ("mam.csv", 7), ("oui36.csv", 9), ("iab.csv", 9)):
    path = os.path.join(src, name)
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        for rec in csv.DictReader(fh):
            prefix = (rec.get("Assignment") or "").strip().upper()
            org = " ".join((rec.get("Organization Name") or "").split())
            if len(prefix) != digits or not all(c in "0123456789ABCDEF" for c in prefix) or not org:
                continue
            org = org.replace("\t", " ")
            rows[prefix] = org
buf = io.BytesIO()
with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
    for prefix in sorted(rows):
        gz.write(("%s\t%s\n" % (prefix, rows[prefix])).encode("utf-8"))
with open(out, "wb") as fh:
    fh.write(buf.getvalue())
print("update-oui: %d assignments -> %s (%d bytes)" % (len(rows), os.path.normpath(out), len(buf.getvalue())))
