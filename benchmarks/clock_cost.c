/* What a deadline's clock costs, and how far the coarse clock lags (Linux).
 *
 *     cc -O2 benchmarks/clock_cost.c -o /tmp/clock_cost && /tmp/clock_cost
 *
 * 1. ns per clock_gettime() of CLOCK_MONOTONIC and CLOCK_MONOTONIC_COARSE, 15
 *    interleaved rounds of 2,000,000 reads, medians, and their ratio: why
 *    gonka_pool reads deadlines on the coarse clock (docs/api.md, "Behaviour").
 * 2. The coarse clock's lag behind the precise one, sampled for 3 s, in ticks
 *    (clock_getres): every deadline adds one tick, so a node can come back early
 *    only by what the lag exceeds one tick. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline int64_t read_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double per_read(clockid_t c, int reads) {
    volatile int64_t sink = 0;
    int64_t start = read_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < reads; i++) sink += read_ns(c);
    return (double)(read_ns(CLOCK_MONOTONIC) - start) / reads;
}

int main(void) {
    enum { ROUNDS = 15, READS = 2000000 };
    double precise[ROUNDS], coarse[ROUNDS];
    struct timespec res;
    for (int r = 0; r < ROUNDS; r++) {
        precise[r] = per_read(CLOCK_MONOTONIC, READS);
        coarse[r] = per_read(CLOCK_MONOTONIC_COARSE, READS);
    }
    qsort(precise, ROUNDS, sizeof(double), cmp);
    qsort(coarse, ROUNDS, sizeof(double), cmp);
    printf("CLOCK_MONOTONIC %.1f ns/read, CLOCK_MONOTONIC_COARSE %.1f ns/read: coarse = %.2fx precise\n",
           precise[ROUNDS / 2], coarse[ROUNDS / 2], coarse[ROUNDS / 2] / precise[ROUNDS / 2]);

    clock_getres(CLOCK_MONOTONIC_COARSE, &res);
    int64_t tick = (int64_t)res.tv_sec * 1000000000 + res.tv_nsec, min_lag = INT64_MAX, max_lag = 0;
    long samples = 0, over_tick = 0;
    int64_t end = read_ns(CLOCK_MONOTONIC) + 3000000000LL;
    while (read_ns(CLOCK_MONOTONIC) < end) {
        int64_t lag = read_ns(CLOCK_MONOTONIC) - read_ns(CLOCK_MONOTONIC_COARSE);
        if (lag < min_lag) min_lag = lag;
        if (lag > max_lag) max_lag = lag;
        over_tick += lag > tick;
        if (++samples % 1024 == 0) {  /* let the timer interrupt land between samples */
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
        }
    }
    printf("coarse tick %lld ns; lag behind the precise clock %.2f to %.2f ticks over %ld samples "
           "(%.1f%% above one tick)\n", (long long)tick, (double)min_lag / tick, (double)max_lag / tick,
           samples, 100.0 * over_tick / samples);
    return 0;
}
