/*
 * pmd_loop.c - the poll-mode threads: the heart of the data path.
 *
 * Where it sits: vhost_user.c hands a ring over by setting its `ready` flag;
 * from then on one thread here polls it in a tight loop, DPDK-style: take a
 * burst of up to VX_BURST packets from one port, give the burst to the other
 * port, count, repeat.  No interrupts, no locks, and no syscalls except the
 * guest's call eventfd when it asks for an interrupt; no sleeping either,
 * unless --pmd-sleep asks the thread to back off when it finds no work, or
 * --pmd-mode adaptive to sleep until the guest kicks (see "When there is
 * nothing to do").  With --pcap each burst forwarded is also handed
 * to pcap.c, which copies it into memory and never blocks.
 *
 * Ports: the guest side is always virtqueue.c.  The other side is either
 *   - the AF_XDP port (--iface, nic_afxdp.c): guest TX -> UMEM frame -> NIC,
 *     NIC -> UMEM frame -> guest RX, one copy each way, done by virtqueue.c
 *     straight between guest memory and the UMEM frame; queue pair k has
 *     NIC queue Q+k (--queue Q-R) and its own socket; or
 *   - the loopback port (--loopback): each queue pair's TX comes straight
 *     back on its own RX, which is how tests and benchmarks exercise
 *     vhost-user without a NIC, and a lab mode; or
 *   - another guest (two --socket, VM-to-VM): queue pair k of device A
 *     and queue pair k of device B are each other's port; or
 *   - a switch (three or more --socket, or sockets and an --iface uplink:
 *     switch.c, second reading): lane k, queue pair k of every device and
 *     NIC queue k, is forwarded by learned MAC, one sw_lane() call here.
 *
 * Threads and rings: queue pair k is polled by thread k % nthreads, so with
 * --pmd-cores 0,1 and two queue pairs each thread owns one pair.  The control
 * thread takes rings away with pmd_quiesce() (see vhost_user.c, "Taking rings
 * away"): each thread bumps its epoch at the end of every loop iteration.
 *
 * Offloads (checksums, TCP segmentation) are offload.c's, second reading:
 * one call per direction here (ofl_to_guest, ofl_to_nic, ofl_from_nic),
 * each costing a packet that asks for nothing one predictable branch.
 *
 * Read in this order.  FIRST READING: the per-thread state, the per-packet
 * loops (pmd_guest_to_guest, of which the loopback port is made, and
 * pmd_afxdp_pair: one screen each), the thread's main loop pmd_main(), then
 * start, quiesce and stop.  SECOND READING, after the "Second reading"
 * marker, each under its own banner and each called from one place above:
 * the SEND_RARP and NET_SET_MTU hooks, VM-to-VM (and switch.c for a switch), what a
 * thread does when there is nothing to do (--pmd-sleep's back-off, and
 * interrupt mode, --pmd-mode adaptive), the offloads' buffers, what a
 * thread does when guest memory faults under it, and how a thread stuck in
 * a system call is freed.
 */
#include "vhost_xdp.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#define PMD_MAX_THREADS     64
#define PMD_WAKE_AFTER      0.05    /* s without finishing an iteration: interrupt the thread ("Stuck threads") */
#define PMD_STUCK_SECONDS   0.4     /* s: shutting down, a thread that took this long is left behind */

struct pmd_thread {
    pthread_t tid;
    int id;                         /* owns queue pairs id, id + nthreads, ... */
    int cpu;                        /* pinned CPU, or -1 */
    uint64_t epoch;                 /* loop iterations finished */
    bool running;
    struct pcap_ring *pcap;             /* --pcap: this thread's capture ring, else NULL */
    uint32_t idle_iterations;           /* --pmd-sleep ("Idle back-off"): empty polls in a row ... */
    uint32_t sleep_ns;                  /* ... and the current sleep */
    struct vx_pkt pkts[VX_BURST];       /* guest to guest: the burst ... */
    uint8_t *bufs[VX_BURST];            /* ... and its own buffers, for frames not lent */
    struct vx_pkt nic_rx[VX_BURST];     /* AF_XDP: frames lent by nic_afxdp.c ... */
    struct vx_pkt nic_tx[VX_BURST];     /* ... in both directions */
    /* Second reading ("Guest memory faults", "Stuck threads"): */
    struct vx_guard guard;              /* where a SIGBUS in guest memory lands */
    struct nic_port *held_nic;          /* AF_XDP frames held across a guest access, */
    int held_tx, held_rx;               /* given back if guest memory faults meanwhile */
    uint64_t watch_epoch;               /* pmd_watchdog: the epoch it saw last, */
    double watch_since;                 /* and since when */
    bool stuck;                         /* pmd_stop: did not stop in time */
    struct vx_pkt scratch[VX_BURST];    /* offload.c's, guest to guest ("The offloads' buffers") */
};

static struct pmd_thread pmd_threads[PMD_MAX_THREADS];
static int pmd_nthreads;            /* --pmd-cores: queue pair k is thread k % pmd_nthreads's */
static int pmd_started;             /* threads pthread_create() started: the ones pmd_stop() joins */
static struct vx_dev *pmd_devs;     /* one device, two (VM-to-VM), or a switch's (switch.c) */
static int pmd_ndevs;
static struct nic_port **pmd_nics; /* AF_XDP: NIC queue first+k serves queue pair k ... */
static int pmd_nnics;               /* ... for k < pmd_nnics; 0: loopback, or the other device */
static uint32_t pmd_sleep_max_ns;   /* --pmd-sleep, 0: poll without sleeping */
static bool pmd_adaptive;           /* --pmd-mode adaptive: sleep until a kick when idle */
static bool pmd_switch;             /* the ports are a switch's: lane k is switch.c's (sw_lane) */
/* AF_XDP: a TSO packet being cut into frames, per NIC queue (offload.c,
 * ofl_to_nic); each with a buffer of VX_PKT_MAX, owned by the queue's thread. */
static struct ofl_cut pmd_cuts[VX_MAX_QUEUE_PAIRS];
static bool pmd_exit;

/* The second-reading functions the first reading calls, each defined after
 * the "Second reading" marker under the banner named here.  The per-burst
 * ones stay plain static functions, as they were when they sat above their
 * callers: the compiler sees the whole file either way, and the loops'
 * code is the same instructions as before they moved (objdump -d). */
static int  pmd_vm2vm_pair(struct pmd_thread *t, struct vx_dev *a, struct vx_dev *b, int k);   /* "VM-to-VM" */
static void pmd_idle_setup(void);                      /* "When there is nothing to do" */
static void pmd_idle(struct pmd_thread *t, int moved);
static void pmd_idle_backoff(struct pmd_thread *t, int moved);
static int  pmd_napi_setup(struct pmd_thread *t);
static void pmd_napi_teardown(struct pmd_thread *t);
static bool pmd_napi_asleep(const struct pmd_thread *t);
static int  pmd_offload_start(struct nic_port **nics, int nnics);              /* "The offloads' buffers" */
static void pmd_offload_stop(void);
static void pmd_fault_recover(struct pmd_thread *t);   /* "Guest memory faults" */
static void pmd_wake_prepare(void);                    /* "Stuck threads" */
static void pmd_wake_accept(void);
static void pmd_wake(struct pmd_thread *t);
static bool pmd_shutting_down(void);

/* === The per-packet loops ================================================ */

/*
 * Each function below forwards one queue pair's bursts and returns how many
 * packets it took from either port (0: nothing to do, see the back-off).
 * With --pcap, the packets are captured where they are known to have been
 * forwarded: from the guest, the burst dequeued from its TX ring; to the
 * guest, the packets vq_enqueue_burst() says it put in its RX ring.  One
 * branch per burst when there is no capture.
 *
 * Both directions pass two hooks of the second reading: pmd_rarp_take()
 * puts a pending RARP at the head of the burst from the guest (so --pcap
 * shows it "Out"), and pmd_mtu_filter() lets only the frames within the
 * guest's MTU go on to its RX ring.  Each costs a burst that needs neither
 * one relaxed load.
 *
 * vq_enqueue_burst() leaves the packets it delivered at the front of the
 * array, in order (a packet too big for its buffers is moved behind them),
 * so the "In" side of the capture is exactly pkts[0 .. sent-1].
 */

