"""cfn-lint on both CloudFormation templates escrow-sync generates (issue 17, point 7).

Usage: lint_templates.py ESCROW_SYNC_BIN CONFIG OUT_DIR

Runs `escrow-sync policy --config CONFIG --output cloudformation` (it contacts nothing),
writes the primary's and the escrow's template to OUT_DIR/primary.template.json and
OUT_DIR/escrow.template.json, and runs the venv's pinned cfn-lint on both. Any error or
warning fails the step (exit 1); each finding is printed with its rule id.
"""

import json
import os
import subprocess
import sys


def main():
    bin_, config, out_dir = sys.argv[1:4]
    policy = subprocess.run(
        [bin_, "policy", "--config", config, "--output", "cloudformation"],
        capture_output=True,
        text=True,
    )
    if policy.returncode != 0:
        sys.exit("escrow-sync policy exited %d: %s" % (policy.returncode, policy.stderr.strip()))
    templates = json.loads(policy.stdout)
    if sorted(templates) != ["escrow", "primary"]:
        sys.exit("expected the templates primary and escrow, got %s" % sorted(templates))
    files = []
    for side in ("primary", "escrow"):
        path = os.path.join(out_dir, "%s.template.json" % side)
        with open(path, "w") as f:
            json.dump(templates[side], f, indent=2)
        files.append(path)
    cfn_lint = os.path.join(os.path.dirname(sys.executable), "cfn-lint")
    # Findings of every level: errors (E), warnings (W) and informational (I).
    lint = subprocess.run([cfn_lint, "--include-checks", "I", "--", *files])
    if lint.returncode != 0:
        sys.exit("cfn-lint found problems in %s (exit %d)" % (", ".join(files), lint.returncode))
    print("cfn-lint: no finding in %s" % ", ".join(os.path.basename(f) for f in files))


if __name__ == "__main__":
    main()
