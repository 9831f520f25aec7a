/*
 * pmd_loop.c - the poll-mode threads: the heart of the data path.
 *
 * Where it sits: vhost_user.c hands a ring over by setting its `ready` flag;
 * from then on one thread here polls it in a tight loop, DPDK-style: take a
 * burst of up to VX_BURST packets from one port, give the burst to the other
 * port, count, repeat.  No interrupts, no sleeping, no locks, and no
 * syscalls except the guest's call eventfd when it asks for an interrupt.
 *
 * Ports: the guest side is always virtqueue.c.  The other side is either
 *   - the AF_XDP port (--iface, nic_afxdp.c): guest TX -> UMEM frame -> NIC,
 *     NIC -> UMEM frame -> guest RX, one copy each way, done by virtqueue.c
 *     straight between guest memory and the UMEM frame; or
 *   - the loopback port (--loopback): each queue pair's TX comes straight
 *     back on its own RX, which is how tests and benchmarks exercise
 *     vhost-user without a NIC, and a lab mode.
 *
 * Threads and rings: queue pair k is polled by thread k % nthreads, so with
 * --pmd-cores 0,1 and two queue pairs each thread owns one pair.  The control
 * thread takes rings away with pmd_quiesce() (see vhost_user.c, "Taking rings
 * away"): each thread bumps its epoch at the end of every loop iteration.
 *
 * Read in this order: the per-thread state, the per-packet loops
 * (pmd_loopback_pair, pmd_afxdp_pair), the thread's main loop,
 * start/quiesce/stop.
 */
#include "vhost_xdp.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PMD_MAX_THREADS 64

struct pmd_thread {
    pthread_t tid;
    int id;                         /* owns queue pairs id, id + nthreads, ... */
    int cpu;                        /* pinned CPU, or -1 */
    _Atomic uint64_t epoch;         /* loop iterations finished */
    _Atomic bool running;
    struct vx_pkt pkts[VX_BURST];       /* loopback: the burst, with its own buffers */
    struct vx_pkt nic_rx[VX_BURST];     /* AF_XDP: frames lent by nic_afxdp.c ... */
    struct vx_pkt nic_tx[VX_BURST];     /* ... in both directions */
};

static struct pmd_thread pmd_threads[PMD_MAX_THREADS];
static int pmd_nthreads;
static struct vx_dev *pmd_dev;
static struct nic_port *pmd_nic;    /* NULL: loopback port */
static _Atomic bool pmd_exit;

/* === The per-packet loop ================================================= */

/*
 * Loopback port: guest TX ring 2k+1 -> guest RX ring 2k.  Packets that find
 * the RX ring not ready are dropped and counted there, never silently: the
 * guest must not stall its TX because nobody posted RX buffers.
 */
static void pmd_loopback_pair(struct pmd_thread *t, struct vx_vring *rx, struct vx_vring *tx)
{
    if (!atomic_load(&tx->ready))
        return;
    int n = vq_dequeue_burst(tx, t->pkts, VX_BURST);
    if (n == 0)
        return;
    if (atomic_load(&rx->ready))
        vq_enqueue_burst(rx, t->pkts, n);
    else
        __atomic_store_n(&rx->stats.drops, rx->stats.drops + n, __ATOMIC_RELAXED);
}

/*
 * AF_XDP port, queue pair k <-> the NIC queue of --queue.
 *
 * Guest TX -> NIC: borrow free UMEM frames first and let virtqueue.c copy
 * each guest packet straight into one; with no free frame we take nothing
 * from the guest (it keeps its packets: back-pressure, not loss).
 * NIC -> guest RX: the frames the kernel filled are copied into the guest's
 * buffers, then given back to the kernel's fill ring.  No RX ring ready, or
 * a packet needing more buffers than there were: dropped and counted on the
 * RX ring.
 */
static void pmd_afxdp_pair(struct pmd_thread *t, struct vx_vring *rx, struct vx_vring *tx, struct nic_port *nic)
{
    if (atomic_load(&tx->ready)) {
        int frames = nic_tx_alloc(nic, t->nic_tx, VX_BURST);
        int n = frames ? vq_dequeue_burst(tx, t->nic_tx, frames) : 0;
        nic_tx_submit(nic, t->nic_tx, n, frames);
    }
    /* Take from the NIC only what the guest has buffers for: the rest waits
     * in the AF_XDP RX ring (thousands deep), so a guest that falls behind
     * for a moment loses nothing.  With no guest RX ring at all, drain and
     * count the drops rather than let the kernel drop silently. */
    bool guest = atomic_load(&rx->ready);
    int want = guest ? vq_avail_buffers(rx) : VX_BURST;
    int n = nic_rx_burst(nic, t->nic_rx, want < VX_BURST ? want : VX_BURST);
    if (n == 0)
        return;
    if (guest)
        vq_enqueue_burst(rx, t->nic_rx, n);
    else
        __atomic_store_n(&rx->stats.drops, rx->stats.drops + n, __ATOMIC_RELAXED);
    nic_rx_release(nic, t->nic_rx, n);
}