/*
 * One direction between two guest rings: a burst from the TX ring `tx` of
 * device `from` goes to the RX ring `rx` of device `to`.  The loopback
 * port below is made of it, and so is VM-to-VM (second reading).  Packets
 * that find the RX ring not ready are dropped and counted there, never
 * silently: the sending guest must not stall its TX because nobody posted
 * RX buffers (or because the other guest has gone away).
 *
 * One copy per packet: vq_dequeue_burst_lend() lends us each frame where it
 * lies in the sending guest's memory (when it is in one buffer, which is
 * what QEMU's and DPDK's drivers do) and gives the chains back only after
 * pmd_deliver() has copied the burst into the receiving guest's RX buffers.
 * (A frame spread over several buffers is first copied into the thread's
 * own buffer: two copies, as before.)  Measured with `make bench` against
 * the two-copy build, together with the prefetches in virtqueue.c: loopback
 * +11% at 64 B and +3% at 1518 B on the split ring, +20% on the packed.
 */
struct pmd_delivery {
    struct pmd_thread *t;
    struct vx_dev *to;
    struct vx_vring *tx, *rx;
};

/* The packets as the receiving guest may have them (ofl_to_guest made them
 * so): within its MTU, into its RX ring if it is there. */
static void pmd_deliver_send(void *arg, struct vx_pkt *pkts, int n)
{
    struct pmd_delivery *d = arg;
    int fit = pmd_mtu_filter(d->to, d->rx, pkts, n);
    int sent = 0;
    if (__atomic_load_n(&d->rx->ready, __ATOMIC_SEQ_CST))
        sent = vq_enqueue_burst(d->rx, pkts, fit);
    else
        vx_counter_add(d->rx->stats.drops, fit);
    if (d->t->pcap)
        pcap_burst(d->t->pcap, PCAP_TO_GUEST, pkts, sent);
}

/* The burst as the sending guest sent it: captured, then through
 * offload.c, which completes checksums and cuts TSO packets the receiver
 * did not negotiate, and passes the rest on whole. */
static void pmd_deliver(void *arg, struct vx_pkt *pkts, int n)
{
    struct pmd_delivery *d = arg;
    if (d->t->pcap)
        pcap_burst(d->t->pcap, PCAP_FROM_GUEST, pkts, n);
    ofl_to_guest(d->tx, d->rx, pkts, n, d->t->scratch, pmd_deliver_send, d);
}

static int pmd_guest_to_guest(struct pmd_thread *t, struct vx_dev *from, struct vx_vring *tx,
                              struct vx_dev *to, struct vx_vring *rx)
{
    if (!__atomic_load_n(&tx->ready, __ATOMIC_SEQ_CST))
        return 0;
    /* Lent frames leave pkts[].data pointing into guest memory: each burst
     * starts again from the thread's own buffers. */
    for (int i = 0; i < VX_BURST; i++)
        t->pkts[i].data = t->bufs[i];
    struct pmd_delivery d = { t, to, tx, rx };
    int injected = pmd_rarp_take(from, tx, &t->pkts[0]);
    if (injected)       /* a SEND_RARP frame goes alone, ahead of the burst */
        pmd_deliver(&d, t->pkts, 1);
    return injected + vq_dequeue_burst_lend(tx, t->pkts, VX_BURST, pmd_deliver, &d);
}

/* Loopback port: guest TX ring 2k+1 -> the same guest's RX ring 2k. */
static int pmd_loopback_pair(struct pmd_thread *t, struct vx_dev *dev, struct vx_vring *rx, struct vx_vring *tx)
{
    return pmd_guest_to_guest(t, dev, tx, dev, rx);
}

/*
 * AF_XDP port, queue pair k <-> the NIC queue of --queue.
 *
 * Guest TX -> NIC: borrow free UMEM frames first and let virtqueue.c copy
 * each guest packet straight into one; with no free frame we take nothing
 * from the guest (it keeps its packets: back-pressure, not loss).  A TSO
 * packet (up to 64 KiB, larger than a frame) goes into the queue's own
 * buffer instead (cut->big) and offload.c cuts it into frames, over several
 * polls if frames run short; until its last segment has a frame, nothing
 * more is taken from the guest.
 * NIC -> guest RX: the frames the kernel filled are copied into the guest's
 * buffers, then given back to the kernel's fill ring.  No RX ring ready, or
 * a packet needing more buffers than there were: dropped and counted on the
 * RX ring.
 */
static int pmd_afxdp_pair(struct pmd_thread *t, struct vx_dev *dev, struct vx_vring *rx, struct vx_vring *tx,
                          struct nic_port *nic, struct ofl_cut *cut)
{
    int moved = 0;
    t->held_nic = nic;      /* held_tx, held_rx: the frames a guest memory fault must give back */
    bool guest_tx = __atomic_load_n(&tx->ready, __ATOMIC_SEQ_CST);
    if (guest_tx || cut->big.len) {
        int frames = t->held_tx = nic_tx_alloc(nic, t->nic_tx, VX_BURST);
        if (guest_tx && !cut->big.len && frames) {
            int injected = pmd_rarp_take(dev, tx, &t->nic_tx[0]);
            moved = injected + (frames > injected ? vq_dequeue_burst_big(tx, t->nic_tx + injected, frames - injected,
                                                                         &cut->big) : 0);
        }
        moved = ofl_to_nic(cut, tx, t->nic_tx, moved, frames);
        if (t->pcap)        /* before the kernel owns the frames */
            pcap_burst(t->pcap, PCAP_FROM_GUEST, t->nic_tx, moved);
        nic_tx_submit(nic, t->nic_tx, moved, frames);
        t->held_tx = 0;
    }
    /* Take from the NIC only what the guest has buffers for: the rest waits
     * in the AF_XDP RX ring (thousands deep), so a guest that falls behind
     * for a moment loses nothing.  With no guest RX ring at all, drain and
     * count the drops rather than let the kernel drop silently. */
    bool guest = __atomic_load_n(&rx->ready, __ATOMIC_SEQ_CST);
    int want = guest ? vq_avail_buffers(rx) : VX_BURST;
    int n = t->held_rx = nic_rx_burst(nic, t->nic_rx, want < VX_BURST ? want : VX_BURST);
    if (n == 0)
        return moved;
    int fit = pmd_mtu_filter(dev, rx, t->nic_rx, n);
    int sent = 0;
    if (guest) {
        ofl_from_nic(rx, t->nic_rx, fit);       /* each frame's header, and partial checksums */
        sent = vq_enqueue_burst(rx, t->nic_rx, fit);
    }
    else
        vx_counter_add(rx->stats.drops, fit);
    if (t->pcap)            /* before the frames go back to the kernel */
        pcap_burst(t->pcap, PCAP_TO_GUEST, t->nic_rx, sent);
    nic_rx_release(nic, t->nic_rx, n);
    t->held_rx = 0;
    return moved + n;
}

/* === The thread's main loop ============================================== */

/*
 * One thread per --pmd-cores CPU (pmd_start), each running this loop until
 * pmd_stop(): every queue pair it owns gets one burst each way per
 * iteration, and the iteration ends by bumping the thread's epoch, which is
 * how the control thread knows that no ring it has stopped is still in use
 * (pmd_quiesce).  Nothing in it waits, unless --pmd-sleep or --pmd-mode
 * adaptive asks it to rest when an iteration moved nothing ("When there is
 * nothing to do").
 */
static void *pmd_main(void *arg)
{
    struct pmd_thread *t = arg;
    struct vx_dev *dev = &pmd_devs[0];

    pmd_idle_setup();       /* --pmd-sleep: sleeps as short as asked ("When there is nothing to do") */
    pmd_wake_accept();      /* the watchdog's signal may interrupt us ("Stuck threads") */
    /* A SIGBUS in guest memory (the frontend shrank a region's file) lands
     * here, once, for the whole life of the thread: the loop below costs
     * nothing for it ("Guest memory faults"). */
    vx_guard_set(&t->guard);
    if (sigsetjmp(t->guard.env, 0))
        pmd_fault_recover(t);
    while (!__atomic_load_n(&pmd_exit, __ATOMIC_RELAXED)) {
        int moved = 0;
        /* Only the pairs offered (--queues): no ring beyond them can start. */
        for (int k = t->id; k < (int)dev->queue_pairs; k += pmd_nthreads) {
            struct vx_vring *rx = &dev->vrings[2 * k], *tx = &dev->vrings[2 * k + 1];
            if (pmd_switch)         /* many ports, one L2 learning switch (switch.c) */
                moved += sw_lane(k, t->pcap);
            else if (pmd_ndevs == 2)    /* two guests ("VM-to-VM") */
                moved += pmd_vm2vm_pair(t, dev, &pmd_devs[1], k);
            else if (!pmd_nnics)
                moved += pmd_loopback_pair(t, dev, rx, tx);
            else if (k < pmd_nnics) /* pair k's NIC queue: only this thread touches
                                       that port, whose rings have one consumer */
                moved += pmd_afxdp_pair(t, dev, rx, tx, pmd_nics[k], &pmd_cuts[k]);
        }
        pmd_idle(t, moved);     /* nothing moved: poll on, nap, or sleep until a kick (second reading) */
        /* seq_cst, not release: this store must not pass the `ready` loads
         * of the next iteration, or pmd_quiesce() could see this epoch and
         * return while we are already inside a ring it has just stopped. */
        __atomic_store_n(&t->epoch, __atomic_load_n(&t->epoch, __ATOMIC_RELAXED) + 1, __ATOMIC_SEQ_CST);
    }
    __atomic_store_n(&t->running, false, __ATOMIC_SEQ_CST);
    return NULL;
}

