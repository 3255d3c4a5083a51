/* What one thread's reads of lines another thread writes cost on this machine: the
 * floor under benchmarks/lease_cost.py --threads 2.
 *
 *     cc -O2 -pthread benchmarks/coherence.c -o /tmp/coherence && /tmp/coherence
 *
 * Each thread does what a load-aware pick does to 8 nodes' load lines, in C with
 * nothing else: (own) adds and takes back 1 on a line of its own; (scan) also reads
 * all 8 lines first, four of which the other thread writes; (same) both threads write
 * one line.  With one thread every line stays in its core's cache; with two, a read
 * of a line the other core wrote since waits for the line to move between cores.
 * A pick that knows every node's in-flight count when it picks pays that at least
 * once per pick whenever other threads pick as often; only a view allowed to be
 * stale (read every k picks) would pay it less often.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define NODES 8
#define ITERATIONS 20000000L

struct line {
    _Alignas(128) _Atomic uint64_t value;  /* 128: apart from the adjacent-line prefetch too */
};

static struct line lines[NODES];
static int mode;
static atomic_int go;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *run(void *arg) {
    int me = (int)(intptr_t)arg;
    uint64_t sum = 0;
    while (!atomic_load(&go)) {
    }
    for (long i = 0; i < ITERATIONS; i++) {
        int mine = mode == 2 ? 0 : me * 4 + (int)(i & 3);
        if (mode >= 1)
            for (int k = 0; k < NODES; k++)
                sum += atomic_load_explicit(&lines[k].value, memory_order_relaxed);
        atomic_fetch_add_explicit(&lines[mine].value, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&lines[mine].value, 1, memory_order_relaxed);
    }
    return (void *)(uintptr_t)sum;
}

int main(void) {
    static const char *names[] = {"own", "scan", "same"};
    for (mode = 0; mode < 3; mode++) {
        double per[3];
        for (int threads = 1; threads <= 2; threads++) {
            pthread_t t[2];
            atomic_store(&go, 0);
            for (int i = 0; i < threads; i++)
                pthread_create(&t[i], NULL, run, (void *)(intptr_t)i);
            double start = now();
            atomic_store(&go, 1);
            for (int i = 0; i < threads; i++)
                pthread_join(t[i], NULL);
            per[threads] = (now() - start) / ITERATIONS * 1e9;
        }
        printf("%-4s 1 thread %6.1f ns a step, 2 threads %6.1f ns a step each (+%.1f ns)\n",
               names[mode], per[1], per[2], per[2] - per[1]);
    }
    return 0;
}
