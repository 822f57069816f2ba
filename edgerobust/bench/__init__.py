"""Latency benchmarks: timers and statistics, runtimes, measurement modes, memory, the GEMM ceiling."""
from .api import BENCH_NAME, bench_run
from .ceiling import achieved_gflops, gemm_ceiling
from .memory import PeakRSS, measure_memory
from .modes import MODES, run_mode
from .runtimes import RUNTIMES, BenchModel, Runtime, Session, get_runtime, require_runtime, runtime_table
from .timing import TimingPlan, summarize, time_calls

__all__ = ["BENCH_NAME", "MODES", "RUNTIMES", "BenchModel", "PeakRSS", "Runtime", "Session", "TimingPlan",
           "achieved_gflops", "bench_run", "gemm_ceiling", "get_runtime", "measure_memory", "require_runtime",
           "run_mode", "runtime_table", "summarize", "time_calls"]