/* === Start, quiesce, stop ================================================ */

/* One poll thread: its packet buffers, its CPU (if pinned), its name. */
static int pmd_thread_start(struct pmd_thread *t, int i, int cpu)
{
    t->id = i;
    t->cpu = cpu;
    t->pcap = pcap_ring_new(i);
    if (pmd_napi_setup(t) < 0)  /* --pmd-mode adaptive: the wake-up eventfd */
        return -1;
    for (int b = 0; b < VX_BURST; b++) {
        t->pkts[b].room = t->scratch[b].room = VX_PKT_MAX;
        t->pkts[b].data = t->bufs[b] = malloc(VX_PKT_MAX);
        t->scratch[b].data = malloc(VX_PKT_MAX);    /* untouched until an offload needs it */
        if (!t->bufs[b] || !t->scratch[b].data) {
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
    __atomic_store_n(&t->running, true, __ATOMIC_SEQ_CST);
    int err = pthread_create(&t->tid, &attr, pmd_main, t);
    pthread_attr_destroy(&attr);
    if (err) {
        __atomic_store_n(&t->running, false, __ATOMIC_SEQ_CST);
        vx_log("pmd %d: cannot start thread%s%d: %s", i, t->cpu >= 0 ? " on CPU " : "",
               t->cpu >= 0 ? t->cpu : 0, strerror(err));
        return -1;
    }
    pmd_started = i + 1;
    /* "vx-pmd0", "vx-pmd1", ...: what top -H and /proc/PID/task/TID/comm show. */
    char name[16];
    snprintf(name, sizeof name, "vx-pmd%d", i % PMD_MAX_THREADS);  /* i < 64: tells gcc it fits */
    pthread_setname_np(t->tid, name);
    if (t->cpu >= 0)
        vx_log("pmd %d: polling queue pairs %d, %d, ... on CPU %d", i, i, i + pmd_nthreads, t->cpu);
    else
        vx_log("pmd %d: polling queue pairs %d, %d, ... (not pinned)", i, i, i + pmd_nthreads);
    return 0;
}

/* Every poll thread, started in turn.  If one cannot start, the caller's
 * pmd_stop() joins the pmd_started that did and frees every buffer
 * allocated here. */
int pmd_start(struct vx_dev *devs, int ndevs, struct nic_port **nics, int nnics, const int *cpus, int ncpus,
              uint32_t sleep_max_us, bool adaptive)
{
    pmd_devs = devs;
    pmd_ndevs = ndevs;
    pmd_nics = nics;
    pmd_nnics = nnics;
    pmd_sleep_max_ns = sleep_max_us * 1000;
    pmd_adaptive = adaptive;
    pmd_switch = sw_running();
    pmd_wake_prepare();
    int n = ncpus > 0 ? ncpus : 1;
    if (n > PMD_MAX_THREADS) {
        vx_log("--pmd-cores: at most %d threads", PMD_MAX_THREADS);
        return -1;
    }
    /* Set once, before any thread starts (each reads it to find its pairs),
     * and never changed while one runs. */
    pmd_nthreads = n;
    if (pmd_offload_start(nics, nnics) < 0)   /* a TSO buffer per NIC queue ("The offloads' buffers") */
        return -1;
    for (int i = 0; i < pmd_nthreads; i++)
        if (pmd_thread_start(&pmd_threads[i], i, ncpus > 0 ? cpus[i] : -1) < 0)
            return -1;
    return 0;
}

/* Wait until every PMD thread has finished the iteration it is in.  The
 * caller has cleared `ready` on the rings it wants back; an iteration that
 * starts after that cannot see them as ready.  An iteration takes
 * microseconds (one --pmd-sleep at most; a thread asleep until a kick, in
 * --pmd-mode adaptive, is woken at once); a thread that takes longer may be
 * blocked in a system call on a frontend's fd, and is interrupted
 * (pmd_wake, "Stuck threads").  The wait is not bounded otherwise: a thread
 * the machine does not schedule must be waited for, since it may be inside
 * the ring.  Except when shutting down: then, after PMD_STUCK_SECONDS,
 * returns false and the caller leaves the rings alone. */
bool pmd_quiesce(void)
{
    uint64_t seen[PMD_MAX_THREADS];
    for (int i = 0; i < pmd_nthreads; i++)
        seen[i] = __atomic_load_n(&pmd_threads[i].epoch, __ATOMIC_SEQ_CST);
    pmd_wake_sleepers();    /* --pmd-mode adaptive: the wait below is one wake-up, not a timeout */
    double start = vx_now(), woken = start;
    for (int i = 0; i < pmd_nthreads; i++) {
        if (pmd_threads[i].stuck && __atomic_load_n(&pmd_threads[i].running, __ATOMIC_SEQ_CST))
            return false;   /* pmd_stop() has waited for it already */
        while (__atomic_load_n(&pmd_threads[i].running, __ATOMIC_SEQ_CST) &&
               __atomic_load_n(&pmd_threads[i].epoch, __ATOMIC_SEQ_CST) == seen[i]) {
            struct timespec ts = { 0, 1000 };
            nanosleep(&ts, NULL);
            double t = vx_now();
            if (t - woken >= PMD_WAKE_AFTER) {
                pmd_wake(&pmd_threads[i]);
                woken = t;
            }
            if (t - start >= PMD_STUCK_SECONDS && pmd_shutting_down())
                return false;
        }
    }
    return true;
}

/* Stop every thread and wait for it, at most PMD_STUCK_SECONDS in all: a
 * thread still blocked after that (interrupted every PMD_WAKE_AFTER) is left
 * to the process's exit, so SIGTERM never waits on one.  Returns how many
 * were left; their buffers are not freed (they may still use them). */
int pmd_stop(void)
{
    __atomic_store_n(&pmd_exit, true, __ATOMIC_SEQ_CST);
    pmd_wake_sleepers();
    double end = vx_now() + PMD_STUCK_SECONDS;
    int left = 0;
    for (int i = 0; i < pmd_started; i++) {
        struct pmd_thread *t = &pmd_threads[i];
        for (;;) {
            pmd_wake(t);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);     /* pthread_timedjoin_np's clock */
            ts.tv_nsec += (long)(PMD_WAKE_AFTER * 1e9);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_timedjoin_np(t->tid, NULL, &ts) == 0) {
                pmd_napi_teardown(t);   /* --pmd-mode adaptive: its wake-up eventfd */
                break;
            }
            if (vx_now() >= end) {
                t->stuck = true;
                left++;
                vx_log("pmd %d: did not stop within %.1f s (stuck in a system call, or not scheduled): left to the "
                       "exit", i, PMD_STUCK_SECONDS);
                break;
            }
        }
    }
    for (int i = 0; i < pmd_nthreads; i++)
        for (int b = 0; b < VX_BURST && !pmd_threads[i].stuck; b++) {
            free(pmd_threads[i].bufs[b]);
            free(pmd_threads[i].scratch[b].data);
            pmd_threads[i].bufs[b] = pmd_threads[i].scratch[b].data = NULL;
        }
    /* A thread left behind stays counted: pmd_quiesce() must keep saying
     * that it may be inside a ring, so that no memory it reads is unmapped. */
    if (!left) {
        pmd_offload_stop();
        pmd_nthreads = pmd_started = 0;
    }
    return left;
}

/* === Second reading: RARP and MTU, VM-to-VM, idle, offload buffers, faults, stuck threads === */

