#!/usr/bin/env python3
"""Checks that no folder of the library reaches a layer above its own, and that check
kinds never use each other.

The layers are the table in src/lib.rs (rows `//! | N name | [`module`], ... |`); each
module there is a folder of src/ (or a single file of the ground floor). Every
`crate::module` path in the code of src/ (not in comments) is an edge from the file's
top-level folder to `module`; an edge to a higher layer is an error, and so is a cycle
between two folders of the same layer.

Inside `src/kinds/` the kinds are the modules named in the `check_kinds!` list of
`src/kinds/mod.rs`. A kind's file may use the list and trait (`mod.rs`) and anything
below (the user agent in `src/ua/`) but no other kind, and `mod.rs` names a kind only
in that list: what two kinds share lives below them, so adding or removing a kind
touches nothing else.

Prints every violation with its file and line; exit 1 if any, 0 otherwise. CI runs it
(.ci/run).
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
src = root / "src"

layers = {}
for line in (src / "lib.rs").read_text().splitlines():
    m = re.match(r"^//! \| (\d+) [^|]*\| (.*)\|\s*$", line)
    if m:
        for module in re.findall(r"\[`(\w+)`\]", m.group(2)):
            layers[module] = int(m.group(1))
if not layers:
    sys.exit("check-layers: no layer table found in src/lib.rs")

declared = set(re.findall(r"^pub mod (\w+);", (src / "lib.rs").read_text(), re.M))
missing = sorted(declared - set(layers))
if missing:
    sys.exit(f"check-layers: modules without a layer in src/lib.rs: {', '.join(missing)}")


def top_module(path):
    rel = path.relative_to(src).parts
    return rel[0][:-3] if len(rel) == 1 else rel[0]


def code_lines(text):
    """Lines without comments (line comments, doc comments, block comments)."""
    in_block = False
    for n, line in enumerate(text.splitlines(), 1):
        if in_block:
            if "*/" in line:
                in_block = False
                line = line.split("*/", 1)[1]
            else:
                continue
        if "/*" in line and '"' not in line.split("/*", 1)[0]:
            head, tail = line.split("/*", 1)
            if "*/" not in tail:
                in_block = True
            line = head
        # Drop `//` comments that are not inside a string literal (good enough here:
        # no string in this code base holds `//` before a `crate::` path).
        code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)
        if "//" in code:
            code = code.split("//", 1)[0]
        yield n, code


edges = {}
errors = []
for path in sorted(src.rglob("*.rs")):
    if path.name in ("lib.rs", "main.rs"):
        continue
    me = top_module(path)
    if me not in layers:
        continue
    for n, code in code_lines(path.read_text()):
        names = re.findall(r"\bcrate::(\w+)", code)
        for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
            names += re.findall(r"(?:^|,)\s*(\w+)", group)
        for other in names:
            if other == me or other not in layers:
                continue
            edges.setdefault((me, other), f"{path.relative_to(root)}:{n}")
            if layers[other] > layers[me]:
                errors.append(
                    f"{path.relative_to(root)}:{n}: {me} (layer {layers[me]}) uses {other} (layer {layers[other]})"
                )

for (a, b), where in sorted(edges.items()):
    if a < b and (b, a) in edges and layers[a] == layers[b]:
        errors.append(f"cycle between {a} and {b}: {where} and {edges[(b, a)]}")

# Kinds use no kind.
probe = src / "kinds"
kinds = set(re.findall(r"^\s+\w+\((\w+)::\w+\) => \"", (probe / "mod.rs").read_text(), re.M))
if not kinds:
    sys.exit("check-layers: no kinds found in the check_kinds! list of src/kinds/mod.rs")
kind_edges = 0
for path in sorted(probe.rglob("*.rs")):
    rel = path.relative_to(probe).parts
    me = rel[0][:-3] if len(rel) == 1 else rel[0]
    depth = len(rel) - 1
    for n, code in code_lines(path.read_text()):
        used = set(re.findall(r"\bcrate::kinds::(\w+)", code))
        for group in re.findall(r"\bcrate::kinds::\{([^}]*)\}", code):
            used |= set(re.findall(r"(?:^|,)\s*(\w+)", group))
        # `super::x` from a file directly in kinds/ (or `super::super::x` one folder
        # down) names the kinds module x.
        prefix = r"\bsuper::" + r"super::" * depth
        used |= set(re.findall(prefix + r"(\w+)", code))
        for group in re.findall(prefix + r"\{([^}]*)\}", code):
            used |= set(re.findall(r"(?:^|,)\s*(\w+)", group))
        for other in sorted(used & kinds):
            if other == me:
                continue
            kind_edges += 1
            who = f"kind {me}" if me in kinds else f"kinds/{'/'.join(rel)} (shared by the kinds)"
            errors.append(f"{path.relative_to(root)}:{n}: {who} uses kind {other}")

# The list and trait (kinds/mod.rs) name a kind only inside the `check_kinds!` list.
in_list = False
for n, code in code_lines((probe / "mod.rs").read_text()):
    if code.startswith("check_kinds! {"):
        in_list = True
    elif in_list and code.startswith("}"):
        in_list = False
    elif not in_list:
        for other in sorted(set(re.findall(r"(?<![:\w])(\w+)::", code)) & kinds):
            errors.append(f"src/kinds/mod.rs:{n}: names kind {other} outside the check_kinds! list")

for e in errors:
    print(e)
print(f"check-layers: {len(layers)} modules, {len(edges)} edges, {len(kinds)} kinds, {len(errors)} violations")
sys.exit(1 if errors else 0)
