"""Checks the Dockerfile with BuildKit's own parser (the `dockerfile` package on PyPI), since
no image can be built where the tests run: every COPY from the build context names a path the
repository has and .dockerignore keeps, the dependency layer's placeholder benches are the
[[bench]] targets of Cargo.toml (a new bench would break that layer), and the runtime stage
runs as a non-root user with a HEALTHCHECK and the ONNX Runtime library.

    python3 ops/checks/image.py        # exit 1 with every problem, else prints ok
"""
import pathlib
import re
import sys
import tomllib

import dockerfile

root = pathlib.Path(__file__).resolve().parents[2]
commands = dockerfile.parse_file(str(root / "Dockerfile"))
ignored = [l.strip().strip("/") for l in (root / ".dockerignore").read_text().splitlines() if l.strip()]
problems = []

stages = []
for c in commands:
    if c.cmd == "FROM":
        stages.append([])
    stages[-1].append(c)
if len(stages) < 2:
    problems.append("expected a build stage and a runtime stage")

for c in commands:
    if c.cmd != "COPY" or any(f.startswith("--from=") for f in c.flags):
        continue
    for src in c.value[:-1]:
        top = src.strip("/").split("/")[0]
        if not (root / src).exists():
            problems.append(f"COPY {src}: not in the repository")
        elif top in ignored:
            problems.append(f"COPY {src}: excluded by .dockerignore")

benches = {b["name"] for b in tomllib.loads((root / "Cargo.toml").read_text()).get("bench", [])}
placeholder = next((c.value[0] for c in stages[0] if c.cmd == "RUN" and "benches/$b.rs" in c.value[0]), "")
m = re.search(r"for b in ([\w ]+); do", placeholder)
if not m or set(m.group(1).split()) != benches:
    problems.append(f"the dependency layer's placeholder benches must be Cargo.toml's: {sorted(benches)}")

runtime = stages[-1]
users = [c.value[0] for c in runtime if c.cmd == "USER"]
if not users or users[-1].split(":")[0] in ("root", "0"):
    problems.append("the runtime stage must run as a non-root USER")
if not any(c.cmd == "HEALTHCHECK" and "/healthz" in " ".join(c.value) for c in runtime):
    problems.append("the runtime stage needs a HEALTHCHECK on /healthz")
if not any(c.cmd == "COPY" and ".cache/onnxruntime" in c.value[0] for c in runtime):
    problems.append("the runtime stage must carry the ONNX Runtime library")

if problems:
    print("Dockerfile:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"Dockerfile: ok ({len(stages)} stages, {len(commands)} instructions)")