/* === SEND_RARP and NET_SET_MTU: what the guest did not send, may not receive === */

/*
 * SEND_RARP (vhost_user.c, vu_send_rarp) leaves a MAC in dev->rarp_request.
 * The PMD polling queue pair 0 takes it at its next burst from the guest's
 * TX ring and puts the frame at the head of that burst, so it goes wherever
 * the guest's own frames go: out on the NIC (where the switches learn that
 * the MAC is behind this port now), or in --loopback back to the guest's RX.
 * That is the direction the announcement needs; DPDK's vhost library does
 * the same in its dequeue path.
 *
 * The frame is an RFC 903 RARP "reverse request" (opcode 3), as QEMU builds
 * its own announcements: broadcast destination, the MAC as Ethernet source
 * and as sender and target hardware address, protocol addresses 0 (a RARP
 * asks for them), zeros up to the 60-byte Ethernet minimum.
 */
#define RARP_FRAME_LEN 60

static void pmd_build_rarp(uint8_t *f, const uint8_t mac[6])
{
    static const uint8_t arp_head[8] = {
        0x00, 0x01,             /* hardware type: Ethernet */
        0x08, 0x00,             /* protocol type: IPv4 */
        6, 4,                   /* hardware and protocol address lengths */
        0x00, 0x03,             /* opcode 3: reverse request */
    };
    memset(f, 0, RARP_FRAME_LEN);
    memset(f, 0xff, 6);         /* destination: broadcast */
    memcpy(f + 6, mac, 6);      /* source: the guest */
    f[12] = 0x80;               /* ethertype 0x8035: RARP */
    f[13] = 0x35;
    memcpy(f + 14, arp_head, sizeof arp_head);
    memcpy(f + 22, mac, 6);     /* sender hardware address; 28-31 sender IP 0 */
    memcpy(f + 32, mac, 6);     /* target hardware address; 38-41 target IP 0 */
}

/* Put the pending RARP, if any, in *pkt (an empty buffer): returns 1 if it
 * did.  One relaxed load per burst when there is none.  (switch.c takes it
 * the same way, from its guest ports.) */
int pmd_rarp_take(struct vx_dev *dev, const struct vx_vring *tx, struct vx_pkt *pkt)
{
    if (tx->index != 1 || pkt->room < RARP_FRAME_LEN ||
        !__atomic_load_n(&dev->rarp_request, __ATOMIC_RELAXED))
        return 0;
    uint64_t request = __atomic_exchange_n(&dev->rarp_request, 0, __ATOMIC_SEQ_CST);
    if (!(request & VX_RARP_PENDING))
        return 0;       /* a disconnect took it back meanwhile */
    uint8_t mac[6];
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)(request >> (8 * i));
    pmd_build_rarp(pkt->data, mac);
    pkt->len = RARP_FRAME_LEN;
    pkt->hdr = (struct vx_net_hdr){ 0 };
    vx_log("RARP from %02x:%02x:%02x:%02x:%02x:%02x sent on queue pair 0, as if the guest sent it (SEND_RARP)",
           mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    return 1;
}

/*
 * NET_SET_MTU (vhost_user.c, vu_net_set_mtu): the device "MUST NOT pass
 * received packets that exceed mtu (plus low level ethernet header length)"
 * to the guest (virtio 1.2 §5.1.4.1).  Moves the frames that fit to the
 * front of pkts[], in order, and returns how many; the others stay behind
 * them (the caller still releases all n) and count as drops on the RX ring.
 * The header is 14 bytes, 18 with an 802.1Q VLAN tag.  No NET_SET_MTU
 * (mtu 0): every frame fits, and the burst is not even looked at.  A TSO
 * packet (gso_type set) is larger than the MTU by design: the rule is for
 * packets "with gso_type NONE or ECN" only.
 */
int pmd_mtu_filter(struct vx_dev *dev, struct vx_vring *rx, struct vx_pkt *pkts, int n)
{
    uint32_t mtu = __atomic_load_n(&dev->mtu, __ATOMIC_RELAXED);
    if (!mtu)
        return n;
    int kept = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *f = pkts[i].data;
        bool vlan = pkts[i].len >= 14 && f[12] == 0x81 && f[13] == 0x00;
        if (pkts[i].len > mtu + 14 + (vlan ? 4 : 0) && !(pkts[i].hdr.gso_type & 0x7f))
            continue;
        if (i != kept) {        /* only after a drop */
            struct vx_pkt keep = pkts[i];
            pkts[i] = pkts[kept];
            pkts[kept] = keep;
        }
        kept++;
    }
    if (kept < n)
        vx_counter_add(rx->stats.drops, (n - kept));
    return kept;
}

/* === VM-to-VM: two guests, each the other's port ========================== */

/*
 * VM-to-VM (two --socket, OVS-DPDK's "two dpdkvhostuser ports"): device
 * A's port is device B.  Queue pair k of A and queue pair k of B are one
 * link: A's TX ring 2k+1 -> B's RX ring 2k, and B's TX ring 2k+1 -> A's RX
 * ring 2k, both on the thread that owns pair k.  Each device's rings are
 * handed over and taken away on their own (vhost_user.c), so when B's guest
 * goes away its rings are simply not ready: A's packets towards B are
 * dropped and counted on B's RX ring, and A's own rings go on.
 */
static int pmd_vm2vm_pair(struct pmd_thread *t, struct vx_dev *a, struct vx_dev *b, int k)
{
    return pmd_guest_to_guest(t, a, &a->vrings[2 * k + 1], b, &b->vrings[2 * k]) +
           pmd_guest_to_guest(t, b, &b->vrings[2 * k + 1], a, &a->vrings[2 * k]);
}

/* === Where the cycles go: busy and idle polls (OVS's pmd-stats-show) ===== */

/*
 * A poll thread shows 100% CPU in top whether it moves ten million packets a
 * second or none: top cannot tell a busy poll thread from an idle one.  The
 * thread can.  Each iteration of pmd_main's loop ends in pmd_idle(), which
 * reads the CPU's time-stamp counter and adds the iteration's TSC cycles
 * either to "busy" (it moved packets) or to "idle" (it found nothing), as
 * OVS-DPDK's `ovs-appctl dpif-netdev/pmd-stats-show` does with its
 * "processing cycles" and "idle cycles".  Busy cycles divided by packets is
 * what a packet costs this thread, the number to compare with another
 * backend's at the same rate (make bench prints it beside each row).
 *
 * Cost: one rdtsc (about 25-40 cycles) and four adds per iteration.  A loaded
 * iteration moves up to VX_BURST packets each way and takes thousands of
 * cycles, so the count costs a few per mille there; an idle one costs a
 * little more, but it had nothing to do.  In --pmd-mode adaptive, time spent
 * asleep is neither busy nor idle (pmd_napi_sleep starts the clock afresh).
 * The TSC ticks at a constant rate on current x86 CPUs, not at the core's
 * clock: "cycles" here are TSC cycles, as in OVS.
 */
struct pmd_cycles {
    uint64_t tsc;                   /* the TSC at the end of the last iteration */
    uint64_t busy_tsc, idle_tsc;    /* TSC cycles of iterations that moved packets, and of the others */
    uint64_t busy_polls, idle_polls, packets;
} __attribute__((aligned(64)));     /* one thread's counters per cache line: no false sharing */
static struct pmd_cycles pmd_cycles[PMD_MAX_THREADS];

static inline uint64_t pmd_tsc(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_ia32_rdtsc();
#else
    struct timespec ts;             /* elsewhere, nanoseconds: the same shares, other units */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
}

/* Written by the thread alone; relaxed stores, so that main.c's reads are
 * whole numbers (vhost_xdp.h, "Threads, atomics and counters"). */
static inline void pmd_count_cycles(struct pmd_thread *t, int moved)
{
    struct pmd_cycles *c = &pmd_cycles[t->id];
    uint64_t now = pmd_tsc(), spent = now - c->tsc;
    c->tsc = now;
    if (moved) {
        __atomic_store_n(&c->busy_tsc, c->busy_tsc + spent, __ATOMIC_RELAXED);
        __atomic_store_n(&c->busy_polls, c->busy_polls + 1, __ATOMIC_RELAXED);
        __atomic_store_n(&c->packets, c->packets + (uint64_t)moved, __ATOMIC_RELAXED);
    } else {
        __atomic_store_n(&c->idle_tsc, c->idle_tsc + spent, __ATOMIC_RELAXED);
        __atomic_store_n(&c->idle_polls, c->idle_polls + 1, __ATOMIC_RELAXED);
    }
}

