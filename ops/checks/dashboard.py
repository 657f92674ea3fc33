"""Checks that every query on the Grafana dashboard is valid PromQL, with promtool: the
queries become recording rules in a temporary rules file (Grafana's `$__rate_interval` read
as 1m) and `promtool check rules` parses them. tests/ops.rs checks the metric names.

    python3 ops/checks/dashboard.py        # exit 1 with promtool's errors, else prints ok
"""
import json
import pathlib
import subprocess
import sys
import tempfile

root = pathlib.Path(__file__).resolve().parents[2]
dashboard = json.loads((root / "ops/grafana/dashboards/verdict.json").read_text())
rules = []
for p in dashboard["panels"]:
    for t in p.get("targets", []):
        expr = t["expr"].replace("$__rate_interval", "1m")
        rules.append({"record": f"dashboard:panel{p['id']}:{t['refId']}", "expr": expr})
with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
    # JSON is YAML: no YAML library needed.
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    f.flush()
    r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
if r.returncode != 0:
    print(f"dashboard queries:\n{r.stdout}{r.stderr}", file=sys.stderr)
    sys.exit(1)
print(f"dashboard: {len(rules)} queries parse")
