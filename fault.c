/*
 * fault.c - guest memory faults: a SIGBUS caught and turned into a reset,
 * never a crash.  Second reading: the data path works without it, until a
 * frontend misbehaves.
 *
 * Why it is needed.  Guest memory is a file the frontend owns (a memfd, a
 * hugetlbfs file) and lends us by fd in SET_MEM_TABLE; we mmap it shared.
 * The frontend keeps its own fd, and may shrink the file at any moment
 * (ftruncate).  Our mapping stays where it was, but every page past the new
 * end of the file is gone: the next load or store there raises SIGBUS, whose
 * default action kills the whole process, every device and guest with it.
 * Nothing checked at SET_MEM_TABLE can prevent this (vu_set_mem_table does
 * refuse a region longer than its file, but the file can shrink later), and
 * sealing the file against shrinking (F_SEAL_SHRINK) is the frontend's
 * choice, not ours.  So every thread that touches guest memory must survive
 * the signal: the poll threads (every ring and buffer access) and the control
 * thread (vq_attach reads and writes the rings when they start; the ring
 * view reads them).
 *
 * How.  SIGBUS from a memory access is synchronous: the kernel delivers it to
 * the thread that faulted, at the faulting instruction, with the address in
 * si_addr.  A thread that may touch guest memory arms a guard first: a
 * sigjmp_buf filled by sigsetjmp() in a stack frame that stays live while the
 * thread works, published in a thread-local pointer (vx_guard_set).  The
 * handler below finds that guard and siglongjmp()s back to it with the
 * address.  The code there decides whose memory it was (vx_mem_region_of)
 * and stops only that device: its rings are marked broken and its connection
 * reset (pmd_loop.c, "Guest memory faults"; vhost_user.c, vu_attach_guarded),
 * while every other device goes on.  Jumping out of the middle of a ring walk
 * is safe because nothing there holds a lock or half-updates anything that
 * outlives the ring, and the ring is never used again before the frontend
 * sets it up afresh.
 *
 * A SIGBUS while no guard is armed, or at an address that is no guest
 * memory, is not ours to contain: the handler puts back the default action
 * and returns, the instruction faults again, and the process dies with a
 * core dump, as it would have without us.
 *
 * Cost.  A poll thread arms its guard once, when it starts, so the data
 * path pays nothing per burst; the control thread arms one around each call
 * that touches guest memory (vx_guarded), a few per ring start.  The guards
 * are set with sigsetjmp(env, 0), which saves no signal mask (that would be
 * a system call each time): the kernel blocks SIGBUS while its handler
 * runs, and since we leave the handler by a jump, the code that catches the
 * fault unblocks it again (vx_fault_caught), once per fault.
 */
#include "vhost_xdp.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>

/* The guard of this thread, or NULL.  Thread-local: each thread jumps back
 * into its own stack only.  The executable's own TLS, so reading it in the
 * handler is a plain load (no allocation, async-signal-safe). */
static __thread struct vx_guard *vx_current_guard;

void vx_guard_set(struct vx_guard *g)
{
    vx_current_guard = g;
}

static void vx_sigbus(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    struct vx_guard *g = vx_current_guard;
    if (g) {
        g->addr = si->si_addr;
        siglongjmp(g->env, 1);      /* SIGBUS stays blocked: vx_fault_caught() unblocks it */
    }
    /* Not a guest memory access we expected: the default action, when the
     * instruction runs again (sigaction is async-signal-safe). */
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
}

/* Installed by main.c before any thread starts.  No SA_RESTART or other
 * flag matters here: the handler never returns to the faulting code with
 * a guard armed. */
int vx_fault_init(void)
{
    struct sigaction sa = { .sa_sigaction = vx_sigbus, .sa_flags = SA_SIGINFO };
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, NULL) < 0) {
        vx_log("sigaction(SIGBUS): %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* After a jump from the handler: SIGBUS is still blocked in this thread
 * (the kernel blocked it for the handler we left by a jump), and a blocked
 * SIGBUS at the next fault would kill the process: unblock it. */
void vx_fault_caught(void)
{
    sigset_t bus;
    sigemptyset(&bus);
    sigaddset(&bus, SIGBUS);
    pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
}

/*
 * The control thread's guard: fn(arg) with a guard armed for its duration.
 * Returns what fn returned, or VX_FAULTED after a SIGBUS inside it, the
 * faulting address in *addr.  The guard that was armed before (none, on the
 * control thread) is put back either way, so calls may nest.  `outer` is
 * not changed between sigsetjmp and siglongjmp, so it keeps its value (C11
 * 7.13.2.1).
 */
int vx_guarded(int (*fn)(void *), void *arg, void **addr)
{
    struct vx_guard g, *outer = vx_current_guard;
    if (sigsetjmp(g.env, 0)) {
        vx_current_guard = outer;
        vx_fault_caught();
        *addr = g.addr;
        return VX_FAULTED;
    }
    vx_current_guard = &g;
    int r = fn(arg);
    vx_current_guard = outer;
    return r;
}

/* Which region of a memory table maps `addr`, or -1: the whole mapping
 * counts (mmap_addr .. + mmap_size), not only the region's bytes, since a
 * fault can be anywhere on a page the file no longer backs. */
int vx_mem_region_of(const struct vx_mem *mem, const void *addr)
{
    const uint8_t *p = addr;
    for (uint32_t i = 0; i < mem->nregions && i < VX_MAX_REGIONS; i++) {
        const uint8_t *start = mem->regions[i].mmap_addr;
        if (start && p >= start && (uint64_t)(p - start) < mem->regions[i].mmap_size)
            return (int)i;
    }
    return -1;
}

/* The one line a fault is reported with, by the thread that caught it:
 * which device (its socket), which thread or step, where in which region's
 * file, and what it means.  False, and nothing logged, if addr is not in
 * this memory table. */
bool vx_fault_log(const char *device, const char *who, const struct vx_mem *mem, const void *addr)
{
    int i = vx_mem_region_of(mem, addr);
    if (i < 0)
        return false;
    const struct vx_mem_region *r = &mem->regions[i];
    vx_log("%s: %s: guest memory fault (SIGBUS) at byte 0x%llx of region %d's file (gpa 0x%llx, %llu bytes): "
           "the frontend shrank the file after SET_MEM_TABLE; the device's rings stop and its connection is reset",
           device, who, (unsigned long long)((const uint8_t *)addr - (const uint8_t *)r->mmap_addr), i,
           (unsigned long long)r->guest_phys_addr, (unsigned long long)r->memory_size);
    return true;
}