/* A thread's counters (structs of uint64_t only), read by main.c while the
 * thread writes them: each word loaded whole (relaxed), as the thread
 * stores it.  Shared with the sleep counters below. */
static void pmd_load_counters(void *to, const void *from, size_t bytes)
{
    for (size_t w = 0; w < bytes / sizeof(uint64_t); w++)
        ((uint64_t *)to)[w] = __atomic_load_n(&((const uint64_t *)from)[w], __ATOMIC_RELAXED);
}

/* pmd_thread_start: the clock starts with the thread. */
static void pmd_cycles_reset(int id)
{
    pmd_cycles[id] = (struct pmd_cycles){ .tsc = pmd_tsc() };
}

/* One line per thread for --stats (since the last line) and the exit lines
 * (since the start):
 *   exit: pmd 0: polls 245.5M, 0.6% busy | TSC cycles 55.0% busy, 276 per packet */
static void pmd_print_cycles(const char *what, int i, bool exit_line)
{
    static struct pmd_cycles last[PMD_MAX_THREADS];
    struct pmd_cycles c, d;
    pmd_load_counters(&c, &pmd_cycles[i], sizeof c);
    d = c;
    if (!exit_line) {
        d.busy_tsc -= last[i].busy_tsc, d.idle_tsc -= last[i].idle_tsc, d.packets -= last[i].packets;
        d.busy_polls -= last[i].busy_polls, d.idle_polls -= last[i].idle_polls;
        last[i] = c;
    }
    uint64_t polls = d.busy_polls + d.idle_polls, tsc = d.busy_tsc + d.idle_tsc;
    vx_log("%s: pmd %d: polls %.1f%s, %.1f%% busy | TSC cycles %.1f%% busy, %.0f per packet", what, i,
           polls >= 1000000 ? polls / 1e6 : polls / 1e3, polls >= 1000000 ? "M" : "k",
           polls ? 100.0 * (double)d.busy_polls / (double)polls : 0, tsc ? 100.0 * (double)d.busy_tsc / (double)tsc : 0,
           d.packets ? (double)d.busy_tsc / (double)d.packets : 0);
}

/* === When there is nothing to do: back-off (--pmd-sleep) and interrupt mode (--pmd-mode adaptive) === */

/*
 * A poll-mode thread burns its whole CPU even when no packet comes: that is
 * the price of never waiting for an interrupt.  --pmd-sleep USEC trades
 * some of it back, as OVS-DPDK's pmd-sleep-max does: after
 * PMD_IDLE_ITERATIONS polls in a row that moved nothing, the thread sleeps
 * between polls, 1 us first, then twice as long each empty poll, up to USEC;
 * the first packet that moves puts it back to full-speed polling.
 *
 * The cost is latency, not throughput: under steady load every poll finds
 * packets and the thread never sleeps, but the first packet after a quiet
 * moment waits until the thread wakes, up to USEC more (and the ring must
 * hold whatever arrives meanwhile: at 10 Mpps, 100 us is 1000 packets, more
 * than a 256-slot ring).  Sparse traffic such as a ping pays it on every
 * packet, in each direction.  The control thread's pmd_quiesce() waits up
 * to one sleep too.
 */
#define PMD_IDLE_ITERATIONS 1000    /* empty polls in a row before --pmd-sleep backs off */

static void pmd_napi(struct pmd_thread *t, int moved);     /* interrupt mode, below */

/* pmd_main()'s one call, at the end of every iteration: the iteration's
 * cycles counted, then, polling (the default), one test of two flags that
 * never change. */
static void pmd_idle(struct pmd_thread *t, int moved)
{
    pmd_count_cycles(t, moved);
    if (pmd_adaptive)
        pmd_napi(t, moved);
    else if (pmd_sleep_max_ns)
        pmd_idle_backoff(t, moved);
}

static void pmd_idle_backoff(struct pmd_thread *t, int moved)
{
    if (moved) {
        t->idle_iterations = 0;
        t->sleep_ns = 0;
        return;
    }
    if (++t->idle_iterations < PMD_IDLE_ITERATIONS)
        return;
    t->sleep_ns = t->sleep_ns == 0 ? 1000 : t->sleep_ns * 2;
    if (t->sleep_ns > pmd_sleep_max_ns)
        t->sleep_ns = pmd_sleep_max_ns;
    struct timespec ts = { 0, t->sleep_ns };
    nanosleep(&ts, NULL);
}

/* The kernel may stretch a sleep by this thread's timer slack (50 us by
 * default) to batch wake-ups; --pmd-sleep wants the sleep it asked for. */
static void pmd_idle_setup(void)
{
    if (pmd_sleep_max_ns)
        prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
}

/*
 * Interrupt mode, --pmd-mode adaptive: poll while there is work, sleep
 * until the guest kicks when there is none.  This is NAPI's idea, from
 * Linux's network drivers, turned around: a NIC driver takes an interrupt,
 * turns interrupts off and polls while packets keep coming, and when a poll
 * finds nothing turns them on again and looks once more before it stops.
 * The guest's own virtio-net driver does exactly that with our calls; here
 * we do it with its kicks.  Under load a thread never gets as far as
 * sleeping, so it polls as in poll mode, at poll mode's rate; idle, it
 * costs no CPU at all, and the first packet after a pause pays one kick
 * (a VM exit, or an eventfd write from a DPDK frontend) and one wake-up.
 *
 * The steps, all within one iteration of pmd_main's loop, so that no ring
 * can be taken away half-way (a ring hand-over waits for our epoch):
 *   1. idle for PMD_NAPI_IDLE_US: polls that moved nothing, by the clock;
 *   2. may we sleep?  Not while a ring has no kick fd (NOFD: vhost-user.rst
 *      says "polling should be used") or has been caught not kicking, nor
 *      while the NIC still holds our TX frames, a TSO packet is half cut, or
 *      a RARP waits to be sent: those need a poll, not a kick;
 *   3. arm: the guest's kicks on for every ring whose kick should wake us
 *      (virtqueue.c, vq_notify_enable, which looks at the ring once more
 *      after its barrier: the race it closes is explained there), and the
 *      poll set built; if any ring got work meanwhile, do not sleep;
 *   4. sleep in poll() on the wake-up eventfd, the kick fds and the AF_XDP
 *      sockets, at most PMD_NAPI_TIMEOUT_MS;
 *   5. awake: read the kick fds that fired (an eventfd counts until read),
 *      turn the kicks off again, poll.
 * Which rings wake us: every TX ring (the guest has something to send).  An
 * RX ring only where frames wait for its buffers: an AF_XDP port whose
 * guest has no RX buffer left leaves its frames in the socket (see
 * pmd_afxdp_pair), so then its RX ring is armed ("buffers added") and the
 * socket left out of the set, which would otherwise be readable at once.
 * Elsewhere (loopback, VM-to-VM, a switch) a frame for a guest without
 * buffers is dropped, so nothing waits for RX buffers.
 *
 * poll(), not epoll: the set is rebuilt from the rings that are ready at
 * each sleep, and holds no state that the control thread would have to
 * update when a ring or its kick fd changes.  A sleep is rare by
 * definition, and the set small.
 */
#define PMD_NAPI_IDLE_US     100    /* idle this long before sleeping: see below */
#define PMD_NAPI_CLOCK_EVERY 16     /* empty polls between two looks at the clock */
#define PMD_NAPI_TIMEOUT_MS  100    /* a sleep's longest: a frontend that does not kick loses this, once */

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* What a sleeping thread may wait on: its wake-up eventfd, a kick fd per
 * ring it polls, an AF_XDP socket per NIC queue. */
#define PMD_NAPI_FDS (1 + VX_MAX_DEVS * VX_MAX_VRINGS + VX_MAX_QUEUE_PAIRS)

/* Its sleeps and what ended each one (exactly one cause per sleep), written
 * by the thread, read by main.c (pmd_print_idle). */
struct pmd_napi_counts {
    uint64_t sleeps, woken_kick, woken_nic, woken_handover, woken_timeout, woken_signal;
    uint64_t missed_kicks;          /* work found after a timeout, with no kick: a frontend that does not kick */
    uint64_t asleep_ns;
};

/* A poll thread's interrupt-mode state, pmd_napis[t->id]: kept apart from
 * struct pmd_thread, which poll mode reads on every iteration. */
