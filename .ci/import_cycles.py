#!/usr/bin/env python3
"""Import cycles between the files of a Rust crate's `src/` directory.

An edge A -> B means file A names module B: a `use crate::..`, `crate::..`, `super::..` or `self::..` path,
or a reference to one of A's child modules by name. Comments, doc links and `#[cfg(test)] mod` blocks are
not imports. Prints every cycle (a strongly connected component of more than one file) and exits 1 if there
is any; `-v` also lists every edge.

    python3 .ci/import_cycles.py [-v] vcan/src harness/src harness/vmm/src
"""
import os
import re
import sys

TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{")


def modules(root):
    """Module path (`env::board`, '' for lib.rs/main.rs) -> file."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(d, f), root)[:-3].replace(os.sep, "::")
            if rel.endswith("::mod"):
                rel = rel[: -len("::mod")]
            if rel in ("lib", "main"):
                rel = ""
            out[rel] = os.path.join(d, f)
    return out


def strip_tests(src):
    out, i = [], 0
    while (m := TEST_MOD.search(src, i)) is not None:
        out.append(src[i : m.start()])
        j, depth = m.end(), 1
        while depth and j < len(src):
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            j += 1
        i = j
    out.append(src[i:])
    return "".join(out)


def split_top(body):
    parts, depth, cur = [], 0, ""
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def edges_of(mods):
    def resolve(segs):
        for n in range(len(segs), 0, -1):
            m = "::".join(segs[:n])
            if m in mods:
                return m
        return ""

    edges = {m: set() for m in mods}
    for m, path in mods.items():
        with open(path, encoding="utf-8") as fh:
            src = strip_tests(fh.read())
        src = re.sub(r"//[^\n]*", "", src)
        parent = m.rsplit("::", 1)[0] if "::" in m else ""
        src = re.sub(r"\bsuper::", "crate::" + (parent + "::" if parent else ""), src)
        src = re.sub(r"\bself::(?=\w)", "crate::" + (m + "::" if m else ""), src)
        targets = []
        for use in re.finditer(r"\buse\s+crate::(\{[^;]*\}|[^;]*);", src, re.S):
            body = use.group(1)
            parts = split_top(body[1:-1]) if body.startswith("{") else [body]
            for part in (p.strip() for p in parts):
                head = [s.strip() for s in re.sub(r"\{.*", "", part, flags=re.S).split("::") if s.strip()]
                targets.append(head)
                inner = re.search(r"\{(.*)\}", part, re.S)
                if inner:
                    for sub in inner.group(1).split(","):
                        tail = [s.strip() for s in sub.split("::") if s.strip() and s.strip() != "self"]
                        targets.append(head + tail)
        for p in re.finditer(r"(?<!use )\bcrate::((?:\w+::)*\w+)", src):
            targets.append(p.group(1).split("::"))
        for child in mods:
            prefix = m + "::" if m else ""
            if child.startswith(prefix) and child != m and "::" not in child[len(prefix) :]:
                name = child.rsplit("::", 1)[-1]
                if re.search(r"(?<![\w:])" + name + r"::", src):
                    targets.append(child.split("::"))
        for segs in targets:
            t = resolve(segs)
            if t and t != m:
                edges[m].add(t)
    return edges


def cycles(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            if len(comp) > 1:
                out.append(sorted(x or "<root>" for x in comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def main(argv):
    verbose = "-v" in argv
    roots = [a for a in argv if a != "-v"]
    found = 0
    for root in roots:
        edges = edges_of(modules(root))
        if verbose:
            for m in sorted(edges):
                print(f"  {m or '<root>'} -> {', '.join(sorted(x or '<root>' for x in edges[m]))}")
        cyc = cycles(edges)
        found += len(cyc)
        print(f"{root}: {len(edges)} files, {sum(len(e) for e in edges.values())} edges, {len(cyc)} cycles")
        for c in cyc:
            print("  cycle:", " ".join(c))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
