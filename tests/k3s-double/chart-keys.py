#!/usr/bin/env python3
# k3s TEST DOUBLE helper (not k3s, not part of the bundle): print the table of values
# keys a Helm chart accepts, for CHART_KEYS in tests/k3s-double/k3s. Run it on an
# unpacked chart (the directory with Chart.yaml, values.yaml and templates/) read at the
# version continuum pins, e.g. from `helm pull --untar` or the chart's repository at
# its release tag:
#
#   python3 tests/k3s-double/chart-keys.py DIR
#
# A key is a dotted path. It is accepted when values.yaml has it as a leaf (a scalar, a
# list or an empty mapping) or a template reads it (`.Values.a.b`). A trailing `/`
# marks a subtree taken whole (a template renders it with toYaml/with/range/tpl, or
# values.yaml has an empty mapping there): any key below it is accepted too. Only key
# names are printed, never values.
"""Print a chart's accepted values keys (names only) for the k3s double."""

import os
import re
import sys

import yaml

REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
WHOLE = re.compile(r"(?:toYaml|with|range[^}]*:=|tpl)\s*\(?\s*(?:toYaml\s*)?\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def walk(value, prefix, leaves, opened, inner):
    if isinstance(value, dict) and value:
        if prefix:
            inner.add(prefix)
        for k, v in value.items():
            walk(v, f"{prefix}.{k}" if prefix else str(k), leaves, opened, inner)
    elif prefix:
        leaves.add(prefix)
        if isinstance(value, dict):  # an empty mapping: free-form below
            opened.add(prefix)


def table(chart_dir):
    with open(os.path.join(chart_dir, "values.yaml"), encoding="utf-8") as f:
        # some charts template their own values.yaml at release time: neutralise that
        text = re.sub(r"\{\{[^}]*\}\}", "x", f.read())
    leaves, opened, inner = set(), set(), set()
    walk(yaml.safe_load(text) or {}, "", leaves, opened, inner)
    refs = set()
    for root, _, files in os.walk(os.path.join(chart_dir, "templates")):
        for name in files:
            with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                t = f.read()
            refs.update(m.group(1)[1:] for m in REF.finditer(t))
            opened.update(m.group(1)[1:] for m in WHOLE.finditer(t))
    keys = (leaves | refs | opened) - (inner - opened)
    out = []
    for k in sorted(keys):
        if any(k.startswith(o + ".") for o in opened):
            continue  # covered by a subtree taken whole
        out.append(k + ("/" if k in opened else ""))
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: chart-keys.py CHART_DIR")
    line = ""
    for k in table(sys.argv[1]):
        if len(line) + len(k) + 1 > 92:
            print(line)
            line = ""
        line = f"{line} {k}" if line else k
    if line:
        print(line)


if __name__ == "__main__":
    main()
