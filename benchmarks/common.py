"""What the harnesses share: the machine header, timing, memory, tables, JSON documents, plots.

Timing: `time_call(fn, warmup=, runs=)` runs `fn` a few times untimed, then times each run with
`time.perf_counter`; `Timing` reports the median and p90 (linear interpolation between closest ranks,
numpy's default) in milliseconds, and throughput from the median.

Memory: `PeakRSS` measures the peak resident set size of a block, over the RSS at its start. On Linux it
resets the kernel's high-water mark first (`echo 5 > /proc/self/clear_refs`, then `VmHWM`), so the peak is
that of the block, not of the process's life; elsewhere it falls back to `ru_maxrss` and says so.
RSS and not tracemalloc: ONNX Runtime, PyTorch, faiss and usearch allocate natively, invisible to it.

A result document is one JSON object: {"format", "format_version", "benchmark", "machine", "config",
"rows": [flat dicts], ...}; `save_json` writes it, `load_json` reads it back and checks the header.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "edge-gcl/benchmark"
FORMAT_VERSION = 1
RESULTS_DIR = Path(__file__).resolve().parent / "results"  # the committed results docs/results.md shows
# Where a harness writes when not told otherwise (relative to the clone's root): a benchmark never
# overwrites the committed results unless named (`--json benchmarks/results/...`, report's `--out`).
RUNS_DIR = Path("runs") / "benchmarks"


def default_out(name: str) -> str:
    """`runs/benchmarks/<name>` (e.g. "index.json"): a harness's default output file."""
    return str(RUNS_DIR / name)
PACKAGES = ("edge-gcl", "numpy", "torch", "onnxruntime", "onnxruntime-qnn", "faiss-cpu", "usearch", "matplotlib")


# ----------------------------------------------------------------------------- timing
def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    if x.size == 0:
        raise ValueError("percentile: no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile: q must be in [0, 100], got {q}")
    pos = (x.size - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, x.size - 1)
    return float(x[lo] + (x[hi] - x[lo]) * (pos - lo))


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of repeated runs of one thing, in milliseconds."""

    samples_ms: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples_ms:
            raise ValueError("Timing: no samples")
        if any(not math.isfinite(s) or s < 0 for s in self.samples_ms):
            raise ValueError(f"Timing: samples must be finite and >= 0, got {self.samples_ms}")

    @property
    def runs(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p90_ms(self) -> float:
        return percentile(self.samples_ms, 90)

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.samples_ms))

    @property
    def min_ms(self) -> float:
        return float(min(self.samples_ms))

    def per_second(self, items: int = 1) -> float:
        """Throughput at the median: `items` processed per run."""
        return items / (self.median_ms / 1e3) if self.median_ms > 0 else math.inf

    def to_dict(self, items: int | None = None) -> dict[str, float | int]:
        d: dict[str, float | int] = {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "mean_ms": self.mean_ms,
                                     "min_ms": self.min_ms, "runs": self.runs}
        if items is not None:
            d["items_per_s"] = self.per_second(items)
        return d


def time_call(
    fn: Callable[[], object],
    *,
    warmup: int = 3,
    runs: int = 20,
    budget_s: float | None = None,
    min_runs: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Call `fn` `warmup` times untimed, then `runs` times timed (each call on its own).

    `budget_s` stops the timed runs early once they took that long in total (after `min_runs`), so a slow
    backend (HTP emulation) gets fewer runs instead of an unbounded wait.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"time_call: runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    total = 0.0
    for _ in range(runs):
        t0 = clock()
        fn()
        elapsed = clock() - t0
        samples.append(elapsed * 1e3)
        total += elapsed
        if budget_s is not None and total >= budget_s and len(samples) >= min_runs:
            break
    return Timing(tuple(samples))


# ----------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux


def rss_bytes() -> int:
    """This process's current resident set size (Linux: VmRSS; elsewhere the lifetime peak)."""
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else _maxrss_bytes()


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


class PeakRSS:
    """`with PeakRSS() as mem: ...`; then `mem.peak_mb` (peak RSS over the RSS at entry), `mem.delta_mb`
    (RSS at exit over RSS at entry: what the block left resident) and `mem.process_peak_mb` (the process's
    peak RSS during the block, absolute). `mem.method` says how it was measured.

    In a long-lived process, memory freed earlier and kept by the allocator is reused without raising the
    RSS, so "over the RSS at entry" understates a block that follows a bigger one: measure what must be
    comparable in a fresh process (the latency harness runs each form in its own)."""

    def __init__(self) -> None:
        self.baseline = 0
        self.peak_bytes = 0
        self.process_peak_bytes = 0
        self.delta_bytes = 0
        self.method = ""

    def __enter__(self) -> PeakRSS:
        reset = _reset_peak()
        self.method = "VmHWM (reset at start)" if reset else "ru_maxrss (process lifetime)"
        self.baseline = rss_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        kb = _status_kb("VmHWM") if self.method.startswith("VmHWM") else None
        peak = kb * 1024 if kb is not None else _maxrss_bytes()
        end = rss_bytes()
        self.process_peak_bytes = max(peak, end)
        self.peak_bytes = max(0, self.process_peak_bytes - self.baseline)
        self.delta_bytes = end - self.baseline

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def delta_mb(self) -> float:
        return self.delta_bytes / 2**20

    @property
    def process_peak_mb(self) -> float:
        return self.process_peak_bytes / 2**20


