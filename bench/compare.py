#!/usr/bin/env python3
"""Side-by-side benchmark: PyTorch and `recurrent bench` on the same configurations, in
one run, on this machine. Prints one row per configuration with the ratio
PyTorch time / recurrent time (higher is better for recurrent), after the machine's roof:
the GFLOP/s of a 1024^3 matrix product by PyTorch and by `recurrent bench --gemm 1024`
in the same run; each row's GFLOP/s is also given as a share of the higher of the two.

Usage:
    python bench/compare.py [--threads 2] [--binary target/release/recurrent] [--rows latency,gru_train]
        [--repeats 3] [--markdown] [--python]

With --python, the rows run twice in the same PyTorch loop instead: once with torch.nn's
module and once with recurrent.torch's (the Python package, installed with
`pip install ./python`), so the ratio is what a PyTorch user gets by swapping one line
(the bf16 rows, which need autocast inside the recurrent layer, are left out).

Needs `torch` in the running interpreter (e.g. a virtualenv outside the repository) and a
release build (`cargo build --release`). Each PyTorch row runs in a fresh subprocess, so its
peak-memory figure (growth of the resident set during the timed loop) is not polluted by
the other rows.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys

# name, mode, I, H, layers, bidirectional, proj, B, T, train, lengths, target ratio, precision
# (bf16: both sides train in mixed precision, PyTorch under torch.autocast("cpu", bfloat16))
ROWS = [
    ("latency", "LSTM", 256, 256, 1, False, 0, 1, 100, False, None, 2.0, "f32"),
    ("lstm_throughput", "LSTM", 512, 512, 2, False, 0, 64, 100, False, None, 1.05, "f32"),
    ("gru_throughput", "GRU", 512, 512, 2, False, 0, 64, 100, False, None, 1.35, "f32"),
    ("bilstm", "LSTM", 256, 256, 1, True, 0, 32, 100, False, None, 1.1, "f32"),
    ("lstm_train", "LSTM", 256, 256, 2, False, 0, 32, 50, True, None, 1.3, "f32"),
    ("gru_train", "GRU", 256, 256, 2, False, 0, 32, 50, True, None, 1.5, "f32"),
    ("rnn_train", "RNN_TANH", 256, 256, 2, False, 0, 32, 50, True, None, 1.5, "f32"),
    ("projections", "LSTM", 512, 512, 2, False, 128, 64, 100, False, None, 1.5, "f32"),
    ("variable_length", "LSTM", 256, 256, 2, False, 0, 64, 100, True, "uniform", 3.0, "f32"),
    ("variable_length_padded", "LSTM", 256, 256, 2, False, 0, 64, 100, True, None, None, "f32"),
    ("lm_train", "LSTM", 64, 640, 1, False, 0, 32, 256, True, None, None, "f32"),
    ("lm_train_bf16", "LSTM", 64, 640, 1, False, 0, 32, 256, True, None, None, "bf16"),
]

# Rows run a second time as `<name>_loaded`, with a busy process pinned to the last CPU
# beside both sides (a machine where something else runs); these rows also time ours on
# one thread, which a 2-thread run should stay close to.
LOADED_ROWS = ["latency", "lstm_train"]
ROWS += [(row[0] + "_loaded",) + row[1:] for row in ROWS if row[0] in LOADED_ROWS]

TORCH_CHILD = r'''
import json, resource, sys, time
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
a = json.loads(sys.argv[1])
torch.set_num_threads(a.get("loop_threads") or a["threads"])
torch.manual_seed(0)
mode, I, H, L, bi, P, B, T = a["mode"], a["I"], a["H"], a["L"], a["bi"], a["P"], a["B"], a["T"]
layers = nn
if a.get("impl") == "recurrent.torch":
    import recurrent
    import recurrent.torch as layers
    recurrent.set_num_threads(a["threads"])
kw = dict(num_layers=L, bidirectional=bi)
if mode == "LSTM":
    rnn = layers.LSTM(I, H, proj_size=P, **kw)
elif mode == "GRU":
    rnn = layers.GRU(I, H, **kw)
else:
    rnn = layers.RNN(I, H, nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kw)
width = (2 if bi else 1) * (P or H)
x = torch.rand(T, B, I) * 2 - 1
lengths = None
if a["lengths"] == "uniform":
    lengths = torch.tensor([T] if B == 1 else [1 + b * (T - 1) // (B - 1) for b in range(B)])
def run_rnn(x):
    if lengths is None:
        out, _ = rnn(x)
        return out, out[-1]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, _ = rnn(packed)
    out, _ = pad_packed_sequence(out, total_length=T)
    last = out[lengths - 1, torch.arange(B)]
    return out, last
if a["train"]:
    head = nn.Linear(width, 1)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=1e-3)
    y = torch.zeros(B, 1)
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a["precision"] == "bf16"):
            _, last = run_rnn(x)
            loss = nn.functional.mse_loss(head(last).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
else:
    rnn.eval()
    def step():
        with torch.no_grad():
            run_rnn(x)
for _ in range(a["warmup"]):
    step()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range(a["iters"]):
    t0 = time.perf_counter()
    step()
    times.append((time.perf_counter() - t0) * 1e3)
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024.0
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2], "min_ms": times[0], "max_ms": times[-1],
                  "rss_growth_mib": peak, "torch": torch.__version__}))
'''


def iters_for(row):
    """About a second of timed work per run (fewer repetitions for the heavy rows)."""
    _, _, i, h, layers, _, _, b, t, train, _, _, _ = row
    work = i * h * layers * b * t * (3 if train else 1)
    return 10 if work > 2e9 else 30 if work > 2e8 else 100


TORCH_ROOF = r'''
import json, sys, time
import torch
n, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
x, y = torch.randn(n, n), torch.randn(n, n)
for _ in range(3):
    torch.mm(x, y)
times = []
for _ in range(20):
    t0 = time.perf_counter()
    torch.mm(x, y)
    times.append(time.perf_counter() - t0)
times.sort()
print(json.dumps({"gflops": 2 * n ** 3 / times[len(times) // 2] / 1e9}))
'''

ROOF_N = 1024


def roofs(threads, binary):
    """GFLOP/s of a 1024^3 matrix product: PyTorch's (MKL or oneDNN) and ours."""
    pt = subprocess.run([sys.executable, "-c", TORCH_ROOF, str(ROOF_N), str(threads)],
                        capture_output=True, text=True, check=True)
    ours = subprocess.run([binary, "bench", "--json", "--gemm", str(ROOF_N), "--threads", str(threads),
                           "--iters", "20"], capture_output=True, text=True, check=True)
    return json.loads(pt.stdout)["gflops"], json.loads(ours.stdout)["gflops"]