struct pmd_napi {
    int wake_fd;                        /* eventfd: pmd_wake_sleepers() ends a sleep at once (-1: none) */
    bool sleeping;                      /* in poll(): the watchdog leaves the thread alone */
    uint32_t empty_polls;               /* polls in a row that moved nothing ... */
    double idle_since;                  /* ... and since when (vx_now, read every 16th) */
    double started_at;
    int nfds;                           /* the sleep's poll set: */
    struct pollfd fds[PMD_NAPI_FDS];    /* [0] the wake fd, then kick fds and AF_XDP sockets */
    struct vx_vring *armed[PMD_NAPI_FDS];   /* the ring whose kick fd fds[i] is (NULL: not a kick fd) */
    struct pmd_napi_counts counts;
};
static struct pmd_napi pmd_napis[PMD_MAX_THREADS];
static int pmd_napi_threads;            /* threads of the last start, for the exit lines */

/* The threshold, NAPI's budget measured in time.  The rule for spinning
 * before blocking: spin about as long as a sleep and a wake-up cost, then
 * block; never worse than twice the best choice.  Measured here (2 shared
 * vCPUs, tests/rtt_probe against --loopback): a frame after a 1 ms pause
 * came back in 37-39 us median in adaptive mode against 1-2 us polling, so
 * a sleep and its wake-up cost about 37 us, and twice that rounds up to
 * 100.  (Tried: 40, the rule's own value.  TCP between two TCG guests,
 * bench/bench_tcp.sh adaptive, ran 10-15% faster, but a QEMU guest's RX
 * ring then once came back without a kick, in one of three CI runs
 * (tests/test_qemu_adaptive.sh, split ring with EVENT_IDX): a race to
 * understand before sleeping more often.)  And under load the gaps
 * between bursts must stay below it, or a busy thread would sleep: with
 * testpmd forwarding 1024 packets round the loopback, nearly all of the
 * thread's idle stretches were under 4 us; the longer ones (a few hundred
 * in 5 s, up to milliseconds) were testpmd off its CPU, when sleeping is
 * right. */

static bool pmd_napi_may_sleep(struct pmd_thread *t);
static bool pmd_napi_arm(struct pmd_thread *t);
static void pmd_napi_sleep(struct pmd_thread *t);
static void pmd_napi_disarm(struct pmd_thread *t);

static void pmd_napi(struct pmd_thread *t, int moved)
{
    struct pmd_napi *nap = &pmd_napis[t->id];
    if (moved) {
        nap->empty_polls = 0;
        return;
    }
    /* The clock is read only every PMD_NAPI_CLOCK_EVERY empty polls: under
     * load, polls that move packets reset the count and no clock is read. */
    if (++nap->empty_polls % PMD_NAPI_CLOCK_EVERY)
        return;
    double now = vx_now();
    if (nap->empty_polls == PMD_NAPI_CLOCK_EVERY) {
        nap->idle_since = now;
        return;
    }
    if (now - nap->idle_since < PMD_NAPI_IDLE_US * 1e-6)
        return;
    nap->empty_polls = 0;         /* sleep or not, the idle clock starts again */
    if (!pmd_napi_may_sleep(t))
        return;
    if (!pmd_napi_arm(t))       /* false: work came while arming */
        pmd_napi_sleep(t);
    pmd_napi_disarm(t);
}

/* Lane k of thread t: queue pair k of every device (one; two for VM-to-VM;
 * all of a switch's), and NIC queue k if there is one. */
#define PMD_FOR_LANES(t, k) for (int k = (t)->id; k < (int)pmd_devs[0].queue_pairs; k += pmd_nthreads)

static bool pmd_ring_running(const struct vx_vring *vr)
{
    return __atomic_load_n(&vr->ready, __ATOMIC_SEQ_CST) && !__atomic_load_n(&vr->broken, __ATOMIC_RELAXED);
}

/* Does an RX ring's kick ("buffers added") matter?  Only for an AF_XDP
 * port's guest, whose frames wait for buffers. */
static bool pmd_napi_rx_waits(int k)
{
    return !pmd_switch && pmd_ndevs == 1 && k < pmd_nnics;
}

/* The device a ring belongs to, for a log line. */
static const char *pmd_ring_device(const struct vx_vring *vr)
{
    for (int d = 0; d < pmd_ndevs; d++)
        if (vr >= pmd_devs[d].vrings && vr < pmd_devs[d].vrings + VX_MAX_VRINGS)
            return pmd_devs[d].opt.socket_path;
    return "?";
}

/* Step 2: nothing that needs a poll rather than a kick. */
static bool pmd_napi_may_sleep(struct pmd_thread *t)
{
    PMD_FOR_LANES(t, k) {
        for (int d = 0; d < pmd_ndevs; d++) {
            for (int r = 2 * k + (pmd_napi_rx_waits(k) ? 0 : 1); r <= 2 * k + 1; r++) {
                struct vx_vring *vr = &pmd_devs[d].vrings[r];
                if (!pmd_ring_running(vr))
                    continue;
                if (vr->kick_fd < 0 && !vr->kickless) {
                    vr->kickless = true;    /* said once per SET_VRING_KICK */
                    vx_log("%s: ring %u: no kick fd (NOFD): polled, --pmd-mode adaptive does not sleep on it",
                           pmd_ring_device(vr), vr->index);
                }
                if (vr->kickless)
                    return false;
            }
            if (k == 0 && __atomic_load_n(&pmd_devs[d].rarp_request, __ATOMIC_RELAXED))
                return false;
        }
        if (k < pmd_nnics && (pmd_cuts[k].big.len || nic_tx_pending(pmd_nics[k])))
            return false;
    }
    return true;
}

/* Step 3: kicks on, and the poll set.  Returns true when a ring already
 * has work (then the caller does not sleep, and disarms). */
static bool pmd_napi_arm(struct pmd_thread *t)
{
    struct pmd_napi *nap = &pmd_napis[t->id];
    bool busy = false;
    int n = 0;
    nap->fds[n] = (struct pollfd){ .fd = nap->wake_fd, .events = POLLIN };
    nap->armed[n++] = NULL;
    PMD_FOR_LANES(t, k) {
        bool rx_armed = false;
        for (int d = 0; d < pmd_ndevs; d++) {
            for (int r = 2 * k; r <= 2 * k + 1; r++) {
                struct vx_vring *vr = &pmd_devs[d].vrings[r];
                if (!pmd_ring_running(vr))
                    continue;
                if (r == 2 * k && !(pmd_napi_rx_waits(k) && vq_avail_buffers(vr) == 0))
                    continue;
                rx_armed |= r == 2 * k;
                busy |= vq_notify_enable(vr);
                nap->fds[n] = (struct pollfd){ .fd = vr->kick_fd, .events = POLLIN };
                nap->armed[n++] = vr;
            }
        }
        if (k < pmd_nnics && !rx_armed) {
            nap->fds[n] = (struct pollfd){ .fd = nic_poll_fd(pmd_nics[k]), .events = POLLIN };
            nap->armed[n++] = NULL;
        }
    }
    nap->nfds = n;
    return busy;
}

/* Step 5's other half, also after a sleep that did not happen: kicks off
 * again on every armed ring still ours.  (A ring the control thread has
 * stopped meanwhile keeps "kick me", which costs nothing: it waits for our
 * epoch before it touches the ring, and vq_attach writes the flag afresh.) */
static void pmd_napi_disarm(struct pmd_thread *t)
{
    struct pmd_napi *nap = &pmd_napis[t->id];
    for (int i = 1; i < nap->nfds; i++)
        if (nap->armed[i] && pmd_ring_running(nap->armed[i]))
            vq_notify_disable(nap->armed[i]);
    nap->nfds = 0;
}

/* A kick fd that fired: its count read (an eventfd stays readable until
 * then).  Kept for --trace=rings (main.c prints vr->kicks).  Our read
 * cannot block unless the frontend cleared O_NONBLOCK on the fd and read
 * the count itself between our poll() and our read(); then the watchdog's
 * signal (we are no longer `sleeping`) breaks the read with EINTR.  A kick
 * fd that fails in any way is not slept on again: the ring is polled. */
static void pmd_napi_read_kick(struct vx_vring *vr)
{
    uint64_t count;
    ssize_t r = read(vr->kick_fd, &count, sizeof count);
    if (r == sizeof count) {
        __atomic_store_n(&vr->kicks, vr->kicks + count, __ATOMIC_RELAXED);
        return;
    }
    if (r < 0 && errno == EAGAIN)
        return;             /* read by someone else: the kick still woke us */
    vr->kickless = true;
    vx_log("%s: ring %u: kick fd %s: polled from now on", pmd_ring_device(vr), vr->index,
           r == 0 ? "at end of file" : r > 0 ? "gave a short read" : errno == EINTR ? "blocked (not non-blocking)"
                                                                               : strerror(errno));
}