static void *pmd_main(void *arg)
{
    struct pmd_thread *t = arg;
    struct vx_dev *dev = pmd_dev;

    while (!atomic_load_explicit(&pmd_exit, memory_order_relaxed)) {
        for (int k = t->id; k < VX_MAX_QUEUE_PAIRS; k += pmd_nthreads) {
            struct vx_vring *rx = &dev->vrings[2 * k], *tx = &dev->vrings[2 * k + 1];
            if (!pmd_nic)
                pmd_loopback_pair(t, rx, tx);
            else if (k == 0)        /* one NIC queue, for queue pair 0: only thread 0
                                       touches the port, whose rings have one consumer */
                pmd_afxdp_pair(t, rx, tx, pmd_nic);
        }
        /* seq_cst, not release: this store must not pass the `ready` loads
         * of the next iteration, or pmd_quiesce() could see this epoch and
         * return while we are already inside a ring it has just stopped. */
        atomic_store(&t->epoch, atomic_load_explicit(&t->epoch, memory_order_relaxed) + 1);
    }
    atomic_store(&t->running, false);
    return NULL;
}

/* === Start, quiesce, stop ================================================ */

int pmd_start(struct vx_dev *dev, struct nic_port *nic, const int *cpus, int ncpus)
{
    pmd_dev = dev;
    pmd_nic = nic;
    pmd_nthreads = ncpus > 0 ? ncpus : 1;
    if (pmd_nthreads > PMD_MAX_THREADS) {
        vx_log("--pmd-cores: at most %d threads", PMD_MAX_THREADS);
        return -1;
    }
    for (int i = 0; i < pmd_nthreads; i++) {
        struct pmd_thread *t = &pmd_threads[i];
        t->id = i;
        t->cpu = ncpus > 0 ? cpus[i] : -1;
        for (int b = 0; b < VX_BURST; b++) {
            t->pkts[b].room = VX_PKT_MAX;
            t->pkts[b].data = malloc(VX_PKT_MAX);
            if (!t->pkts[b].data) {
                vx_log("pmd %d: out of memory for packet buffers", i);
                return -1;
            }
        }
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        if (t->cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(t->cpu, &set);
            pthread_attr_setaffinity_np(&attr, sizeof set, &set);
        }
        atomic_store(&t->running, true);
        int err = pthread_create(&t->tid, &attr, pmd_main, t);
        pthread_attr_destroy(&attr);
        if (err) {
            atomic_store(&t->running, false);
            vx_log("pmd %d: cannot start thread%s%d: %s", i, t->cpu >= 0 ? " on CPU " : "",
                   t->cpu >= 0 ? t->cpu : 0, strerror(err));
            pmd_nthreads = i;
            return -1;
        }
        pthread_setname_np(t->tid, "vx-pmd");
        if (t->cpu >= 0)
            vx_log("pmd %d: polling queue pairs %d, %d, ... on CPU %d", i, i, i + pmd_nthreads, t->cpu);
        else
            vx_log("pmd %d: polling queue pairs %d, %d, ... (not pinned)", i, i, i + pmd_nthreads);
    }
    return 0;
}

/* Wait until every PMD thread has finished the iteration it is in.  The
 * caller has cleared `ready` on the rings it wants back; an iteration that
 * starts after that cannot see them as ready. */
void pmd_quiesce(void)
{
    uint64_t seen[PMD_MAX_THREADS];
    for (int i = 0; i < pmd_nthreads; i++)
        seen[i] = atomic_load(&pmd_threads[i].epoch);
    for (int i = 0; i < pmd_nthreads; i++) {
        while (atomic_load(&pmd_threads[i].running) && atomic_load(&pmd_threads[i].epoch) == seen[i]) {
            struct timespec ts = { 0, 1000 };
            nanosleep(&ts, NULL);
        }
    }
}

void pmd_stop(void)
{
    atomic_store(&pmd_exit, true);
    for (int i = 0; i < pmd_nthreads; i++) {
        pthread_join(pmd_threads[i].tid, NULL);
        for (int b = 0; b < VX_BURST; b++)
            free(pmd_threads[i].pkts[b].data);
    }
    pmd_nthreads = 0;
}