def torch_row(row, threads, impl="torch.nn", loop_threads=None):
    name, mode, i, h, layers, bi, proj, b, t, train, lengths, _, precision = row
    args = dict(mode=mode, I=i, H=h, L=layers, bi=bi, P=proj, B=b, T=t, train=train,
                lengths=lengths, threads=threads, warmup=3, iters=iters_for(row), precision=precision,
                impl=impl, loop_threads=loop_threads)
    out = subprocess.run([sys.executable, "-c", TORCH_CHILD, json.dumps(args)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def ours_row(row, threads, binary):
    name, mode, i, h, layers, bi, proj, b, t, train, lengths, _, precision = row
    cmd = [binary, "bench", "--json", "--mode", mode, "--input-size", str(i), "--hidden-size", str(h),
           "--precision", precision,
           "--num-layers", str(layers), "--proj-size", str(proj), "--batch", str(b), "--seq-len", str(t),
           "--threads", str(threads), "--iters", str(iters_for(row)), "--warmup", "3"]
    if bi:
        cmd.append("--bidirectional")
    if train:
        cmd.append("--train")
    if lengths:
        cmd += ["--lengths", lengths]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def cpu_info(binary):
    """The `cpu` object of `recurrent bench --json`: what the kernels detected here."""
    out = subprocess.run([binary, "bench", "--json", "--iters", "1", "--warmup", "0", "--seq-len", "1"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout).get("cpu", {})


def gflops(row, ms):
    """GFLOP/s of a row at `ms` per call: `2*B*T*(in+H_out)*G*H` per layer and direction
    (x3 for a training step; real tokens only for variable lengths), as `recurrent bench`."""
    _, mode, i, h, layers, bi, proj, b, t, train, lengths, _, _ = row
    gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    d, h_out = (2 if bi else 1), (proj or h)
    tokens = t * b
    if lengths == "uniform":
        tokens = t if b == 1 else sum(1 + k * (t - 1) // (b - 1) for k in range(b))
    flops = sum(2 * tokens * ((i if l == 0 else d * h_out) + h_out) * gates * h * d
                + (2 * tokens * h * h_out * d if proj else 0) for l in range(layers))
    return flops * (3 if train else 1) / (ms * 1e6)


def python_rows(a, rows, roof):
    """torch.nn against recurrent.torch in the same PyTorch loop."""
    rows = [r for r in rows if r[12] == "f32" and not r[0].endswith("_loaded")]
    header = ["row", "config", "torch.nn ms", "recurrent.torch ms", "ratio", "target",
              "recurrent.torch GFLOP/s", "share of roof", "torch.nn RSS growth MiB",
              "recurrent.torch RSS growth MiB"]
    if a.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header), flush=True)
    for row in rows:
        name, mode, i, h, layers, bi, proj, b, t, train, lengths, _, _ = row
        runs = [(torch_row(row, a.threads, "recurrent.torch", a.loop_threads), torch_row(row, a.threads))
                for _ in range(a.repeats)]
        ours = sorted((r[0] for r in runs), key=lambda r: r["median_ms"])[len(runs) // 2]
        pt = sorted((r[1] for r in runs), key=lambda r: r["median_ms"])[len(runs) // 2]
        target = 1.3 if train else 1.1
        cfg = f"{mode} I={i} H={h} L={layers}{' bi' if bi else ''}{f' proj={proj}' if proj else ''} B={b} T={t}" \
              f"{' train' if train else ''}{' lengths=' + lengths if lengths else ''}"
        rate = gflops(row, ours["median_ms"])
        cells = [name, cfg, f"{pt['median_ms']:.2f}", f"{ours['median_ms']:.2f}",
                 f"{pt['median_ms'] / ours['median_ms']:.2f}x", f">= {target}x", f"{rate:.0f}",
                 f"{100 * rate / roof:.0f}%", f"{pt['rss_growth_mib']:.1f}", f"{ours['rss_growth_mib']:.1f}"]
        print(("| " + " | ".join(cells) + " |") if a.markdown else "  ".join(cells), flush=True)
    loop = a.loop_threads or a.threads
    print(f"threads={a.threads} (torch threads of the loop around recurrent.torch: {loop}); "
          f"torch {pt.get('torch', '?')}", file=sys.stderr)


@contextlib.contextmanager
def busy_beside():
    """A process spinning on the last CPU for the duration of the block."""
    cpu = max(os.sched_getaffinity(0))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    try:
        yield
    finally:
        busy.kill()
        busy.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "recurrent"))
    ap.add_argument("--rows", default="")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of each side per row, alternating; the median of their medians is reported")
    ap.add_argument("--python", action="store_true",
                    help="torch.nn against recurrent.torch (the Python package) in the same PyTorch loop")
    ap.add_argument("--loop-threads", type=int, default=None,
                    help="with --python: torch's threads in the loop around recurrent.torch (default "
                         "--threads; the kernels always use --threads)")
    a = ap.parse_args()
    wanted = set(filter(None, a.rows.split(",")))
    rows = [r for r in ROWS if not wanted or r[0] in wanted]
    header = ["row", "config", "PyTorch ms", "recurrent ms", "ratio", "target", "recurrent GFLOP/s",
              "share of roof", "PyTorch RSS growth MiB", "recurrent peak MiB"]
    roof_pt, roof_ours = roofs(a.threads, a.binary)
    roof = max(roof_pt, roof_ours)
    print(f"roof ({ROOF_N}^3 product, {a.threads} threads): PyTorch {roof_pt:.0f} GFLOP/s, "
          f"recurrent {roof_ours:.0f} GFLOP/s", flush=True)
    if a.python:
        return python_rows(a, rows, roof)
    if a.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header), flush=True)
    for row in rows:
        name, mode, i, h, layers, bi, proj, b, t, train, lengths, target, precision = row
        # The machine is shared: alternate the two sides and keep the median of each
        # side's per-run medians, so a slow spell does not land on one side only.
        loaded = name.endswith("_loaded")
        if precision == "bf16" and not cpu_info(a.binary).get("bf16"):
            # Ours would train in f32, and PyTorch's oneDNN LSTM refuses bf16 here.
            print(f"{name}: skipped, this CPU has no AVX-512 BF16", file=sys.stderr, flush=True)
            continue
        with busy_beside() if loaded else contextlib.nullcontext():
            runs = [(ours_row(row, a.threads, a.binary), torch_row(row, a.threads)) for _ in range(a.repeats)]
            solo = [ours_row(row, 1, a.binary) for _ in range(a.repeats)] if loaded else []
        ours = sorted((r[0] for r in runs), key=lambda r: r["median_ms"])[len(runs) // 2]
        pt = sorted((r[1] for r in runs), key=lambda r: r["median_ms"])[len(runs) // 2]
        ratio = pt["median_ms"] / ours["median_ms"]
        cfg = f"{mode} I={i} H={h} L={layers}{' bi' if bi else ''}{f' proj={proj}' if proj else ''} B={b} T={t}" \
              f"{' train' if train else ''}{' lengths=' + lengths if lengths else ''}" \
              f"{' bf16' if precision == 'bf16' else ''}"
        if loaded:
            one = sorted(r["median_ms"] for r in solo)[len(solo) // 2]
            cfg += f", busy CPU beside (ours on 1 thread: {one:.2f} ms)"
        cells = [name, cfg, f"{pt['median_ms']:.2f}", f"{ours['median_ms']:.2f}", f"{ratio:.2f}x",
                 f">= {target}x" if target else "-", f"{ours['gflops']:.0f}",
                 f"{100 * ours['gflops'] / roof:.0f}%", f"{pt['rss_growth_mib']:.1f}",
                 f"{ours['peak_mib']:.1f}"]
        if a.markdown:
            print("| " + " | ".join(cells) + " |", flush=True)
        else:
            print("  ".join(cells), flush=True)
    cpu = ours.get("cpu", {})
    print(f"threads={a.threads}; torch {pt.get('torch', '?')}; cpu {cpu.get('model_name', '?')} "
          f"(family {cpu.get('family', '?')} model {cpu.get('model', '?')}, kernels {cpu.get('level', '?')}, "
          f"L2 {cpu.get('l2_bytes', '?')} B, panel groups {cpu.get('panel_group_bytes', '?')} B)", file=sys.stderr)


if __name__ == "__main__":
    main()
