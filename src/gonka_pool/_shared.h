/* Named shared memory for EndpointPool(shared=...): POSIX shm_open + mmap.
 *
 * Written here rather than through multiprocessing.shared_memory: before Python
 * 3.13 that module registers every segment it opens with the resource tracker,
 * which unlinks it when the process that opened it exits, and a segment that keeps
 * what workers learned must outlive any one of them.
 *
 * Every function returns 0 or an errno value (gp_shm_map also GP_SHM_FOREIGN);
 * nothing here touches a Python object.
 * Windows has no POSIX shared memory: every call returns ENOSYS there.
 */
#ifndef GONKA_POOL_SHARED_H
#define GONKA_POOL_SHARED_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "_atomics.h"

/* gp_shm_map's answer for a segment that exists but is not this user's alone. */
#define GP_SHM_FOREIGN (-1)

#if defined(_WIN32)
#  define GP_SHARED_SUPPORTED 0
static __inline int gp_shm_map(const char *name, size_t size, int *created, void **base,
                               size_t *length, int *fd, uint64_t *owner, uint64_t *mode) {
    (void)name; (void)size; (void)created; (void)base; (void)length; (void)fd; (void)owner;
    (void)mode;
    return ENOSYS;
}
static __inline int gp_shm_unlink(const char *name) { (void)name; return ENOSYS; }
static __inline void gp_shm_unmap(void *base, size_t length) { (void)base; (void)length; }
static __inline int gp_shm_size(int fd, size_t *length) { (void)fd; (void)length; return ENOSYS; }
static __inline void gp_shm_close(int fd) { (void)fd; }
static __inline uint64_t gp_pid(void) { return 0; }
static __inline uint64_t gp_euid(void) { return 0; }
static __inline uint64_t gp_pid_namespace(void) { return 0; }
static __inline int gp_pid_alive(uint64_t pid) { (void)pid; return 1; }
#  define GP_GUARD_SUPPORTED 0
typedef struct { int unused; } gp_guard_slot;
static __inline int gp_guard_install(void) { return 0; }
static __inline int gp_guard_register(void *base, size_t length, gp_guard_slot **slot_out) {
    (void)base; (void)length; *slot_out = NULL; return 0;
}
static __inline void gp_guard_forget(gp_guard_slot *slot) { (void)slot; }
static __inline int gp_guard_lost(gp_guard_slot *slot) { (void)slot; return 0; }
#else
#  define GP_SHARED_SUPPORTED 1
#  include <fcntl.h>
#  include <signal.h>
#  include <stdlib.h>
#  include <string.h>
#  include <sys/mman.h>
#  include <sys/stat.h>
#  include <sys/types.h>
#  include <unistd.h>

/* Map the segment `name`, creating it with `size` zero bytes (mode 0600: this
 * user's processes only) when there is none; *created says which, *fd stays open
 * for gp_shm_size.  Opening one that exists maps its whole current length; EAGAIN
 * while its creator has not yet sized it (the caller retries).
 *
 * A segment that exists is used only if this user owns it and no group or other
 * permission bit is set: GP_SHM_FOREIGN otherwise, with *owner and *mode set.  A
 * file another user made could be written by that user at any time (steering every
 * pick), and truncated (SIGBUS on the next read).  The check is on the open file,
 * so a rename between a check and the open cannot slip past it; shm_open itself
 * refuses to follow a symbolic link (glibc opens with O_NOFOLLOW).
 *
 * The creator reserves the whole size (posix_fallocate, Linux): a sparse segment
 * on a full /dev/shm would raise SIGBUS at the first write of a page instead of an
 * error here. */
static inline int gp_shm_map(const char *name, size_t size, int *created, void **base,
                             size_t *length, int *fd_out, uint64_t *owner, uint64_t *mode) {
    struct stat st;
    void *p;
    int err;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    *created = fd >= 0;
    if (fd >= 0) {
#  if defined(__linux__)
        err = posix_fallocate(fd, 0, (off_t)size);
        if (err == EOPNOTSUPP || err == EINVAL)
            err = ftruncate(fd, (off_t)size) == 0 ? 0 : errno;
#  else
        err = ftruncate(fd, (off_t)size) == 0 ? 0 : errno;
#  endif
        if (err != 0) {
            close(fd);
            shm_unlink(name);
            return err;
        }
    } else {
        if (errno != EEXIST)
            return errno;
        fd = shm_open(name, O_RDWR, 0600);
        if (fd < 0)
            return errno == ENOENT ? EAGAIN : errno;  /* unlinked meanwhile: retry */
    }
    if (fstat(fd, &st) != 0) {
        err = errno;
        close(fd);
        return err;
    }
    if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
        *owner = (uint64_t)st.st_uid;
        *mode = (uint64_t)(st.st_mode & 07777);
        close(fd);
        return GP_SHM_FOREIGN;
    }
    if (st.st_size == 0) {  /* created, not yet sized */
        close(fd);
        return EAGAIN;
    }
    p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    err = errno;
    if (p == MAP_FAILED) {
        close(fd);
        return err;
    }
    *base = p;
    *length = (size_t)st.st_size;
    *fd_out = fd;
    return 0;
}

