"""Checks the Grafana dashboard: valid JSON, every panel has a query, and every metric a
query names is one coexistd exports (read from the README's metric table)."""
import json
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[2]
dash = json.loads((root / "deploy/grafana/coexistd.json").read_text())
readme = (root / "README.md").read_text()
known = set(re.findall(r"^\| `(coexist_[a-z_]+)", readme, re.M))
known |= {k + s for k in list(known) for s in ("_bucket", "_sum", "_count")}
known.add("up")
errors = []
for p in dash["panels"]:
    exprs = [t.get("expr", "") for t in p.get("targets", [])]
    if not exprs or not all(exprs):
        errors.append(f"panel {p.get('title')!r} has no query")
    for e in exprs:
        for m in re.findall(r"\b(coexist_[a-z_]+)", e):
            if m not in known:
                errors.append(f"panel {p.get('title')!r}: unknown metric {m}")
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"dashboard OK: {len(dash['panels'])} panels, metrics all exported")
