#!/usr/bin/env python3
"""Where the WASI component's code goes: function body sizes by crate (and by module of the
big crates), read from the core module's code and `name` sections. Standard library only.

The shipped component is stripped (no names); build one with names first:

    CARGO_PROFILE_WASM_STRIP=false cargo build -p autoglm-component --target wasm32-wasip2 --profile wasm
    python3 tools/bench/component_sizes.py $CARGO_TARGET_DIR/wasm32-wasip2/wasm/autoglm_component.wasm [DEPTH]

DEPTH (default 1) is how many path segments below the crate to group by. A generic function is
counted under the first crate its name mentions (`core::ptr::drop_in_place<tract_core::…>` goes to
tract_core), so the split is indicative: instantiations land with the crate that asked for them.
"""
import collections
import re
import sys

SKIP = ("core", "alloc", "std")


def leb(b, i):
    value = shift = 0
    while True:
        x = b[i]
        i += 1
        value |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return value, i


def sections(b, i, end):
    while i < end:
        sid = b[i]
        n, i = leb(b, i + 1)
        yield sid, i, i + n
        i += n


def core_modules(b, start, end, found):
    """Core modules (section 1) of a component, nested components (section 4) included."""
    for sid, s, e in sections(b, start, end):
        if sid == 1:
            found.append((s, e))
        elif sid == 4:
            core_modules(b, s + 8, e, found)
    return found


def demangle(name):
    """Rust's legacy mangling (`_ZN…E`) to a `::` path, enough to read crate and module."""
    if not name.startswith("_ZN"):
        return name
    i, parts = 3, []
    while i < len(name) and name[i].isdigit():
        j = i
        while name[j].isdigit():
            j += 1
        n = int(name[i:j])
        parts.append(name[j:j + n])
        i = j + n
    if parts and re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
        parts.pop()
    out = "::".join(parts)
    for code, text in [("$LT$", "<"), ("$GT$", ">"), ("..", "::"), ("$u20$", " "), ("$RF$", "&"),
                       ("$C$", ","), ("$u7b$", "{"), ("$u7d$", "}"), ("$BP$", "*")]:
        out = out.replace(code, text)
    return out.lstrip("_")


def main():
    path = sys.argv[1]
    depth = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    data = open(path, "rb").read()
    start, end = max(core_modules(data, 8, len(data), []), key=lambda m: m[1] - m[0])
    imported, sizes, names = 0, [], {}
    for sid, s, e in sections(data, start + 8, end):
        if sid == 2:  # imports: functions among them take the first indices
            n, i = leb(data, s)
            for _ in range(n):
                for _field in range(2):
                    length, i = leb(data, i)
                    i += length
                kind = data[i]
                i += 1
                if kind == 0:
                    _, i = leb(data, i)
                    imported += 1
                elif kind == 1:  # table: type, limits
                    i += 1
                    flags, i = leb(data, i)
                    _, i = leb(data, i)
                    if flags & 1:
                        _, i = leb(data, i)
                elif kind == 2:  # memory: limits
                    flags, i = leb(data, i)
                    _, i = leb(data, i)
                    if flags & 1:
                        _, i = leb(data, i)
                elif kind == 3:  # global: type, mutability
                    i += 2
        elif sid == 10:  # code: one body per defined function
            n, i = leb(data, s)
            for _ in range(n):
                length, i = leb(data, i)
                sizes.append(length)
                i += length
        elif sid == 0:
            length, i = leb(data, s)
            if data[i:i + length] != b"name":
                continue
            i += length
            while i < e:
                sub = data[i]
                length, i = leb(data, i + 1)
                j, i = i, i + length
                if sub == 1:  # function names
                    n, j = leb(data, j)
                    for _ in range(n):
                        index, j = leb(data, j)
                        length, j = leb(data, j)
                        names[index] = data[j:j + length].decode("utf8", "replace")
                        j += length
    if not names:
        sys.exit(f"{path}: no name section (build with CARGO_PROFILE_WASM_STRIP=false)")
    total = sum(sizes)
    print(f"{path}: {len(data) / 1e6:.2f} MB, code {total / 1e6:.2f} MB in {len(sizes)} functions")
    by_crate, by_module = collections.Counter(), collections.Counter()
    for index, size in enumerate(sizes):
        name = demangle(names.get(imported + index, "?"))
        # Paths of at least two segments, starting at a word boundary: `<A as B>` and type
        # names are no crates.
        paths = re.findall(r"(?<![A-Za-z0-9_])([a-z_][a-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*)+)", name)
        crate, rest = next(((c, r) for c, r in paths if c not in SKIP), paths[0] if paths else ("?", ""))
        by_crate[crate] += size
        by_module["::".join([crate] + rest.split("::")[1:1 + depth])] += size
    print("\n| crate | MB | share |\n|---|---:|---:|")
    for crate, size in by_crate.most_common(25):
        print(f"| {crate} | {size / 1e6:.3f} | {100 * size / total:.1f} % |")
    print(f"\n| module (depth {depth}) | MB |\n|---|---:|")
    for module, size in by_module.most_common(40):
        print(f"| {module} | {size / 1e6:.3f} |")


if __name__ == "__main__":
    main()
