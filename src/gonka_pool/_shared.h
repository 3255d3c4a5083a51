/* Named shared memory for EndpointPool(shared=...): POSIX shm_open + mmap.
 *
 * Written here rather than through multiprocessing.shared_memory: before Python
 * 3.13 that module registers every segment it opens with the resource tracker,
 * which unlinks it when the process that opened it exits, and a segment that keeps
 * what workers learned must outlive any one of them.  The whole API is four calls.
 *
 * Every function returns 0 or an errno value; nothing here touches a Python object.
 * Windows has no POSIX shared memory: every call returns ENOSYS there.
 */
#ifndef GONKA_POOL_SHARED_H
#define GONKA_POOL_SHARED_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  define GP_SHARED_SUPPORTED 0
static __inline int gp_shm_map(const char *name, size_t size, int *created, void **base,
                               size_t *length) {
    (void)name; (void)size; (void)created; (void)base; (void)length;
    return ENOSYS;
}
static __inline int gp_shm_unlink(const char *name) { (void)name; return ENOSYS; }
static __inline void gp_shm_unmap(void *base, size_t length) { (void)base; (void)length; }
static __inline uint64_t gp_pid(void) { return 0; }
static __inline int gp_pid_alive(uint64_t pid) { (void)pid; return 1; }
#else
#  define GP_SHARED_SUPPORTED 1
#  include <fcntl.h>
#  include <signal.h>
#  include <sys/mman.h>
#  include <sys/stat.h>
#  include <sys/types.h>
#  include <unistd.h>

/* Map the segment `name`, creating it with `size` zero bytes (mode 0600: this
 * user's processes only) when there is none; *created says which.  Opening one that
 * exists maps its whole current length; EAGAIN while its creator has not yet sized
 * it (the caller retries). */
static inline int gp_shm_map(const char *name, size_t size, int *created, void **base,
                             size_t *length) {
    struct stat st;
    void *p;
    int err;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    *created = fd >= 0;
    if (fd >= 0) {
        if (ftruncate(fd, (off_t)size) != 0) {
            err = errno;
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
    if (st.st_size == 0) {  /* created, not yet sized */
        close(fd);
        return EAGAIN;
    }
    p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    err = errno;
    close(fd);  /* the mapping keeps the segment */
    if (p == MAP_FAILED)
        return err;
    *base = p;
    *length = (size_t)st.st_size;
    return 0;
}

static inline int gp_shm_unlink(const char *name) {
    return shm_unlink(name) == 0 ? 0 : errno;
}

static inline void gp_shm_unmap(void *base, size_t length) {
    munmap(base, length);
}

static inline uint64_t gp_pid(void) { return (uint64_t)getpid(); }

/* Whether process `pid` exists (EPERM: it does, under another user). */
static inline int gp_pid_alive(uint64_t pid) {
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}
#endif

#endif /* GONKA_POOL_SHARED_H */