/* After a sleep that timed out: did a ring get work without a kick?  The
 * frontend published while its kicks were on and did not kick (or the
 * kick is late: one more look at the fd first, for up to 1 ms).  Such a ring is polled from
 * now on: a frontend that never kicks loses one timeout, once. */
static void pmd_napi_check_missed(struct pmd_thread *t)
{
    struct pmd_napi *nap = &pmd_napis[t->id];
    for (int i = 1; i < nap->nfds; i++) {
        struct vx_vring *vr = nap->armed[i];
        if (!vr || !pmd_ring_running(vr) || !vq_notify_enable(vr))
            continue;
        /* A millisecond's grace: a driver preempted between its publish and
         * its kick would otherwise be taken for one that never kicks. */
        struct pollfd late = { .fd = vr->kick_fd, .events = POLLIN };
        if (poll(&late, 1, 1) == 1)
            continue;
        __atomic_store_n(&nap->counts.missed_kicks, nap->counts.missed_kicks + 1, __ATOMIC_RELAXED);
        vr->kickless = true;
        vx_log("%s: ring %u: buffers came without a kick while kicks were on (the frontend does not kick): this "
               "ring is polled from now on", pmd_ring_device(vr), vr->index);
    }
}

/* Step 4 and the first half of step 5: sleep, then see what woke us and
 * count it (one cause per sleep, the first of: kick, NIC, hand-over,
 * timeout, signal). */
static void pmd_napi_sleep(struct pmd_thread *t)
{
    struct pmd_napi *nap = &pmd_napis[t->id];
    struct pmd_napi_counts *c = &nap->counts;
    double start = vx_now();
    __atomic_store_n(&nap->sleeping, true, __ATOMIC_SEQ_CST);
    int n = poll(nap->fds, (nfds_t)nap->nfds, PMD_NAPI_TIMEOUT_MS);
    __atomic_store_n(&nap->sleeping, false, __ATOMIC_SEQ_CST);
    pmd_cycles[t->id].tsc = pmd_tsc();  /* asleep is neither busy nor idle ("Where the cycles go") */
    __atomic_store_n(&c->sleeps, c->sleeps + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&c->asleep_ns, c->asleep_ns + (uint64_t)((vx_now() - start) * 1e9), __ATOMIC_RELAXED);
    uint64_t *cause = n < 0 ? &c->woken_signal : &c->woken_timeout;
    bool kick = false, nic = false, handover = false;
    for (int i = 0; i < nap->nfds && n > 0; i++) {
        if (!nap->fds[i].revents)
            continue;
        if (i == 0) {
            uint64_t count;
            if (read(nap->wake_fd, &count, sizeof count) < 0) {
                /* EAGAIN only: the count is ours alone */
            }
            handover = true;
        } else if (nap->armed[i]) {
            kick = true;
            pmd_napi_read_kick(nap->armed[i]);
        } else {
            nic = true;
        }
    }
    if (kick || nic || handover)
        cause = kick ? &c->woken_kick : nic ? &c->woken_nic : &c->woken_handover;
    __atomic_store_n(cause, *cause + 1, __ATOMIC_RELAXED);
    if (n == 0)
        pmd_napi_check_missed(t);
}

/* pmd_thread_start: the wake-up eventfd, in adaptive mode only. */
static int pmd_napi_setup(struct pmd_thread *t)
{
    struct pmd_napi *nap = &pmd_napis[t->id];
    *nap = (struct pmd_napi){ .wake_fd = -1, .started_at = vx_now() };
    pmd_cycles_reset(t->id);            /* "Where the cycles go" */
    pmd_napi_threads = t->id + 1;       /* threads start in order */
    if (!pmd_adaptive)
        return 0;
    nap->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (nap->wake_fd < 0) {
        vx_log("pmd %d: eventfd: %s", t->id, strerror(errno));
        return -1;
    }
    return 0;
}

/* In poll() right now (read by the watchdog and pmd_wake). */
static bool pmd_napi_asleep(const struct pmd_thread *t)
{
    return __atomic_load_n(&pmd_napis[t->id].sleeping, __ATOMIC_SEQ_CST);
}

/* pmd_stop, once the thread has been joined. */
static void pmd_napi_teardown(struct pmd_thread *t)
{
    struct pmd_napi *nap = &pmd_napis[t->id];
    if (nap->wake_fd >= 0)
        close(nap->wake_fd);
    nap->wake_fd = -1;
}

/* Every thread that sleeps, woken (or kept from falling asleep): called by
 * pmd_quiesce (rings are being taken away), pmd_stop, vhost_user.c when
 * rings start (a sleeping thread's poll set does not have them yet) and
 * on SEND_RARP.  The eventfd stays readable until the thread reads it after
 * its poll() returns, so a write that lands just before the thread sleeps
 * still ends that sleep at once: no wake-up is lost.  In poll mode there
 * are no wake fds and this does nothing. */
void pmd_wake_sleepers(void)
{
    uint64_t one = 1;
    for (int i = 0; i < pmd_started; i++)
        if (pmd_napis[i].wake_fd >= 0 && write(pmd_napis[i].wake_fd, &one, sizeof one) < 0) {
            /* EAGAIN: the counter is full, so a wake-up is pending anyway */
        }
}

/* Are the kick fds the poll threads' to read?  Then --trace=rings counts
 * what they read (vr->kicks) instead of reading the fds itself: a second
 * reader would take the kick a sleeping thread is about to read, and the
 * thread would go back to sleep with the guest's packet in the ring. */
bool pmd_kicks_owned(void)
{
    return pmd_adaptive;
}

/* --stats and the exit lines: per thread, where its cycles went (below),
 * then, in adaptive mode, the share of the time asleep (since the last
 * --stats line, or since start for "exit") and what ended the sleeps, e.g.
 *   stats: pmd 0: asleep 99.1% | sleeps 41 | woken by kick 37, NIC 0, hand-over 2, timeout 2, signal 0 | missed kicks 0 */
void pmd_print_idle(const char *what, double now)
{
    static uint64_t last_ns[PMD_MAX_THREADS];
    static double last_at[PMD_MAX_THREADS];
    bool exit_line = !strcmp(what, "exit");
    for (int i = 0; i < pmd_napi_threads; i++) {
        pmd_print_cycles(what, i, exit_line);
        if (!pmd_adaptive)
            continue;
        struct pmd_napi_counts c;
        pmd_load_counters(&c, &pmd_napis[i].counts, sizeof c);
        double since = exit_line || last_at[i] == 0 ? pmd_napis[i].started_at : last_at[i];
        uint64_t ns = c.asleep_ns - (exit_line ? 0 : last_ns[i]);
        double pct = now > since ? 100.0 * (double)ns / ((now - since) * 1e9) : 0;
        vx_log("%s: pmd %d: asleep %.1f%% | sleeps %llu | woken by kick %llu, NIC %llu, hand-over %llu, timeout %llu, "
               "signal %llu | missed kicks %llu", what, i, pct > 100 ? 100 : pct, (unsigned long long)c.sleeps,
               (unsigned long long)c.woken_kick, (unsigned long long)c.woken_nic,
               (unsigned long long)c.woken_handover, (unsigned long long)c.woken_timeout,
               (unsigned long long)c.woken_signal, (unsigned long long)c.missed_kicks);
        if (!exit_line) {
            last_ns[i] = c.asleep_ns;
            last_at[i] = now;
        }
    }
}

/* === The offloads' buffers ================================================
 *
 * offload.c (checksums, TCP segmentation: virtio 1.2 §5.1.6.2, §5.1.6.4)
 * needs room of its own in two places, allocated here once and never on
 * the data path:
 *   - guest to guest (ofl_to_guest), when the receiving guest did not
 *     negotiate what the sender asks for: each thread's scratch[] buffers,
 *     where a checksum is completed in a copy (a lent frame is the sending
 *     guest's memory, never written) or a TSO packet is cut into segments;
 *     allocated with the thread's own buffers in pmd_thread_start, and
 *     untouched until an offload needs them;
 *   - towards the NIC (ofl_to_nic): a TSO packet from the guest is up to
 *     64 KiB, larger than a UMEM frame, so it is taken whole into its NIC
 *     queue's pmd_cuts[k].big and cut into frames, over several polls if
 *     free frames run short.  One per NIC queue, used only by the thread
 *     that owns that queue.
 */