/* The segment's current length: a page past a truncated one's new end faults
 * (SIGBUS, which the guard below mends), so the caller checks it before it builds
 * on the mapping. */
static inline int gp_shm_size(int fd, size_t *length) {
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno;
    *length = (size_t)st.st_size;
    return 0;
}

static inline void gp_shm_close(int fd) { close(fd); }

static inline int gp_shm_unlink(const char *name) {
    return shm_unlink(name) == 0 ? 0 : errno;
}

static inline void gp_shm_unmap(void *base, size_t length) {
    munmap(base, length);
}

static inline uint64_t gp_pid(void) { return (uint64_t)getpid(); }

static inline uint64_t gp_euid(void) { return (uint64_t)geteuid(); }

/* Which pid namespace this process is in (the inode of /proc/self/ns/pid), or 0
 * where that is unknown: a pid is only judged dead by a process of its namespace. */
static inline uint64_t gp_pid_namespace(void) {
    struct stat st;
    return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* Whether process `pid` exists (EPERM: it does, under another user). */
static inline int gp_pid_alive(uint64_t pid) {
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* The SIGBUS guard (Linux): a segment truncated under a running pool must not crash
 * it.  A process of this user (or root) can shrink the file at any moment; every
 * later touch of a page past the new end faults with SIGBUS, and the hot path may
 * not pay a size check for that.  So a handler, installed once when the first
 * segment is mapped, looks the faulting address up in this process's table of
 * segment mappings; a fault inside one replaces that whole mapping by private zero
 * pages (zero is a safe value for every word of the layout: no deadline, no probe
 * claim, no holder, a never-used record), marks the slot lost, and returns, so the
 * faulting instruction runs again on the zeros.  The pool sees the flag at its next
 * update() (_Segment._intact) and goes on with health of its own.  Any other
 * SIGBUS goes to the handler installed before this one, or gets the default action,
 * exactly as if this one were not there.
 *
 * The table is read by the handler, in any thread, at any instruction: it takes no
 * lock and allocates nothing.  Blocks of slots are chained, allocated in ordinary
 * code and never freed; a slot is claimed, filled and cleared under its own
 * sequence number (odd while written), and the handler uses a (base, length) pair
 * only when the number was even and unchanged around reading it, so a slot being
 * reused is never read half old, half new.  A fault inside a registered range
 * comes from code using that segment, which keeps it mapped (a pool's memberships
 * hold their _Segment), and a slot is cleared before its range is unmapped: the
 * range the handler replaces cannot meanwhile belong to another mapping. */
#  if defined(__linux__)
#    define GP_GUARD_SUPPORTED 1
#    define GP_GUARD_BLOCK 64

typedef struct {
    gp_atomic_u64 seq;     /* odd while the slot is claimed or cleared */
    gp_atomic_u64 base;    /* 0: free */
    gp_atomic_u64 length;
    gp_atomic_u64 lost;    /* 0; 1 while the handler replaces the mapping; 2 after */
} gp_guard_slot;

typedef struct gp_guard_block {
    gp_guard_slot slots[GP_GUARD_BLOCK];
    gp_atomic_u64 next;    /* the next block (never freed), or 0 */
} gp_guard_block;

static gp_guard_block gp_guard_first;
static gp_atomic_u64 gp_guard_state;          /* 0 none, 1 installing, 2 installed */
static struct sigaction gp_guard_previous;    /* written before the handler is */

/* Where a SIGBUS that is not a segment's goes: the previous handler, called as the
 * kernel would have called it (faulthandler's prints its traceback, restores what
 * it replaced and raises the signal again), else the previous disposition put back.
 * Returning from a fault then runs the instruction again, which faults again under
 * the default action: the process dies of SIGBUS as it would have; a signal sent
 * with kill() is raised again (SA_NODEFER: delivered at once). */
static void gp_guard_chain(int signum, siginfo_t *info, void *context) {
    struct sigaction *previous = &gp_guard_previous;
    if (previous->sa_flags & SA_SIGINFO) {
        if (previous->sa_sigaction != NULL) {
            previous->sa_sigaction(signum, info, context);
            return;
        }
    } else if (previous->sa_handler != SIG_DFL && previous->sa_handler != SIG_IGN) {
        previous->sa_handler(signum);
        return;
    }
    /* SIG_DFL, or SIG_IGN (which the kernel overrides for a fault). */
    if (previous->sa_handler == SIG_IGN && info->si_code <= 0)
        return;
    signal(signum, SIG_DFL);
    if (info->si_code <= 0)
        raise(signum);
}

static void gp_guard_handler(int signum, siginfo_t *info, void *context) {
    int saved_errno = errno;
    gp_guard_block *block;
    uint64_t seq, base, length, lost;
    uintptr_t address;
    int i;
    /* BUS_ADRERR: a page of a mapping past the end of its file (si_code > 0: from
     * the kernel, so si_addr is the faulting address). */
    if (info != NULL && info->si_code == BUS_ADRERR) {
        address = (uintptr_t)info->si_addr;
        for (block = &gp_guard_first; block != NULL;
             block = (gp_guard_block *)(uintptr_t)gp_u64_load(&block->next)) {
            for (i = 0; i < GP_GUARD_BLOCK; i++) {
                gp_guard_slot *slot = &block->slots[i];
                seq = gp_u64_load(&slot->seq);
                if (seq & 1)
                    continue;
                base = gp_u64_load(&slot->base);
                length = gp_u64_load(&slot->length);
                if (gp_u64_load(&slot->seq) != seq || base == 0 || address < base
                        || address - base >= length)
                    continue;
                /* Ours.  One thread replaces the mapping; another faulting on it
                 * meanwhile returns and faults again until the zeros are there
                 * (replacing them twice would drop what the first one's thread
                 * wrote since). */
                lost = gp_u64_load(&slot->lost);
                if (lost == 0 && gp_u64_cas(&slot->lost, 0, 1)) {
                    if (mmap((void *)(uintptr_t)base, (size_t)length, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
                        break;  /* cannot mend it: die as before */
                    gp_u64_store(&slot->lost, 2);
                }
                errno = saved_errno;
                return;
            }
        }
    }
    errno = saved_errno;
    gp_guard_chain(signum, info, context);
}

/* Install the handler, once per process (a forked child inherits it): 0 or an
 * errno value. */
static inline int gp_guard_install(void) {
    struct sigaction ours;
    unsigned spins = 0;
    if (gp_u64_load(&gp_guard_state) == 2)
        return 0;
    if (gp_u64_cas(&gp_guard_state, 0, 1)) {
        memset(&ours, 0, sizeof ours);
        ours.sa_sigaction = gp_guard_handler;
        sigemptyset(&ours.sa_mask);
        ours.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        /* The previous handler is read first, so that it is in place before
         * ours can run in another thread. */
        if (sigaction(SIGBUS, NULL, &gp_guard_previous) != 0
                || sigaction(SIGBUS, &ours, NULL) != 0) {
            int err = errno;
            gp_u64_store(&gp_guard_state, 0);
            return err;
        }
        gp_u64_store(&gp_guard_state, 2);
        return 0;
    }
    while (gp_u64_load(&gp_guard_state) == 1)
        gp_spin_wait(&spins);
    return gp_u64_load(&gp_guard_state) == 2 ? 0 : EAGAIN;
}

/* Register the mapping [base, base + length) with the handler: *slot is its entry
 * until gp_guard_forget; 0 or ENOMEM. */
static inline int gp_guard_register(void *base, size_t length, gp_guard_slot **slot_out) {
    gp_guard_block *block = &gp_guard_first, *next;
    uint64_t seq;
    int i;
    for (;;) {
        for (i = 0; i < GP_GUARD_BLOCK; i++) {
            gp_guard_slot *slot = &block->slots[i];
            seq = gp_u64_load(&slot->seq);
            if (seq & 1 || gp_u64_load(&slot->base) != 0 || !gp_u64_cas(&slot->seq, seq, seq + 1))
                continue;
            gp_u64_store(&slot->lost, 0);
            gp_u64_store(&slot->length, (uint64_t)length);
            gp_u64_store(&slot->base, (uint64_t)(uintptr_t)base);
            gp_u64_store(&slot->seq, seq + 2);
            *slot_out = slot;
            return 0;
        }
        next = (gp_guard_block *)(uintptr_t)gp_u64_load(&block->next);
        if (next == NULL) {
            next = (gp_guard_block *)calloc(1, sizeof(gp_guard_block));
            if (next == NULL)
                return ENOMEM;
            if (!gp_u64_cas(&block->next, 0, (uint64_t)(uintptr_t)next)) {
                free(next);  /* another thread chained one first */
                next = (gp_guard_block *)(uintptr_t)gp_u64_load(&block->next);
            }
        }
        block = next;
    }
}

/* Clear a slot before its range is unmapped. */
static inline void gp_guard_forget(gp_guard_slot *slot) {
    uint64_t seq;
    if (slot == NULL)
        return;
    seq = gp_u64_load(&slot->seq);
    gp_u64_store(&slot->seq, seq + 1);
    gp_u64_store(&slot->base, 0);
    gp_u64_store(&slot->length, 0);
    gp_u64_store(&slot->seq, seq + 2);
}

/* Whether the handler has replaced this slot's mapping by zeros (it is then
 * private memory of this process: safe to read and write, shared with no one). */
static inline int gp_guard_lost(gp_guard_slot *slot) {
    return slot != NULL && gp_u64_load(&slot->lost) != 0;
}
#  else
#    define GP_GUARD_SUPPORTED 0
typedef struct { int unused; } gp_guard_slot;
static inline int gp_guard_install(void) { return 0; }
static inline int gp_guard_register(void *base, size_t length, gp_guard_slot **slot_out) {
    (void)base; (void)length; *slot_out = NULL; return 0;
}
static inline void gp_guard_forget(gp_guard_slot *slot) { (void)slot; }
static inline int gp_guard_lost(gp_guard_slot *slot) { (void)slot; return 0; }
#  endif
#endif

#endif /* GONKA_POOL_SHARED_H */