@contextmanager
def limit_threads(threads: int | None) -> Iterator[None]:
    """Cap the BLAS and OpenMP pools (numpy's OpenBLAS, faiss) at `threads` for the block; None: leave them.

    Uses threadpoolctl when it is installed (it is not a dependency), and faiss's own setter when faiss is.
    """
    if not threads:
        yield
        return
    limiter = None
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=threads)
    except ImportError:
        print("note: threadpoolctl is not installed; numpy's BLAS threads are not capped", file=sys.stderr)
    try:
        import faiss
    except ImportError:
        faiss = None
    before = faiss.omp_get_max_threads() if faiss is not None else None
    if faiss is not None:
        faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        if faiss is not None and before is not None:
            faiss.omp_set_num_threads(before)
        if limiter is not None:
            limiter.restore_original_limits()


# ----------------------------------------------------------------------------- machine header
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def machine_info() -> dict[str, Any]:
    """Date, machine and versions: the header every result carries."""
    try:
        cores_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        cores_usable = os.cpu_count()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": cores_usable,
        "memory_gb": _memory_gb(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "versions": package_versions(),
        "git_commit": _git_commit(),
    }


def header_line(machine: Mapping[str, Any]) -> str:
    """One line: date, CPU, cores, memory, load, Python and package versions, commit."""
    v = machine.get("versions", {})
    versions = ", ".join(f"{k} {v[k]}" for k in v)
    mem = f", {machine['memory_gb']} GB" if machine.get("memory_gb") else ""
    load = f", load {machine['load_avg_1m']}" if machine.get("load_avg_1m") is not None else ""
    commit = f", commit {machine['git_commit']}" if machine.get("git_commit") else ""
    return (f"{machine.get('date', '?')} | {machine.get('cpu', '?')} ({machine.get('machine', '?')}), "
            f"{machine.get('cores_usable', '?')} cores{mem}{load} | {machine.get('platform', '?')}, "
            f"Python {machine.get('python', '?')} | {versions}{commit}")


# ----------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Col:
    """A table column: the row key, its header (default: the key) and a format spec for numbers."""

    key: str
    header: str | None = None
    fmt: str = ""

    @property
    def title(self) -> str:
        return self.header if self.header is not None else self.key


def cell(value: Any, fmt: str = "") -> str:
    """A value as table text: None and NaN are "-", numbers use `fmt` (e.g. ".2f", "+.1f")."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return format(value, fmt)
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v, fmt) for v in value)
    return str(value)


def _is_number(value: Any) -> bool:
    """A real number to right-align (NaN and bools are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return not math.isnan(value)


def format_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[Col], *, title: str | None = None) -> str:
    """Plain-text table: text left-aligned, numbers right-aligned, a rule under the header."""
    cells = [[cell(r.get(c.key), c.fmt) for c in cols] for r in rows]
    numeric = [any(_is_number(r.get(c.key)) for r in rows) for c in cols]
    widths = [max([len(c.title), *(len(line[i]) for line in cells)]) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [title] if title else []
    out.append(line([c.title for c in cols]))
    out.append("  ".join("-" * w for w in widths))
    out += [line(values) for values in cells]
    return "\n".join(out)


def markdown_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[Col]) -> str:
    """GitHub markdown table; numeric columns right-aligned."""
    numeric = [any(_is_number(r.get(c.key)) for r in rows) for c in cols]

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    out = ["| " + " | ".join(esc(c.title) for c in cols) + " |",
           "| " + " | ".join("---:" if num else "---" for num in numeric) + " |"]
    out += ["| " + " | ".join(esc(cell(r.get(c.key), c.fmt)) for c in cols) + " |" for r in rows]
    return "\n".join(out)


# ----------------------------------------------------------------------------- JSON
def make_document(benchmark: str, rows: Sequence[Mapping[str, Any]], *, config: Mapping[str, Any],
                  machine: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "benchmark": benchmark,
            "machine": dict(machine) if machine is not None else machine_info(), "config": dict(config),
            "rows": [dict(r) for r in rows], **extra}


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def dumps(document: Mapping[str, Any]) -> str:
    """The JSON text of a document: indented, NaN/inf as null (JSON has neither)."""

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, Mapping):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, np.integer, np.ndarray, Path)):
            return clean(_jsonable(x))
        return x

    return json.dumps(clean(document), indent=2, allow_nan=False) + "\n"


def save_json(path: str | Path, document: Mapping[str, Any]) -> Path:
    """Write a document atomically (temp file + rename); creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(dumps(document))
    tmp.replace(path)
    return path


def load_json(path: str | Path, benchmark: str | None = None) -> dict[str, Any]:
    """Read a document written by `save_json`; checks the format header (and the benchmark name if given)."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not an edge-gcl benchmark result (format={doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {doc.get('format_version')!r}, this reader knows {FORMAT_VERSION}")
    if benchmark is not None and doc.get("benchmark") != benchmark:
        raise ValueError(f"{path}: a {doc.get('benchmark')!r} result, expected {benchmark!r}")
    return doc


# ----------------------------------------------------------------------------- CLI and plots
def parse_list(text: str, kind: type = str) -> list:
    """"1000,10000" -> [1000, 10000]; also accepts "1e6" for ints."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        out.append(int(float(part)) if kind is int else kind(part))
    if not out:
        raise ValueError(f"expected a comma-separated list, got {text!r}")
    return out


def pyplot():  # -> matplotlib.pyplot, headless
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path
