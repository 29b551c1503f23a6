"""Summarise ``nvcc -Xptxas -v`` output of msda_cuda.cu: registers and spills per kernel and arch.

    python3 ptxas_summary.py build/cuda/ptxas.log

Prints one row per architecture, one column per kernel (forward/backward x float/double), each
cell ``registers r, spill stores/loads s/l bytes``. Standard library only (the GPU check machine
may have no project environment). Exits 1 with a message naming the log when it holds no kernel
(so a change in ptxas's wording is noticed, not summarised as nothing).
"""

import re
import sys

_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\d+[a-z]?)'")
_SPILLS = re.compile(
    r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, "
    r"(?P<loads>\d+) bytes spill loads"
)
_REGS = re.compile(r"Used (?P<regs>\d+) registers")
# Itanium mangling of the kernel templates: forward_kernel<float> -> "forward_kernelIfE".
_KERNELS = {
    "forward_kernelIfE": "forward<float>",
    "forward_kernelIdE": "forward<double>",
    "backward_kernelIfE": "backward<float>",
    "backward_kernelIdE": "backward<double>",
}


def parse(text):
    """{(arch, kernel): {'registers': int, 'stores': int, 'loads': int, 'stack': int}}."""
    table, current = {}, None
    for line in text.splitlines():
        entry = _ENTRY.search(line)
        if entry:
            kernel = next((k for m, k in _KERNELS.items() if m in entry["name"]), None)
            current = None if kernel is None else table.setdefault((entry["arch"], kernel), {})
            continue
        if current is None:
            continue
        spills = _SPILLS.search(line)
        if spills:
            current.update(
                stack=int(spills["stack"]), stores=int(spills["stores"]), loads=int(spills["loads"])
            )
        regs = _REGS.search(line)
        if regs:
            current["registers"] = int(regs["regs"])
    return table


def format_table(table):
    """The summary as text lines (architectures in numeric order)."""
    kernels = [k for k in _KERNELS.values() if any(key[1] == k for key in table)]
    archs = sorted({a for a, _ in table}, key=lambda a: int(re.sub(r"\D", "", a)))
    width = 30
    lines = [
        "ptxas: registers and spill stores/loads (bytes) per kernel",
        "arch     " + "".join(k.ljust(width) for k in kernels),
    ]
    for arch in archs:
        cells = []
        for kernel in kernels:
            info = table.get((arch, kernel))
            cells.append(
                "-"
                if info is None
                else f"{info.get('registers', '?')} regs, spill {info.get('stores', '?')}/"
                f"{info.get('loads', '?')}"
            )
        lines.append(arch.ljust(9) + "".join(c.ljust(width) for c in cells))
    spilled = sorted(
        f"{a} {k}"
        for (a, k), info in table.items()
        if info.get("stores", 0) or info.get("loads", 0)
    )
    lines.append("spills: " + (", ".join(spilled) if spilled else "none"))
    return lines


def main(argv):
    if len(argv) != 1:
        print("usage: python3 ptxas_summary.py PTXAS_LOG", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8", errors="replace") as handle:
        table = parse(handle.read())
    if not table:
        print(
            f"ptxas_summary: no ms_deform_attn kernel found in {argv[0]} "
            "(was it compiled with -Xptxas -v?)",
            file=sys.stderr,
        )
        return 1
    print("\n".join(format_table(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
