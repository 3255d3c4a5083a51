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
#else
#  define GP_SHARED_SUPPORTED 1
#  include <fcntl.h>
#  include <signal.h>
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

/* The segment's current length: a truncated one faults (SIGBUS) when a page past
 * its new end is touched, so the caller checks before it trusts the mapping. */
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
#endif

#endif /* GONKA_POOL_SHARED_H */
