#!/usr/bin/env python3
"""Import circles between the files of a crate: each `.rs` file under SRC is a node, and a file
depends on another when it names it in a path (`use crate::a::b`, `crate::a::f()`, `super::x`,
`self::x`, in code, not in comments). Prints every strongly connected component of more than one
file and exits 1 if there is one.

  scripts/module-cycles.py model/src server/src evals/src

A module's `mod.rs` that only declares and re-exports its children (`mod x; pub use x::T;`) does
not depend on them for this check: what a parent re-exports is its children's, not a circle.
"""

import os
import re
import sys

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_TREE = re.compile(r"\buse\s+(crate|super|self)::\{([^;]*)\}\s*;", re.S)


def module_of(root, file):
    """`a/b.rs` → ['a', 'b']; `a/mod.rs` → ['a']; `lib.rs` → []."""
    rel = os.path.relpath(file, root)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)  # line comments and doc comments
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)  # string literals


def resolve(files, base, segments):
    """The longest module path prefix of `base + segments` that is a file."""
    path = base + segments
    for n in range(len(path), len(base) - 1, -1):
        if tuple(path[:n]) in files:
            return tuple(path[:n])
    return None


def edges(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(".rs"):
                f = os.path.join(dirpath, name)
                files[tuple(module_of(root, f))] = f
    deps = {m: set() for m in files}
    for mod, f in files.items():
        text = strip(open(f).read())
        is_dir_mod = os.path.basename(f) in ("mod.rs", "lib.rs", "main.rs")
        # `self::`/`super::` are relative to the module a file defines.
        here = list(mod)
        paths = [(k, p.split("::")[1:]) for k, p in PATH.findall(text)]
        for kind, body in USE_TREE.findall(text):
            for item in re.split(r",\s*", body):
                first = item.strip().split("::")[0].split(" as ")[0].strip("{} ")
                if first:
                    paths.append((kind, [first]))
        for kind, segs in paths:
            if kind == "crate":
                base = []
            elif kind == "self":
                base = here
            else:
                base = here[:-1]
            target = resolve(files, base, segs)
            if target is None or target == mod:
                continue
            # A parent naming its own children (declaring, re-exporting) is not a dependency.
            if is_dir_mod and target[: len(mod)] == mod and len(target) > len(mod):
                continue
            deps[mod].add(target)
    return files, deps


def sccs(deps):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in deps:
        if v not in index:
            visit(v)
    return out


def main():
    bad = 0
    for root in sys.argv[1:] or ["model/src", "server/src", "evals/src"]:
        files, deps = edges(root)
        for comp in sccs(deps):
            if len(comp) > 1:
                bad += 1
                names = sorted(os.path.relpath(files[m], root) for m in comp)
                print(f"{root}: import circle: {' <-> '.join(names)}")
    if bad:
        sys.exit(1)
    print("no import circles")


if __name__ == "__main__":
    main()
