"""Every garbage collection of a benchmarked process, timed (bench/streams.py).

On PYTHONPATH with BENCH_GC_DIR set, every Python process started (a gateway worker
or the pass-through) records each collection with `gc.callbacks` and, twice a second,
writes to BENCH_GC_DIR/<pid>.json: counts and total milliseconds per generation, and
every pause of 1 ms or more as [monotonic seconds at its end, generation, ms, ms of
CPU]: on a shared core the wall-clock pause includes time the process waited for the
CPU, the CPU time is what the collection itself cost. With
BENCH_GC_OBJECTS set too, also how many objects each generation holds (a walk of the
heap: for diagnosis, not for a measured run). Without BENCH_GC_DIR it does nothing.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time

__all__: list[str] = []


def _install(folder: str) -> None:
    counts = [0, 0, 0]
    totals = [0.0, 0.0, 0.0]
    pauses: list[list[float]] = []
    began = [0.0, 0.0]
    clock, cpu = time.perf_counter, time.thread_time

    walked: list[int] = []  # with BENCH_GC_OBJECTS: objects each collection walks
    count_objects = bool(os.environ.get("BENCH_GC_OBJECTS"))

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            if count_objects and len(walked) < 100_000:
                gen = info["generation"]
                walked.append(sum(len(gc.get_objects(g)) for g in range(gen + 1)))
            began[0], began[1] = clock(), cpu()
            return
        ms = (clock() - began[0]) * 1000
        cpu_ms = (cpu() - began[1]) * 1000
        gen = info["generation"]
        counts[gen] += 1
        totals[gen] += ms
        if ms >= 1.0 and len(pauses) < 100_000:
            pauses.append([time.monotonic(), gen, round(ms, 3), round(cpu_ms, 3)])

    gc.callbacks.append(timed)
    path = os.path.join(folder, f"{os.getpid()}.json")

    def write() -> None:
        while True:
            time.sleep(0.5)
            state: dict[str, object] = {"counts": counts, "total_ms": totals, "pauses": pauses}
            if count_objects:  # diagnosis only: walks the heap
                state["objects"] = [len(gc.get_objects(g)) for g in range(3)]
                state["frozen"] = gc.get_freeze_count()
                state["walked"] = walked
            with open(path + ".tmp", "w") as out:
                json.dump(state, out)
            os.replace(path + ".tmp", path)

    threading.Thread(target=write, name="gc-probe", daemon=True).start()


if os.environ.get("BENCH_GC_DIR"):
    _install(os.environ["BENCH_GC_DIR"])