static int pmd_offload_start(struct nic_port **nics, int nnics)
{
    for (int k = 0; k < nnics && k < VX_MAX_QUEUE_PAIRS; k++) {
        pmd_cuts[k] = (struct ofl_cut){ .big = { .room = VX_PKT_MAX, .data = malloc(VX_PKT_MAX) },
                                        .nic_csum = nic_tx_csum(nics[k]) };
        if (!pmd_cuts[k].big.data) {
            vx_log("NIC queue %d: out of memory for the TSO buffer", k);
            return -1;
        }
    }
    return 0;
}

/* pmd_stop(), once every thread has stopped: no one uses them any more. */
static void pmd_offload_stop(void)
{
    for (int k = 0; k < VX_MAX_QUEUE_PAIRS; k++) {
        free(pmd_cuts[k].big.data);
        pmd_cuts[k] = (struct ofl_cut){ 0 };
    }
}

/* === Guest memory faults ================================================= */

/*
 * A poll thread's every access to guest memory may fault (SIGBUS): the
 * frontend can shrink the file behind a region at any moment (fault.c says
 * why, and how the handler brings us here).  pmd_main() armed its guard once,
 * so a fault anywhere in the iteration (a ring index, a descriptor, a buffer
 * being copied, in either device of a VM-to-VM pair) jumps back to the top
 * of its loop, here, with the faulting address.  What was half done is
 * dropped with the stack: the burst's packets, and nothing else, since no
 * lock is held and every ring of the faulting device is now stopped for
 * good (its connection is reset; a new one starts them afresh).
 *
 * The memory tables read here hold still: the control thread changes a
 * device's table only after every poll thread has finished an iteration in
 * which that device's rings were stopped, and this thread is still in the
 * iteration that faulted.  (A table being replaced meanwhile belongs to a
 * device this iteration never touched, and never names our address.)
 */
static void pmd_fault_recover(struct pmd_thread *t)
{
    void *addr = t->guard.addr;
    vx_fault_caught();
    __atomic_store_n(&pmd_napis[t->id].sleeping, false, __ATOMIC_SEQ_CST);
    pmd_napis[t->id].nfds = 0;  /* armed rings: see the end of this function */
    /* AF_XDP frames held across the guest access go back to the port. */
    if (t->held_tx)
        nic_tx_submit(t->held_nic, t->nic_tx, 0, t->held_tx);
    if (t->held_rx)
        nic_rx_release(t->held_nic, t->nic_rx, t->held_rx);
    t->held_tx = t->held_rx = 0;
    for (int k = t->id; pmd_switch && k < (int)pmd_devs[0].queue_pairs; k += pmd_nthreads)
        sw_fault_recover(k);        /* the switch's lanes hold their own frames */
    for (int d = 0; d < pmd_ndevs; d++) {
        struct vx_dev *dev = &pmd_devs[d];
        if (vx_mem_region_of(&dev->mem, addr) < 0)
            continue;
        /* Every ring of that device this thread polls stops: the next
         * access would fault again.  (Other threads' rings stop when they
         * fault, or when the control thread resets the connection.) */
        for (int k = t->id; k < (int)dev->queue_pairs; k += pmd_nthreads) {
            for (int r = 2 * k; r <= 2 * k + 1; r++) {
                struct vx_vring *vr = &dev->vrings[r];
                if (__atomic_load_n(&vr->ready, __ATOMIC_SEQ_CST) && !vr->broken) {
                    __atomic_store_n(&vr->broken, true, __ATOMIC_RELAXED);
                    vx_counter_add(vr->stats.broken, 1);
                }
            }
        }
        /* The first fault on the device is logged and handed to the control
         * thread, which resets the connection at its next wake-up (within a
         * second: vhost_user.c, vu_deadline) and clears mem_fault. */
        uintptr_t none = 0;
        if (__atomic_compare_exchange_n(&dev->mem_fault, &none, (uintptr_t)addr, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            char who[32];
            snprintf(who, sizeof who, "poll thread %d", t->id);
            vx_fault_log(dev->opt.socket_path, who, &dev->mem, addr);
        }
        /* --pmd-mode adaptive: the other rings' kicks, on if the fault came
         * while arming, go off at the next sleep's disarm; nothing is lost
         * meanwhile but a few kicks. */
        return;
    }
    /* Not in any guest memory: a bug of ours, not a frontend's doing. */
    vx_log("pmd %d: SIGBUS at %p, outside guest memory: aborting", t->id, addr);
    abort();
}

/* === Stuck threads ======================================================= */

/*
 * A poll thread never blocks by design: its only system calls are the call
 * eventfd writes, made non-blocking (vhost_user.c, vu_take_eventfd), the
 * AF_XDP kicks (MSG_DONTWAIT) and the --pmd-sleep naps.  But the O_NONBLOCK
 * of a call eventfd lives in an open file description the frontend shares,
 * and a hostile frontend can clear it again and fill the counter: our next
 * write then blocks.  So "stuck" can still mean one thing: blocked in that
 * write (or not scheduled at all, on a loaded machine, which no code fixes).
 *
 * The cure is a signal: PMD_WAKE_SIGNAL, whose handler does nothing and is
 * installed without SA_RESTART, so a blocked system call returns EINTR;
 * virtqueue.c (vq_call) then knows its write blocked, breaks the ring and
 * writes that fd no more.  Who sends it: pmd_quiesce(), to a thread that has
 * not finished its iteration after PMD_WAKE_AFTER; pmd_watchdog(), called by
 * the control loop at every wake-up, to one whose epoch has not moved for as
 * long (so the other rings on that thread move again without waiting for a
 * message); and pmd_stop(), which also gives up on a thread after
 * PMD_STUCK_SECONDS, so that SIGTERM ends the process whatever the threads
 * do.  Only the poll threads accept the signal: pmd_start() blocks it in
 * the control thread, and every thread created later inherits that.
 */
#define PMD_WAKE_SIGNAL SIGUSR2

static void pmd_wake_handler(int sig)
{
    (void)sig;      /* nothing: being interrupted is the point */
}

/* Before any thread starts (pmd_start): the handler, and the signal blocked
 * in the calling thread (and so in every thread it creates from now on). */
static void pmd_wake_prepare(void)
{
    struct sigaction sa = { .sa_handler = pmd_wake_handler };   /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    sigaction(PMD_WAKE_SIGNAL, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, PMD_WAKE_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* A poll thread, when it starts: the signal may interrupt it. */
static void pmd_wake_accept(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, PMD_WAKE_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

static void pmd_wake(struct pmd_thread *t)
{
    /* A thread asleep in --pmd-mode adaptive is not stuck: its poll() ends
     * at its wake-up eventfd, written before anyone calls this, or at its
     * timeout.  On a busy machine it may just not have run yet; a signal
     * would only turn its wake-up into an EINTR ("signal" in its counts). */
    if (__atomic_load_n(&t->running, __ATOMIC_SEQ_CST) && !pmd_napi_asleep(t))
        pthread_kill(t->tid, PMD_WAKE_SIGNAL);
}

/* Shutting down: pmd_stop() has begun, or SIGINT/SIGTERM waits for the
 * control loop (main.c blocks them and reads them from a signalfd, so they
 * stay pending until then). */
static bool pmd_shutting_down(void)
{
    sigset_t pending;
    return __atomic_load_n(&pmd_exit, __ATOMIC_SEQ_CST) ||
           (sigpending(&pending) == 0 && (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT)));
}

/* Called by the control loop at every wake-up (at least once a second): a
 * thread whose epoch has not moved since the last call, PMD_WAKE_AFTER ago
 * or more, is interrupted. */
void pmd_watchdog(void)
{
    double now = vx_now();
    for (int i = 0; i < pmd_started; i++) {
        struct pmd_thread *t = &pmd_threads[i];
        uint64_t epoch = __atomic_load_n(&t->epoch, __ATOMIC_SEQ_CST);
        if (epoch != t->watch_epoch || pmd_napi_asleep(t)) {
            /* moved on, or asleep in --pmd-mode adaptive: not stuck */
            t->watch_epoch = epoch;
            t->watch_since = now;
        } else if (now - t->watch_since >= PMD_WAKE_AFTER) {
            pmd_wake(t);
        }
    }
}
