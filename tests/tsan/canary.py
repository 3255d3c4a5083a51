"""Two threads call racy.c's gp_canary_bump at once; TSan must report the race.

Run by scripts/tsan-tests as ``python canary.py path/to/racy.so``; the threads meet
on a barrier so that their loops overlap in time (TSan only sees a race between
accesses that no synchronisation orders, and the interpreter's own locks could
order two loops that ran one after the other)."""

import ctypes
import sys
import threading

bump = ctypes.CDLL(sys.argv[1]).gp_canary_bump
barrier = threading.Barrier(2)


def run():
    barrier.wait()
    bump(3_000_000)  # a plain int: no ctypes object is made in the threads


threads = [threading.Thread(target=run) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("canary: no report")
