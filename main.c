/*
 * main.c - vhost-xdp's control thread: the command line, set-up, the control
 * loop and shutdown.
 *
 * Where it sits: this is the left end of the picture in vhost_xdp.h.  It
 * parses the options, opens the NIC port (nic_afxdp.c) and the vhost-user
 * socket (vhost_user.c), starts the poll-mode threads (pmd_loop.c), and then
 * sleeps in poll() until something needs it: a vhost-user message (handed to
 * vhost_user.c), a signal, or a deadline.  Packets never pass through here:
 * once a ring is handed to a poll thread, this thread only reads counters.
 * In vhost-user.rst's words we are the back-end; the front-end (QEMU, or
 * DPDK's virtio_user) drives the protocol, and this thread answers it.
 *
 * First reading, the core path (read main() first, just above the "Second
 * reading" marker: it names every step; then the file from the top):
 *   1. the command line: the five core options (--socket, --client,
 *      --loopback, --iface, --help); every other option is handed to a
 *      parser for its group, after the marker;
 *   2. set-up, in an order that makes the likely failures cheap;
 *   3. the control loop: one poll() over the signals and the sockets;
 *   4. shutdown, in the reverse order of the data path's dependencies.
 *
 * Second reading, after the marker, each under its own banner: --help's
 * text and the options beyond the core five (the AF_XDP port's settings,
 * what the device offers, the poll threads, the instruments, the switch);
 * what set-up says about the MTU, the offloads and VM-to-VM; the switch's
 * set-up, ageing and MAC table view (switch.c); then the instruments:
 * --stats and the exit totals, the ring view (--ring-view, SIGUSR1) and
 * --trace=rings' kick lines.  Each instrument has one call site in the first
 * reading, named after what it does, so the control loop reads without them.
 *
 * Shutdown order matters: first the poll threads are stopped and joined
 * (pmd_stop, which waits for them a bounded time), then every ring is
 * stopped, guest memory unmapped and the socket file removed (vu_cleanup),
 * then the --pcap writer takes what they captured last and closes the file
 * (pcap_close); then the totals are printed, the XDP program is detached
 * (nic_close) and we exit 0.
 *
 * What a run says, and who says it: vhost-xdp --socket /tmp/vx.sock
 * --loopback, DPDK's testpmd forwarding over virtio_user for five seconds,
 * then Ctrl-C:
 *
 *   vhost-xdp: MTU: a frontend may set up to 65535 (NET_SET_MTU), what the port carries      set_up()
 *   vhost-xdp: offloads: checksum and TSO offered (CSUM, GUEST_CSUM, HOST_TSO4/6, ...)        set_up()
 *   vhost-xdp: listening on /tmp/vx.sock                           vu_init(), in set_up()
 *   vhost-xdp: pmd 0: polling queue pairs 0, 1, ... (not pinned)   pmd_start(), in set_up()
 *   vhost-xdp: frontend connected on /tmp/vx.sock                  vu_handle_event(), in the loop
 *   vhost-xdp: frontend disconnected; waiting for the next one     vu_handle_event(), in the loop
 *   vhost-xdp: signal 2: shutting down                             control_loop()
 *   vhost-xdp: exit: from guest 308992 packets, to guest 308960 packets, 32 drops, 0 broken rings
 *
 * The last line is print_totals(), after shutdown.  Between "connected"
 * and "disconnected" the frontend sent its vhost-user messages; --trace
 * prints each one, decoded (vhost_user.c).
 */
#include "vhost_xdp.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

/* === 1. The command line ================================================= */

/*
 * getopt_long(3) walks argv: each call returns the next option's letter
 * (its `val` in longopts below) and leaves its argument, if it takes one,
 * in optarg; at the end, optind indexes the first word that was not an
 * option.  The usage is
 *     vhost-xdp --socket PATH [--client] (--loopback | --iface IF) [options]
 * or, for two guests wired to each other, two --socket and no port.
 */

/* Everything the command line decides.  parse_options() fills it in; the
 * rest of the file only reads it.  Defaults are in parse_options(). */
struct config {
    struct vu_options vu;           /* --client, --trace: for vhost_user.c */
    const char *sockets[VX_MAX_DEVS];   /* --socket: once, twice (VM-to-VM), or a switch's ports */
    bool clients[VX_MAX_DEVS];      /* --client right after that --socket */
    int nsockets;
    struct nic_options nic;         /* --iface and the AF_XDP options: for nic_afxdp.c */
    bool loopback;                  /* --loopback: the other port (one of the two) */
    int cpus[64], ncpus;            /* --pmd-cores; 64 = pmd_loop.c's PMD_MAX_THREADS */
    long queues;                    /* --queues: what GET_QUEUE_NUM answers */
    bool queues_given, queue_range; /* --queues given; --queue given as a range Q-R */
    long pmd_sleep_us;              /* --pmd-sleep, 0 = never sleep */
    bool pmd_adaptive;              /* --pmd-mode adaptive: sleep until a kick when idle */
    const char *pcap_path;          /* --pcap, NULL = no capture */
    int64_t pcap_limit;             /* --pcap-limit, in bytes */
    double stats_every, view_every; /* --stats, --ring-view, in seconds; 0 = off */
    long mtu;                       /* --mtu, 0 = what the port carries (port_mtu()) */
    bool no_offloads;               /* --no-offloads: no checksum/TSO feature bits offered */
    bool switch_on, switch_asked;   /* the ports are a switch's (switch.c); --switch given */
    long mac_age;                   /* --mac-age, in seconds */
    double fdb_every;               /* --fdb-view, in seconds; 0 = off */
};

/* The fds the control loop sleeps on: the signalfd, a socket per device,
 * then with --trace=rings a kick fd per ring (see control_loop()).  At
 * most 1 + 8 + 8 * 16: eight devices of 16 rings each. */
#define POLL_MAX (1 + VX_MAX_DEVS + VX_MAX_DEVS * VX_MAX_VRINGS)
struct poll_set {
    struct pollfd fds[POLL_MAX];
    int n;
};

/*
 * The second reading, declared here and defined after the marker.  Each is
 * called once from the first reading; reading its name is enough to go on.
 * The option parsers return as parse_option() does; the *_tick functions
 * print what is due at `now` and bring *wake forward to their next time.
 */
static void usage(FILE *out);                                           /* --help's text */
static int parse_port_option(int c, char *arg, struct config *cfg);     /* --queue, --xdp-mode, ... */
static int parse_device_option(int c, char *arg, struct config *cfg);   /* --queues, --mtu, --no-offloads */
static int parse_pmd_option(int c, char *arg, struct config *cfg);      /* --pmd-cores, --pmd-sleep */
static int parse_instrument_option(int c, char *arg, struct config *cfg);   /* --stats, --trace, --pcap, ... */
static int parse_switch_option(int c, char *arg, struct config *cfg);   /* --switch, --mac-age, --fdb-view */
static int switch_set_up(const struct config *cfg);     /* the switch's ports and lanes (switch.c) */
static void switch_tick(const struct config *cfg, bool asked, double now, double *wake);  /* ageing, --fdb-view */
static int check_more_options(struct config *cfg);      /* VM-to-VM, the switch, --queue Q-R, --mtu */
static int check_switch(struct config *cfg);
static long port_mtu(const struct config *cfg);         /* the largest MTU the port carries */
static void log_offers(const struct config *cfg);       /* MTU, VM-to-VM and offload lines */
static void log_nic_queues(const struct config *cfg);   /* the port line for several NIC queues */
static void stats_tick(double every, double now, double *wake);                 /* --stats */
static void ring_view_tick(double every, bool asked, double now, double *wake); /* --ring-view */
static void trace_kicks_poll(struct poll_set *ps);      /* --trace=rings: kick fds to poll */
static void trace_kicks_read(const struct poll_set *ps);    /* ... and their kicks, logged */
static void print_totals(void);                         /* the exit lines */

/* Bad input: one line naming the option and what it wants, then exit
 * status 2 (a usage error, as getopt_long's own complaints get), before
 * anything has been set up that would need undoing. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("vhost-xdp: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

/* Every long option returns a letter: its short form where it has one (the
 * everyday options, in parse_options()'s optstring), else a letter that is
 * not in the optstring (Q, M, Z, F, z, D, N, P, L, U, O, ...), so that getopt_long
 * never accepts it alone: "-Q 1" is an error.  The order is getopt_long's
 * for an ambiguous abbreviation ("--q: --queues or --queue?"). */
static const struct option longopts[] = {
    { "socket", required_argument, NULL, 's' },  { "client", no_argument, NULL, 'c' },
    { "loopback", no_argument, NULL, 'l' },      { "iface", required_argument, NULL, 'i' },
    { "queues", required_argument, NULL, 'q' },  { "pmd-cores", required_argument, NULL, 'p' },
    { "stats", required_argument, NULL, 'S' },   { "trace", optional_argument, NULL, 't' },
    { "help", no_argument, NULL, 'h' },          { "queue", required_argument, NULL, 'Q' },
    { "xdp-mode", required_argument, NULL, 'M' }, { "zerocopy", no_argument, NULL, 'Z' },
    { "frames", required_argument, NULL, 'F' },  { "frame-size", required_argument, NULL, 'z' },
    { "ring-view", required_argument, NULL, 'R' }, { "pmd-sleep", required_argument, NULL, 'D' },
    { "pcap", required_argument, NULL, 'P' },    { "pcap-limit", required_argument, NULL, 'L' },
    { "mtu", required_argument, NULL, 'U' },   { "no-offloads", no_argument, NULL, 'O' },
    { "switch", no_argument, NULL, 'W' },      { "mac-age", required_argument, NULL, 'A' },
    { "fdb-view", required_argument, NULL, 'V' }, { "pmd-mode", required_argument, NULL, 'N' },
    { NULL, 0, NULL, 0 },
};

/* One option, `c` as getopt_long returned it.  Returns -1 to go on, else
 * the exit status main() returns at once (0 after --help, 2 for a mistake).
 * The core options are here; each other group has its own parser. */
static int parse_option(int c, char *arg, struct config *cfg)
{
    switch (c) {
    case 's':       /* once for a guest; twice for two guests wired to each other; more: a switch */
        if (cfg->nsockets == VX_MAX_DEVS)
            return usage_error("--socket %s: at most %d sockets", arg, VX_MAX_DEVS);
        cfg->sockets[cfg->nsockets++] = arg;
        return -1;
    /* --client: the frontend listens and we connect (QEMU's "-chardev
     * socket,...,server=on", virtio_user's "server=1"); by default we listen
     * and the frontend connects.  After a --socket: that socket only;
     * before any: every socket. */
    case 'c': *(cfg->nsockets ? &cfg->clients[cfg->nsockets - 1] : &cfg->vu.client) = true; return -1;
    /* The port on the other side: --loopback (each queue pair's TX comes
     * back on its own RX: no NIC and no privileges, what the tests and labs
     * mostly use) or --iface IF (an AF_XDP socket on IF's queue). */
    case 'l': cfg->loopback = true; return -1;
    case 'i': cfg->nic.ifname = arg; return -1;
    case 'h': usage(stdout); return 0;
    /* The other options, by group, each parsed after the marker. */
    case 'Q': case 'M': case 'Z': case 'F': case 'z':
        return parse_port_option(c, arg, cfg);
    case 'q': case 'U': case 'O':
        return parse_device_option(c, arg, cfg);
    case 'p': case 'D': case 'N':
        return parse_pmd_option(c, arg, cfg);
    case 'S': case 'R': case 't': case 'P': case 'L':
        return parse_instrument_option(c, arg, cfg);
    case 'W': case 'A': case 'V':
        return parse_switch_option(c, arg, cfg);
    default: usage(stderr); return 2;   /* getopt_long has said what was wrong */
    }
}

/*
 * Fill in *cfg from the command line.  Returns -1 when vhost-xdp should go
 * on and run, else the exit status main() returns at once: 0 after --help,
 * 2 for a usage error.  Only the syntax and the ranges are checked here;
 * whether the interface exists or the socket path is usable is found out by
 * the file that uses it (nic_open, vu_init), and vhost-xdp exits 1.
 */
static int parse_options(int argc, char **argv, struct config *cfg)
{
    /* The defaults.  UMEM: 4096 frames of 4096 bytes = 16 MiB, half for RX
     * and half for TX (nic_afxdp.c, "Step 5").  --pcap-limit 64 MiB: a
     * capture Wireshark opens at once, and a forgotten --pcap does not fill
     * the disk. */
    *cfg = (struct config){
        .nic = { .frame_size = 4096, .frame_count = 4096 },
        .queues = 1,
        .pcap_limit = 64 << 20,
        .mac_age = 300,
    };
    int c, status = -1;
    /* Short options only for the everyday ones; "t::" = --trace's WHAT is
     * optional, and then must be joined to it (-trings, --trace=rings). */
    while (status < 0 && (c = getopt_long(argc, argv, "s:cli:q:p:S:t::R:h", longopts, NULL)) != -1)
        status = parse_option(c, optarg, cfg);
    if (status >= 0)
        return status;
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (cfg->nsockets == 0) {
        usage_error("--socket PATH is required");
        usage(stderr);
        return 2;
    }
    /* One socket: exactly one port on the other side.  (Two sockets are
     * each other's port: check_more_options().) */
    if (cfg->nsockets == 1 && cfg->loopback == (cfg->nic.ifname != NULL))
        return usage_error("choose one port: --loopback or --iface IF");
    return check_more_options(cfg);
}

/* === 2. Set-up =========================================================== */

/* One device per --socket.  Static, because the poll threads keep their
 * addresses for the life of the process, and zeroed: no memory table, no
 * ring started.  Each device has its own socket, connection, memory table,
 * rings and counters; with two, each is the other's port (VM-to-VM); with
 * more, or with an uplink, they are a switch's ports (switch.c). */
static struct vx_dev devs[VX_MAX_DEVS];
static int ndevs;

/* The AF_XDP ports (--iface): one per NIC queue, queue pair k's on nics[k].
 * With --loopback or two devices there is none (nnics 0). */
static struct nic_port *nics[VX_MAX_QUEUE_PAIRS];
static int nnics;

/*
 * A signalfd is a file descriptor from which a pending signal is read, as
 * a struct signalfd_siginfo, instead of being delivered to a handler;
 * poll() says it is readable while one is pending (signalfd(2)).
 *
 * Signals are read from a signalfd in the control loop, never by a handler:
 * a handler could interrupt this thread half way through a message and may
 * call almost nothing (no printf, no munmap).  For that they must be blocked
 * in *every* thread, or the kernel may deliver SIGINT to a poll thread and
 * its default action kills the process with the socket file left behind and
 * the capture unflushed: blocked here, before any thread exists, the poll
 * threads inherit the mask.  Returns the signalfd, or -1.
 */
static int set_up_signals(void)
{
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGUSR1);      /* print the ring view once */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    /* A peer that goes away turns a write into EPIPE instead of killing us:
     * the vhost-user socket (we also send with MSG_NOSIGNAL) and a --pcap
     * FILE that is a pipe to a tcpdump which has exited. */
    signal(SIGPIPE, SIG_IGN);
    /* A frontend may shrink guest memory under us: the SIGBUS that follows
     * is caught where it happens and resets that device (fault.c). */
    if (vx_fault_init() < 0)
        return -1;
    int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sfd < 0)
        vx_log("signalfd: %s", strerror(errno));
    return sfd;
}

/* --iface: the AF_XDP socket(s) and the XDP program (nic_afxdp.c): the
 * program is attached to the interface and redirects the frames of our
 * NIC queue(s) to our socket(s), whose UMEM (the packet memory we own) the
 * kernel copies them into.  First of everything that can fail: it is what
 * most often does (privileges, the interface's name), and then nothing
 * else has been set up yet.  Its line names the queue and the mode the
 * kernel gave us, as nic_afxdp.c names it (e.g. "native (drv), copy"). */
static int open_nic(const struct config *cfg)
{
    if (!cfg->nic.ifname)
        return 0;
    if (nic_open(nics, &cfg->nic) < 0)
        return -1;
    nnics = (int)cfg->nic.nqueues;
    if (nnics == 1)
        vx_log("port: AF_XDP on %s queue %u, %s", cfg->nic.ifname, cfg->nic.queue, nic_mode_name(nics[0]));
    else
        log_nic_queues(cfg);
    return 0;
}

/* The ports, nics[0] first: it holds the interface's XDP program, and
 * closing it detaches the program (nic_afxdp.c, nic_close). */
static void close_nics(void)
{
    for (int k = 0; k < nnics; k++)
        nic_close(nics[k]);
    nnics = 0;
}

/*
 * Everything before the control loop, in this order:
 *   - what needs no undoing: the --pcap file (a path we cannot write is
 *     reported at once), each device's fixed numbers, what they offer
 *     (logged), the signals;
 *   - the parts the packets will use, the likeliest failure first: the NIC,
 *     the vhost-user sockets, then the poll threads and the pcap writer.
 * Returns the signalfd.  On a failure (the step that failed has logged
 * why) it undoes what the steps before it did, in the reverse order, and
 * returns -1: the command line was fine, the machine said no.
 */
static int set_up(const struct config *cfg)
{
    if (cfg->pcap_path && pcap_open(cfg->pcap_path, (uint64_t)cfg->pcap_limit) < 0)
        return -1;
    /* Each device's fixed numbers, which vhost_user.c answers the frontend
     * with: how many queue pairs GET_QUEUE_NUM offers (a frontend may use
     * fewer; virtio 1.2 §5.1.2), the largest MTU NET_SET_MTU may ask for
     * (§5.1.4; vhost_user.c refuses more, and QEMU then refuses to start the
     * device rather than give the guest an MTU the port would truncate), and
     * whether the offload feature bits are offered at all. */
    ndevs = cfg->nsockets;
    for (int d = 0; d < ndevs; d++) {
        devs[d].queue_pairs = (uint32_t)cfg->queues;
        devs[d].mtu_max = (uint32_t)(cfg->mtu ? cfg->mtu : port_mtu(cfg));
        devs[d].no_offloads = cfg->no_offloads || (cfg->switch_on && cfg->nic.ifname);  /* switch.c, "Offloads" */
    }
    log_offers(cfg);
    /* Before the poll threads start: they read it without a lock, and
     * pthread_create() makes everything written before it visible to them. */
    vx_trace_rings = cfg->vu.trace >= VX_TRACE_RINGS;
    int nup = 0;        /* devices vu_init() has set up: the ones to clean up */
    int sfd = set_up_signals();
    if (sfd < 0 || open_nic(cfg) < 0)
        goto fail;
    /* The sockets: listening now (server mode), or connecting from the
     * loop (client mode).  No message is read before the poll threads run. */
    for (; nup < ndevs; nup++) {
        struct vu_options vu = cfg->vu;
        vu.socket_path = cfg->sockets[nup];
        vu.client = cfg->vu.client || cfg->clients[nup];
        vu.name_socket = ndevs >= 2;
        if (vu_init(&devs[nup], &vu) < 0)
            goto fail;
    }
    /* The poll threads start before any message is read: a ring is handed
     * to them the moment it is complete (vhost_user.c, vu_rings_resume), and
     * they are already spinning, waiting for its `ready` flag.  They make
     * their capture rings; the pcap writer starts once they all exist.  A
     * switch's ports and lanes are set up first (switch.c). */
    if ((cfg->switch_on && switch_set_up(cfg) < 0) ||
        pmd_start(devs, ndevs, nics, nnics, cfg->cpus, cfg->ncpus, (uint32_t)cfg->pmd_sleep_us,
                  cfg->pmd_adaptive) < 0 || pcap_start() < 0)
        goto fail;
    return sfd;

    /* Each undo is harmless for a step that never ran (pmd_stop with no
     * thread, close_nics with no port, pcap_close with no file), except
     * vu_cleanup: on a device vu_init never set up, the zeroed fds would
     * close fd 0, hence nup.  pcap_close comes after pmd_stop, as in the
     * shutdown: it frees the capture rings the poll threads write into. */
fail:
    pmd_stop();
    sw_stop();
    while (nup-- > 0)
        vu_cleanup(&devs[nup]);
    close_nics();
    if (sfd >= 0)
        close(sfd);
    pcap_close();
    return -1;
}

/* === 3. The control loop ================================================= */

/* Built afresh before every poll(): a message may have connected,
 * disconnected, or replaced a ring's kick fd since the last one.  fds[1 + d]
 * is what vu_poll_fd() names for device d (-1: poll() ignores it, and the
 * loop takes it for "client mode, not connected"), waiting for a message or,
 * while a reply is stuck in it, for room (vu_poll_events). */
static void poll_set_build(struct poll_set *ps, int sfd)
{
    ps->fds[0] = (struct pollfd){ sfd, POLLIN, 0 };
    for (int d = 0; d < ndevs; d++)
        ps->fds[1 + d] = (struct pollfd){ vu_poll_fd(&devs[d]), vu_poll_events(&devs[d]), 0 };
    ps->n = 1 + ndevs;
    if (vx_trace_rings)
        trace_kicks_poll(ps);
}

/* poll()'s timeout for a deadline, in whole milliseconds rounded up: rounded
 * down, we would wake just before the deadline, find nothing due, and spin
 * with timeout 0 until it comes. */
static int ms_until(double deadline)
{
    double left = deadline - vx_now();
    return left <= 0 ? 0 : (int)(left * 1000) + 1;
}

/*
 * The control loop.  It sleeps in poll() on:
 *   fds[0]  the signalfd: SIGINT and SIGTERM end the loop (then the clean
 *           shutdown), SIGUSR1 asks for the ring view;
 *   fds[1]  (and fds[2] for a second device) what vu_poll_fd() names for
 *           the device: the listening socket while no frontend is connected
 *           (readable = one is connecting), or the connection (readable = a
 *           message, or the frontend has gone).  One connection at a time:
 *           while there is one the listening socket is not polled, so a
 *           second frontend waits in the backlog.  In client mode, not
 *           connected, there is no fd (-1) and the one-second timeout
 *           drives the connect attempts;
 *   then    with --trace=rings only, each ring's kick eventfd.
 * One message is handled per wake-up, and none is ever waited for
 * (vhost_user.c reads and writes without blocking), so a signal is never
 * more than one message away.  The timeout (at most a second) drives
 * --stats, --ring-view, the client-mode reconnects, the deadline of a
 * message or reply a frontend leaves half done, the reset of a device whose
 * memory faulted in a poll thread (vu_deadline), and the poll threads'
 * watchdog.  The packets are all on the poll threads: nothing here is on
 * their path.  Returns on SIGINT or SIGTERM, or if poll() itself fails.
 */
static void control_loop(const struct config *cfg, int sfd)
{
    double next_connect = 0;        /* client mode: the first attempt at once */
    bool view_asked = false;        /* SIGUSR1 came */
    for (;;) {
        /* What is due now is done now; `wake` becomes the earliest of a
         * second from now, the next --stats line, the next ring view and
         * each device's deadline. */
        double now = vx_now(), wake = now + 1;
        stats_tick(cfg->stats_every, now, &wake);
        ring_view_tick(cfg->view_every, view_asked, now, &wake);
        switch_tick(cfg, view_asked, now, &wake);   /* a switch: ageing, the MAC table view */
        view_asked = false;
        for (int d = 0; d < ndevs; d++)
            if (vu_deadline(&devs[d]) > 0 && vu_deadline(&devs[d]) < wake)
                wake = vu_deadline(&devs[d]);
        struct poll_set ps;
        poll_set_build(&ps, sfd);
        if (poll(ps.fds, ps.n, ms_until(wake)) < 0 && errno != EINTR) {
            vx_log("poll: %s", strerror(errno));
            return;
        }
        /* Signals first: a SIGTERM is acted on even while a busy frontend
         * keeps the socket readable.  After SIGUSR1 the loop goes round at
         * once: a message that came with it is still readable. */
        if (ps.fds[0].revents & POLLIN) {
            struct signalfd_siginfo si = { 0 };     /* a failed read: "signal 0", and we stop */
            if (read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR1) {
                view_asked = true;
                continue;
            }
            vx_log("signal %u: shutting down", si.ssi_signo);
            return;
        }
        /* Kicks before messages: the message below may close a kick fd. */
        trace_kicks_read(&ps);
        /* Any revents, not just POLLIN: POLLHUP/POLLERR mean the frontend
         * has gone, which vu_handle_event finds when its read returns 0.
         * A device whose deadline has come is called too.  The devices are
         * independent: one's message or disconnect takes only its own rings
         * away (vhost_user.c), the other's keep moving. */
        now = vx_now();
        for (int d = 0; d < ndevs; d++)
            if ((ps.fds[1 + d].fd >= 0 && ps.fds[1 + d].revents) ||
                (vu_deadline(&devs[d]) > 0 && now >= vu_deadline(&devs[d])))
                vu_handle_event(&devs[d]);
        pmd_watchdog();     /* a poll thread stuck in a system call is interrupted */
        if (now >= next_connect) {      /* client mode, not connected: retry every second */
            for (int d = 0; d < ndevs; d++)
                if (ps.fds[1 + d].fd < 0)
                    vu_handle_event(&devs[d]);
            next_connect = now + 1;
        }
    }
}

/* === 4. Shutdown ========================================================= */

/*
 * In the reverse order of the data path's dependencies: first stop and join
 * the poll threads, then unmap guest memory and remove the socket files;
 * the NIC, whose rings they were polling, is closed last, in main().
 * vu_cleanup runs what a frontend's disconnect runs (vhost_user.c,
 * vu_reset_device): every ring stopped and its fds closed, guest memory
 * unmapped.  The rings' counters survive it, for the exit lines.  The
 * signal path does not depend on the poll threads: pmd_stop() waits for
 * them a bounded time, and one it had to leave behind (stuck in a system
 * call on a frontend's fd, or never scheduled) keeps what it may still
 * touch (guest memory, the capture rings, the NIC) until the exit takes
 * it.  Returns how many were left behind.
 */
static int shut_down(void)
{
    int stuck = pmd_stop();
    for (int d = 0; d < ndevs; d++)
        vu_cleanup(&devs[d]);   /* rings taken away, guest memory unmapped, socket file removed */
    if (!stuck)
        pcap_close();   /* after the poll threads: nothing more can be captured */
    return stuck;
}

/*
 * main() is the lab sheet of a run:
 *   1. the command line: a mistake costs nothing, nothing is set up yet;
 *   2. set-up: the devices, the signals, the NIC, the sockets, the threads;
 *   3. the control loop, until SIGINT or SIGTERM;
 *   4. shutdown, from the guest's end of the data path to the NIC's, and
 *      the exit lines with the totals of the run.
 */
int main(int argc, char **argv)
{
    struct config cfg;
    int status = parse_options(argc, argv, &cfg);
    if (status >= 0)
        return status;          /* 0 after --help, 2 after a usage error */
    int sfd = set_up(&cfg);
    if (sfd < 0)
        return 1;               /* the step that failed has said why */
    control_loop(&cfg, sfd);
    int stuck = shut_down();
    /* The totals for the whole run: what the tests and labs read after
     * stopping vhost-xdp, and a student's first check that packets moved.
     * No thread writes a counter any more, so they are exact.  The NIC's
     * ports hold its counters: they are closed after. */
    print_totals();
    if (!stuck)
        close_nics();   /* XDP program detached (the exit detaches it too): the interface is as we found it */
    close(sfd);
    return 0;
}

/* === Second reading: the help text, the other options, the instruments === */

/* === --help ============================================================== */

/* The help text is the reference for every option: keep it in step with
 * the parsers and with README.md's "vhost-xdp on its own".  --help prints
 * it on stdout (asked for, exit 0); a usage error prints it on stderr
 * (exit 2), so a script's stdout stays clean. */
static void usage(FILE *out)
{
    fputs("usage: vhost-xdp --socket PATH [--client] --loopback [options]\n"
          "       vhost-xdp --socket PATH --socket PATH2 [--client] [options]   (VM-to-VM)\n"
          "       vhost-xdp --socket PATH [--client] ... [--iface IF] [options]  (a switch: 3+ sockets,\n"
          "                                                or 2+ and --iface, or --switch)\n"
          "\n"
          "A vhost-user network backend: serves the virtio-net queues of a QEMU guest or of\n"
          "DPDK's virtio_user over PATH, in poll mode.\n"
          "\n"
          "  -s, --socket PATH      the vhost-user unix socket.  Given twice, and without a port\n"
          "                         option: two devices, each the other's port (VM-to-VM: queue\n"
          "                         pair k of the first <-> queue pair k of the second)\n"
          "                         Up to 8 times: 3 or more, or 2 and --iface, make a switch\n"
          "  -c, --client           connect to PATH (the frontend listens) instead of listening;\n"
          "                         retried every second, and again after the frontend goes away.\n"
          "                         After a --socket: that socket only; before any: all of them\n"
          "  -l, --loopback         port: each queue pair's TX comes back on its own RX\n"
          "  -i, --iface IF         port: AF_XDP socket on interface IF (root or CAP_NET_ADMIN+CAP_BPF)\n"
          "      --queue Q[-R]      NIC queues for --iface (default 0): queue pair k <-> NIC queue Q+k,\n"
          "                         one AF_XDP socket each; a range Q-R also sets --queues to its length\n"
          "      --xdp-mode MODE    auto (native, else skb; the default), native or skb\n"
          "      --zerocopy         AF_XDP zero-copy mode (needs driver support; default copy mode)\n"
          "      --frames N         UMEM frames per NIC queue (power of two, default 4096)\n"
          "      --frame-size N     UMEM frame size: 2048 or 4096 (default)\n"
          "  -q, --queues N         queue pairs offered to the frontend (1..8, default 1)\n"
          "      --mtu N            the largest MTU a frontend may set with NET_SET_MTU (QEMU's\n"
          "                         host_mtu=N); 68..65535, default: the largest the port carries\n"
          "                         (65535 with --loopback, frame size - 270 with --iface)\n"
          "      --no-offloads      offer the guest no checksum or TCP segmentation offload (CSUM,\n"
          "                         GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6, ...): its TCP then sends\n"
          "                         MTU-sized, checksummed segments (for comparison, labs)\n"
          "  -p, --pmd-cores LIST   one poll thread per CPU in LIST, pinned there (e.g. 1, 0,1, 2-3);\n"
          "                         default: one thread, not pinned\n"
          "      --pmd-sleep USEC   when a poll thread finds no packet for a while, sleep between polls,\n"
          "                         longer each time up to USEC microseconds (0..10000; default 0: never\n"
          "                         sleep).  Saves the CPU an idle poll thread burns; costs latency: the\n"
          "                         first packet after a quiet moment waits up to USEC for the thread\n"
          "      --pmd-mode MODE    poll (the default): poll threads spin, whether packets come or not;\n"
          "                         adaptive: a thread idle for 100 us turns the guest's kicks on and\n"
          "                         sleeps until one comes (interrupt mode, as vhost-net; NAPI's idea),\n"
          "                         polling again at once.  No CPU when idle; one wake-up per packet\n"
          "                         when traffic is sparse; under load the same as poll\n"
          "      --pcap FILE        write every forwarded packet to FILE (pcap, Linux cooked link type:\n"
          "                         \"Out\" = sent by the guest, \"In\" = given to the guest); the poll\n"
          "                         threads never wait for it: if the writer falls behind, packets are\n"
          "                         left out and counted\n"
          "      --pcap-limit BYTES stop capturing when FILE would grow past BYTES (suffix k, M or G;\n"
          "                         default 64M)\n"
          "  -S, --stats SECONDS    print a one-line summary every SECONDS\n"
          "  -t, --trace[=WHAT]     on stderr: messages (the default) decodes every vhost-user\n"
          "                         message; rings (or all) adds ring events: started, stopped,\n"
          "                         enabled, disabled, kicks received, calls sent (a few per second),\n"
          "                         and TSO packets' virtio-net headers (one per ring and 1/3 s)\n"
          "  -R, --ring-view SECONDS  print every started ring's indices and slots every SECONDS\n"
          "                         (SIGUSR1 prints it once)\n"
          "      --switch           forward by learned MAC (an L2 switch) even with two ports only\n"
          "      --mac-age SECONDS  a switch forgets a MAC not seen for SECONDS (1..86400, default 300)\n"
          "      --fdb-view SECONDS print a switch's MAC table every SECONDS (SIGUSR1 prints it once)\n"
          "  -h, --help             this text\n",
          out);
}

/* === The options beyond the core five ==================================== */

/*
 * Each parser below takes the letters parse_option() hands it and returns
 * as parse_option() does: -1 to go on, 2 after a usage error.  The checks
 * that need the whole command line (two sockets, a --queue range with
 * --queues, an --mtu the port cannot carry) come after, in
 * check_more_options().
 */

/* A word an option accepts and the value it stands for.  A table of them
 * ends with a NULL word; one lookup serves every keyword option. */
struct keyword {
    const char *word;
    int value;
};

static const struct keyword xdp_modes[] = {         /* --xdp-mode */
    { "auto", NIC_XDP_AUTO }, { "native", NIC_XDP_NATIVE }, { "skb", NIC_XDP_SKB }, { NULL, 0 },
};

static const struct keyword trace_levels[] = {      /* --trace=WHAT; "all" is all there is: rings */
    { "messages", VX_TRACE_MESSAGES }, { "rings", VX_TRACE_RINGS }, { "all", VX_TRACE_RINGS }, { NULL, 0 },
};

/* The value of `word` in table k, or -1 if the table does not have it. */
static int keyword_value(const struct keyword *k, const char *word)
{
    for (; k->word; k++)
        if (!strcmp(k->word, word))
            return k->value;
    return -1;
}

/* All of s is a decimal number in min..max.  An empty s is not one: strtol
 * would read it as 0 (leaving `end` at s), and "--pmd-sleep ''" would then
 * mean "never sleep" instead of the mistake it is. */
static bool number_in(const char *s, long min, long max, long *v)
{
    char *end;
    *v = strtol(s, &end, 10);
    return end != s && !*end && *v >= min && *v <= max;
}

/*
 * --queue Q or Q-R: at most VX_MAX_QUEUE_PAIRS NIC queues, one per queue
 * pair.  Queue pair k is served by NIC queue Q+k: its own AF_XDP socket,
 * which the XDP program picks by the packet's RX queue (the XSKMAP's key),
 * polled by the poll thread of that pair alone.  So a range and --queues
 * must agree, whichever comes first: this check, and the one under --queues.
 */
static int parse_queue_range(char *arg, struct config *cfg)
{
    char *dash = strchr(arg, '-');
    long first, last;
    if (dash)
        *dash = '\0';      /* arg is ours to cut (argv) */
    bool good = number_in(arg, 0, 1 << 20, &first) &&
                (!dash || number_in(dash + 1, first, first + VX_MAX_QUEUE_PAIRS - 1, &last));
    if (dash)
        *dash = '-';
    if (!good)
        return usage_error("--queue %s: want a queue id Q or a range Q-R of at most %d queues", arg,
                           VX_MAX_QUEUE_PAIRS);
    if (dash && cfg->queues_given && cfg->queues != last - first + 1)
        return usage_error("--queues %ld and --queue %s: one NIC queue per queue pair, so give "
                           "as many of each", cfg->queues, arg);
    cfg->nic.queue = (uint32_t)first;
    cfg->queue_range = dash != NULL;
    if (dash)
        cfg->queues = last - first + 1;
    return -1;
}

/*
 * The AF_XDP port's settings (nic_afxdp.c, and the kernel's AF_XDP
 * documentation): --xdp-mode says where the XDP program runs, in the
 * driver before any socket buffer exists (native) or on the skb the kernel
 * has already built (skb, "generic": slower, but any interface has it);
 * --zerocopy lets the NIC DMA straight into our UMEM, which few drivers do;
 * --frames and --frame-size size the UMEM, every frame one packet.  1 << 20
 * is a bound, not a promise: nic_afxdp.c checks again what the kernel
 * accepts (a queue the interface has, at least 4 bursts of frames, a frame
 * no larger than a page).
 */
static int parse_port_option(int c, char *arg, struct config *cfg)
{
    long v;
    switch (c) {
    case 'Q':
        return parse_queue_range(arg, cfg);
    case 'Z':
        cfg->nic.zerocopy = true;
        break;
    case 'F':   /* a power of two: the AF_XDP rings are 2^k entries, sized from it */
        if (!number_in(arg, 4 * VX_BURST, 1 << 20, &v) || (v & (v - 1)))
            return usage_error("--frames %s: out of range (see --help)", arg);
        cfg->nic.frame_count = (uint32_t)v;
        break;
    case 'z':   /* aligned UMEM chunks: a power of two, 2048 up to the page size */
        if (!number_in(arg, 2048, 4096, &v) || (v != 2048 && v != 4096))
            return usage_error("--frame-size %s: out of range (see --help)", arg);
        cfg->nic.frame_size = (uint32_t)v;
        break;
    case 'M':
        if ((v = keyword_value(xdp_modes, arg)) < 0)
            return usage_error("--xdp-mode %s: want auto, native or skb", arg);
        cfg->nic.mode = (enum nic_xdp_mode)v;
        break;
    }
    return -1;
}

/* What the device offers the frontend (vhost_user.c answers with it):
 * --queues, the queue pairs of VIRTIO_NET_F_MQ (vhost-user.rst, "Multiple
 * queue support"); --mtu, the ceiling of VIRTIO_NET_F_MTU's field (virtio
 * 1.2 §5.1.4); --no-offloads, the checksum and TSO feature bits left out of
 * GET_FEATURES' answer (vhost_user.c, vu_offered_features). */
static int parse_device_option(int c, char *arg, struct config *cfg)
{
    long v;
    switch (c) {
    case 'O':
        cfg->no_offloads = true;
        break;
    case 'U':   /* 68: virtio 1.2 §5.1.4.1 (IPv4's minimum); 65535: the field is 16 bits */
        if (!number_in(arg, VX_MTU_MIN, 65535, &cfg->mtu))
            return usage_error("--mtu %s: want a number from %d to 65535", arg, VX_MTU_MIN);
        break;
    case 'q':   /* VHOST_USER_GET_QUEUE_NUM's answer: 2 vrings a pair (virtio 1.2 §5.1.2) */
        if (!number_in(arg, 1, VX_MAX_QUEUE_PAIRS, &v))
            return usage_error("--queues %s: want a number from 1 to %d", arg, VX_MAX_QUEUE_PAIRS);
        if (cfg->queue_range && v != cfg->queues)
            return usage_error("--queues %ld and --queue %u-%ld: one NIC queue per queue pair, so give "
                               "as many of each", v, cfg->nic.queue, (long)cfg->nic.queue + cfg->queues - 1);
        cfg->queues = v;
        cfg->queues_given = true;
        break;
    }
    return -1;
}

/*
 * --pmd-cores: the articles' "one core per poll-mode thread".  Each CPU in
 * the list gets one poll thread pinned to it (pmd_loop.c, pmd_start), so the
 * thread never migrates and its rings stay warm in that core's cache; OVS
 * calls this pmd-cpu-mask, DPDK -l.  The syntax is taskset's and DPDK's:
 * "1", "0,1", "2-3,5" -> CPU numbers.  Returns the count, or -1.
 */
static int parse_cpu_list(const char *s, int *cpus, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10), b = a;
        if (end == s || a < 0 || a >= CPU_SETSIZE)      /* CPU_SETSIZE: what a cpu_set_t holds */
            return -1;
        if (*end == '-') {
            s = end + 1;
            b = strtol(s, &end, 10);
            if (end == s || b < a || b >= CPU_SETSIZE)
                return -1;
        }
        for (long c = a; c <= b; c++) {
            if (n == max)
                return -1;
            cpus[n++] = (int)c;
        }
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        s = end;
    }
    return n;
}

/* The poll threads (pmd_loop.c): where they run, and whether they rest.
 * --pmd-sleep is OVS-DPDK's idea (its pmd-sleep-max): a poll thread that
 * keeps finding nothing naps a little longer each time, up to the bound.
 * --pmd-mode adaptive is vhost-net's: sleep until the guest kicks. */
static int parse_pmd_option(int c, char *arg, struct config *cfg)
{
    switch (c) {
    case 'p':
        cfg->ncpus = parse_cpu_list(arg, cfg->cpus, 64);
        if (cfg->ncpus <= 0)
            return usage_error("--pmd-cores %s: want a CPU list like 1 or 0,1 or 2-3", arg);
        break;
    case 'D':   /* 10 ms at most: the first packet after a pause, and every
                   ring hand-over (pmd_quiesce), may wait one whole sleep */
        if (!number_in(arg, 0, 10000, &cfg->pmd_sleep_us))
            return usage_error("--pmd-sleep %s: want microseconds from 0 to 10000", arg);
        break;
    case 'N':   /* poll: spin always (DPDK, OVS-DPDK); adaptive: sleep on the
                   guest's kicks when idle (vhost-net, NAPI) */
        if (strcmp(arg, "poll") && strcmp(arg, "adaptive"))
            return usage_error("--pmd-mode %s: want poll or adaptive", arg);
        cfg->pmd_adaptive = !strcmp(arg, "adaptive");
        break;
    }
    return -1;
}

/* The instruments: --stats, --ring-view, --trace, --pcap and its limit.
 * --stats and --ring-view are printed from the banners below; --trace is
 * vhost_user.c's (messages) and virtqueue.c's and this file's (rings);
 * --pcap is pcap.c's. */
static int parse_instrument_option(int c, char *arg, struct config *cfg)
{
    long v;
    switch (c) {
    case 'P':
        cfg->pcap_path = arg;
        break;
    case 't':   /* a bare --trace means messages */
        if ((v = arg ? keyword_value(trace_levels, arg) : VX_TRACE_MESSAGES) < 0)
            return usage_error("--trace=%s: want messages, rings or all", arg);
        cfg->vu.trace = (enum vx_trace_level)v;
        break;
    case 'L':   /* at least the 24-byte file header, or there is nothing to stop */
        cfg->pcap_limit = pcap_parse_size(arg);
        if (cfg->pcap_limit < 24)
            return usage_error("--pcap-limit %s: want a size of at least 24 bytes, "
                               "like 1000000, 500k, 64M or 2G", arg);
        break;
    case 'S': case 'R': {   /* seconds, fractions allowed: --stats 0.5 */
        char *end;
        double *every = c == 'S' ? &cfg->stats_every : &cfg->view_every;
        *every = strtod(arg, &end);
        if (*end || !(*every > 0))      /* !(x > 0) also refuses "nan" */
            return usage_error("%s %s: want a positive number of seconds", c == 'S' ? "--stats" : "--ring-view",
                               arg);
        break;
    }
    }
    return -1;
}

/* The switch (switch.c): --switch makes one of two ports (two sockets, or
 * a socket and --iface), which are otherwise cross-connected; --mac-age is
 * OVS's mac-aging-time (default 300 s; at most a day); --fdb-view prints
 * the MAC table every SECONDS, as SIGUSR1 does once. */
static int parse_switch_option(int c, char *arg, struct config *cfg)
{
    switch (c) {
    case 'W':
        cfg->switch_asked = true;
        break;
    case 'A':
        if (!number_in(arg, 1, 86400, &cfg->mac_age))
            return usage_error("--mac-age %s: want seconds from 1 to 86400", arg);
        break;
    case 'V': {
        char *end;
        cfg->fdb_every = strtod(arg, &end);
        if (*end || !(cfg->fdb_every > 0))
            return usage_error("--fdb-view %s: want a positive number of seconds", arg);
        break;
    }
    }
    return -1;
}

/* The largest MTU the port carries: an MTU is the frame without its 14-byte
 * Ethernet header.  An AF_XDP frame loses XDP_PACKET_HEADROOM (256 bytes)
 * to the kernel in copy mode (nic_afxdp.c, "Data path: RX"); the loopback
 * and the other guest (VM-to-VM) are bounded only by the 16-bit MTU field
 * (virtio 1.2 §5.1.4). */
static long port_mtu(const struct config *cfg)
{
    return cfg->nic.ifname ? (long)cfg->nic.frame_size - 256 - 14 : 65535;
}

/* A switch (switch.c) or not: three or more sockets, or two with an
 * uplink, or --switch with at least two ports (sockets and the uplink).
 * Two sockets alone stay the VM-to-VM cross-connect, and one socket with
 * --iface the plain AF_XDP port, unless --switch asks.  Returns -1 or 2. */
static int check_switch(struct config *cfg)
{
    int ports = cfg->nsockets + (cfg->nic.ifname != NULL);
    cfg->switch_on = cfg->switch_asked || cfg->nsockets >= 3 || (cfg->nsockets >= 2 && cfg->nic.ifname);
    if (cfg->switch_asked && (ports < 2 || cfg->loopback))
        return usage_error("--switch: a switch needs two ports or more (--socket, --iface), and no --loopback");
    if (!cfg->switch_on && cfg->fdb_every > 0)
        return usage_error("--fdb-view: only a switch has a MAC table (three --socket, or two and --iface, "
                           "or --switch)");
    return -1;
}

/* The checks that need the whole command line, after parse_options() has
 * made sure there is a socket and, with one, one port.  Returns -1 (go
 * on) or 2. */
static int check_more_options(struct config *cfg)
{
    /* Two sockets: each device is the other's port (VM-to-VM), or with
     * --iface a switch's port; more: a switch's ports.  No loopback then. */
    if (cfg->nsockets >= 2 && cfg->loopback)
        return usage_error("%s --socket: the devices are each other's port (VM-to-VM) or a switch's ports; "
                           "drop --loopback", cfg->nsockets == 2 ? "two" : "several");
    for (int a = 0; a < cfg->nsockets; a++)
        for (int b = a + 1; b < cfg->nsockets; b++)
            if (!strcmp(cfg->sockets[a], cfg->sockets[b]))
                return usage_error("--socket %s given twice: each device needs its own socket", cfg->sockets[a]);
    if (check_switch(cfg) >= 0)
        return 2;
    if (cfg->pmd_adaptive && cfg->pmd_sleep_us > 0)
        return usage_error("--pmd-sleep %ld with --pmd-mode adaptive: choose one (--pmd-sleep naps a polling "
                           "thread, adaptive sleeps until a kick)", cfg->pmd_sleep_us);
    if (cfg->queue_range && !cfg->nic.ifname)
        return usage_error("--queue is for --iface (the NIC's queues)");
    /* Queue pair k is served by NIC queue Q+k: as many NIC queues as pairs. */
    cfg->nic.nqueues = (uint32_t)cfg->queues;
    if (cfg->mtu > port_mtu(cfg))
        return usage_error("--mtu %ld: this port carries at most %ld (--frame-size %u)", cfg->mtu, port_mtu(cfg),
                           cfg->nic.frame_size);
    return -1;
}

/* === What set-up says: the MTU, VM-to-VM, the offloads, the NIC queues === */

/* Said at the start, before the sockets exist, so that a user reads what a
 * frontend will be offered before one connects.  The MTU line first: a
 * QEMU given a larger host_mtu refuses the device, and this line is where
 * its user finds the number to give.  Then which offloads, and who does
 * the work the NIC needs (offload.c).  With --loopback:
 *   vhost-xdp: MTU: a frontend may set up to 65535 (NET_SET_MTU), what the port carries
 *   vhost-xdp: offloads: checksum and TSO offered (CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6, ECN)
 */
static void log_offers(const struct config *cfg)
{
    vx_log("MTU: a frontend may set up to %u (NET_SET_MTU)%s", devs[0].mtu_max,
           cfg->mtu ? ", --mtu" : ", what the port carries");
    if (ndevs == 2 && !cfg->switch_on)
        vx_log("port: VM-to-VM, queue pair k of %s <-> queue pair k of %s", cfg->sockets[0], cfg->sockets[1]);
    if (cfg->switch_on)
        vx_log("port: an L2 learning switch of %d vhost-user port%s%s%s; MAC table of 4096 entries, --mac-age %ld s",
               ndevs, ndevs == 1 ? "" : "s", cfg->nic.ifname ? " and the uplink " : "",
               cfg->nic.ifname ? cfg->nic.ifname : "", cfg->mac_age);
    if (cfg->no_offloads)
        vx_log("offloads: none offered (--no-offloads): guests send MTU-sized segments, checksummed");
    else if (devs[0].no_offloads)
        vx_log("offloads: none offered: a switch's uplink takes whole, checksummed frames (switch.c, \"Offloads\")");
    else
        vx_log("offloads: checksum and TSO offered (CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6, ECN)%s",
               cfg->nic.ifname ? "; towards the NIC, segmentation in software in the poll thread, checksums "
                                 "as the port's \"TX checksums\" line says" : "");
}

/* --queue Q-R: the port line names the range and how the pairs map onto
 * it (the single-queue line is in open_nic()).  From README's multiqueue
 * run:
 *   vhost-xdp: port: AF_XDP on vxmh0 queues 0-1 (queue pair k <-> queue 0+k), native (drv), copy */
static void log_nic_queues(const struct config *cfg)
{
    vx_log("port: AF_XDP on %s queues %u-%u (queue pair k <-> queue %u+k), %s", cfg->nic.ifname, cfg->nic.queue,
           cfg->nic.queue + nnics - 1, cfg->nic.queue, nic_mode_name(nics[0]));
}

/* With two devices every line about one starts with its label, "device 0
 * (PATH): "; with one, the label is "" and the lines are as they always
 * were.  Made on first use, after vu_init() has kept the path; a PATH fits
 * in 108 bytes (sockaddr_un), so 160 hold any label. */
static const char *dev_label(int d)
{
    static char labels[VX_MAX_DEVS][160];
    if (ndevs >= 2 && !labels[d][0])
        snprintf(labels[d], sizeof labels[d], "device %d (%s): ", d, devs[d].opt.socket_path);
    return labels[d];
}

/* === --stats and the exit totals ========================================= */

/*
 * Every counter read here has one writer, a poll thread, and this thread
 * only reads it, with relaxed loads (vhost_xdp.h, "Threads, atomics and
 * counters"): --stats never slows a packet down.  A --stats round, from a
 * run with two queue pairs and --pcap (testpmd forwarding over
 * virtio_user):
 *
 *   vhost-xdp: stats: from guest 13.8 kpps 7.09 Mbit/s | to guest 13.8 kpps 7.09 Mbit/s | drops 0 (+0) | broken rings 0
 *   vhost-xdp: stats: queue pair 0: from guest 6.9 kpps | to guest 6.9 kpps | drops 0
 *   vhost-xdp: stats: queue pair 1: from guest 6.9 kpps | to guest 6.9 kpps | drops 0
 *   vhost-xdp: stats: pcap 29696 packets captured, 0 not captured (writer behind), 0 after --pcap-limit
 *
 * and its exit lines, once the frontend had quit and SIGINT came:
 *
 *   vhost-xdp: exit: from guest 14848 packets, to guest 14848 packets, 0 drops, 0 broken rings
 *   vhost-xdp: exit: queue pair 0: from guest 7456 packets, to guest 7456 packets, 0 drops
 *   vhost-xdp: exit: queue pair 1: from guest 7392 packets, to guest 7392 packets, 0 drops
 */

/* The counters of every ring, summed.  The names are the guest's point of
 * view, as in its own `ip -s link`: TX is what it sent. */
struct totals {
    uint64_t tx_packets, tx_bytes;      /* taken from the guest (its TX rings) */
    uint64_t rx_packets, rx_bytes;      /* given to the guest (its RX rings) */
    uint64_t drops;                     /* lost here: no RX buffer, too big, ring not ready */
    uint64_t broken;                    /* times a ring was found malformed and stopped */
    uint64_t calls_dropped;             /* interrupts the call eventfd refused (virtqueue.c, vq_call) */
    uint64_t tso, segments, csum_sw, csum_nic, partial, bad_hdr;   /* offload.c's, see vx_ring_stats */
    uint64_t log_marks;                 /* live migration: dirty-log bits we set (print_log_line) */
};

/* A counter a poll thread is writing, read whole. */
#define LOAD(counter) __atomic_load_n(&(counter), __ATOMIC_RELAXED)

/* Sum the per-ring counters of queue pair `pair`, or of every ring (-1).
 * Odd rings are the guest's TX (packets we took from it), even rings its RX
 * (packets we gave it): vring 2k / 2k+1 is pair k, receiveq k+1 and
 * transmitq k+1 in virtio 1.2 §5.1.2.  The poll threads keep writing while
 * we read; each counter is a relaxed load, so the sum is a snapshot that is
 * at most one burst stale. */
static struct totals sum_rings(const struct vx_dev *dev, int pair)
{
    struct totals t = { 0 };
    for (int i = pair < 0 ? 0 : 2 * pair; i < (pair < 0 ? VX_MAX_VRINGS : 2 * pair + 2); i++) {
        const struct vx_ring_stats *s = &dev->vrings[i].stats;
        *(i & 1 ? &t.tx_packets : &t.rx_packets) += LOAD(s->packets);
        *(i & 1 ? &t.tx_bytes : &t.rx_bytes) += LOAD(s->bytes);
        t.calls_dropped += LOAD(dev->vrings[i].calls_dropped);
        t.log_marks += LOAD(dev->vrings[i].log_marks);
#define ADD(f) t.f += LOAD(s->f)
        ADD(drops); ADD(broken); ADD(tso); ADD(segments); ADD(csum_sw); ADD(csum_nic); ADD(partial); ADD(bad_hdr);
#undef ADD
    }
    return t;
}

/* The counters of NIC queue port k, or of all of them summed (k = -1), read
 * field by field: a plain struct copy of memory the poll thread is writing
 * would be a data race (the compiler may tear or merge such reads). */
static struct nic_stats nic_snapshot(int k)
{
    struct nic_stats c = { 0 };
    for (int i = k < 0 ? 0 : k; i < (k < 0 ? nnics : k + 1); i++) {
        const struct nic_stats *s = nic_stats(nics[i]);
#define ADD(f) c.f += LOAD(s->f)
        ADD(rx_packets); ADD(rx_bytes); ADD(tx_packets); ADD(tx_bytes);
        ADD(rx_fill_empty); ADD(tx_ring_full); ADD(invalid_descs);
#undef ADD
    }
    return c;
}

/* 8300000 -> "8.30 M", 12000 -> "12.0 k", 3 -> "3 ": rates a reader takes in
 * at a glance.  16 bytes hold any rate below 10^15 per second. */
static const char *rate(char *buf, double v)
{
    if (v >= 1e6)
        snprintf(buf, 16, "%.2f M", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, 16, "%.1f k", v / 1e3);
    else
        snprintf(buf, 16, "%.0f ", v);
    return buf;
}

/* One line per device: rates since the last line (bytes * 8: bits per
 * second, as link speeds are quoted), and the drop and broken-ring totals
 * since the start.  A broken ring is named ("broken rings 1 now: 3"): each
 * stops alone, the others go on.  "calls dropped N |" appears once the
 * guest's call eventfd has refused an interrupt. */
static void print_stats(const struct vx_dev *dev, const char *label, const struct totals *now,
                        const struct totals *before, double secs)
{
    /* " now: " and up to three characters per ring (",15") fit in 8 a ring. */
    char a[16], b[16], c[16], d[16], broken[8 * VX_MAX_VRINGS] = "", calls[48] = "";
    for (int i = 0, n = 0; i < VX_MAX_VRINGS; i++)
        if (LOAD(dev->vrings[i].broken))
            n += snprintf(broken + n, sizeof broken - n, "%s%d", n ? "," : " now: ", i);
    if (now->calls_dropped)
        snprintf(calls, sizeof calls, "calls dropped %llu | ", (unsigned long long)now->calls_dropped);
    fprintf(stderr,
            "vhost-xdp: stats: %sfrom guest %spps %sbit/s | to guest %spps %sbit/s | "
            "drops %llu (+%llu) | %sbroken rings %llu%s\n", label,
            rate(a, (now->tx_packets - before->tx_packets) / secs), rate(b, (now->tx_bytes - before->tx_bytes) * 8 / secs),
            rate(c, (now->rx_packets - before->rx_packets) / secs), rate(d, (now->rx_bytes - before->rx_bytes) * 8 / secs),
            (unsigned long long)now->drops, (unsigned long long)(now->drops - before->drops), calls,
            (unsigned long long)now->broken, broken);
}

/* With more than one queue pair: one short line per pair after the
 * device's line, so that a student sees which queues carry the traffic
 * (the frontend chooses which TX queue each flow takes; virtio 1.2
 * §5.1.6.5.5, "Automatic receive steering in multiqueue mode"). */
static void print_pair_stats(const char *label, int pair, const struct totals *now, const struct totals *before,
                             double secs)
{
    char a[16], b[16];
    fprintf(stderr, "vhost-xdp: stats: %squeue pair %d: from guest %spps | to guest %spps | drops %llu\n", label,
            pair, rate(a, (now->tx_packets - before->tx_packets) / secs),
            rate(b, (now->rx_packets - before->rx_packets) / secs), (unsigned long long)now->drops);
}

/* What offload.c did, totals since the start, one line, only once it has
 * done something (a guest without offloads never makes it print):
 *   TSO packets  64 KiB TCP packets the guests sent; "cut into N segments"
 *                when some were cut (for the NIC, or for a guest that did
 *                not negotiate GUEST_TSO), the rest crossed whole;
 *   checksums    completed in software by vhost-xdp (NEEDS_CSUM from a
 *                guest, partial checksums from the NIC);
 *   partial      frames from the NIC with a partial checksum (a veth peer's
 *                TX checksum offload), given on as NEEDS_CSUM or completed;
 *   bad headers  packets dropped for a header we refuse (and frames from
 *                the NIC we cannot fix).
 *   left to the NIC's kernel  NEEDS_CSUM packets and TSO segments whose
 *                checksum the AF_XDP port's kernel completes (TX metadata,
 *                nic_afxdp.c's "TX checksums by the kernel").
 * `what` is "stats" or "exit": the same line serves both. */
static void print_offload_line(const char *what, const char *label, const struct totals *t)
{
    if (!(t->tso | t->csum_sw | t->csum_nic | t->partial | t->bad_hdr))
        return;
    fprintf(stderr, "vhost-xdp: %s: %soffloads: TSO packets %llu (cut into %llu segments), checksums completed "
            "%llu, partial checksums from the NIC %llu, bad headers %llu, checksums left to the NIC's kernel %llu\n",
            what, label, (unsigned long long)t->tso, (unsigned long long)t->segments, (unsigned long long)t->csum_sw,
            (unsigned long long)t->partial, (unsigned long long)t->bad_hdr, (unsigned long long)t->csum_nic);
}

/* Live migration (second reading): the pages of guest memory we marked in
 * QEMU's dirty log (vhost_user.c, "Live migration"), since the start; one
 * line, only once a migration has made us mark something.  A mark is a bit
 * we turned from 0 to 1: QEMU clears the bits it has copied at each round,
 * so a page we write in every round counts once per round.  It is the
 * number a student compares with QEMU's "dirty sync count" and "transferred
 * ram" (`info migrate`): how much of the copying our writes caused.
 *   vhost-xdp: exit: device 0 (a.sock): dirty log: 1834 pages marked */
static void print_log_line(const char *what, const char *label, const struct totals *t)
{
    if (t->log_marks)
        fprintf(stderr, "vhost-xdp: %s: %sdirty log: %llu pages marked\n", what, label,
                (unsigned long long)t->log_marks);
}

/* The NIC's line: rates since the last line; the three trouble counters
 * are totals since the start, where any non-zero value is worth a look
 * (nic_afxdp.c says when each one counts).  In short: fill ring empty, the
 * kernel had no frame left to receive into (we are slower than the wire);
 * tx ring full, a packet for the NIC found no free TX frame or no room in
 * the TX ring; invalid descriptors, an address or length outside our UMEM
 * frames. */
static void print_nic_stats(const char *label, const struct nic_stats *now, const struct nic_stats *before,
                            double secs)
{
    char a[16], b[16], c[16], d[16];
    fprintf(stderr, "vhost-xdp: stats: nic %srx %spps %sbit/s | nic tx %spps %sbit/s | "
            "fill ring empty %llu | tx ring full %llu | invalid descriptors %llu\n", label,
            rate(a, (now->rx_packets - before->rx_packets) / secs), rate(b, (now->rx_bytes - before->rx_bytes) * 8 / secs),
            rate(c, (now->tx_packets - before->tx_packets) / secs), rate(d, (now->tx_bytes - before->tx_bytes) * 8 / secs),
            (unsigned long long)now->rx_fill_empty, (unsigned long long)now->tx_ring_full,
            (unsigned long long)now->invalid_descs);
}

/* --pcap: totals since the start (the writer's and the poll threads'
 * counters).  Packets forwarded but not in the file are one of two: "not
 * captured", a poll thread found its capture ring full (the disk is slower
 * than the link); "after --pcap-limit", the capture had already stopped. */
static void print_pcap_stats(void)
{
    uint64_t captured, not_captured, after_limit;
    pcap_counts(&captured, &not_captured, &after_limit);
    fprintf(stderr, "vhost-xdp: stats: pcap %llu packets captured, %llu not captured (writer behind), "
            "%llu after --pcap-limit\n", (unsigned long long)captured, (unsigned long long)not_captured,
            (unsigned long long)after_limit);
}

/* What the last --stats lines were computed from, so that the next ones can
 * print rates over the time between them.  Index 0: the whole device (all
 * NIC queues); k + 1: queue pair k (NIC queue Q+k).  The counters live as
 * long as the process (a reconnect keeps them), so the first lines give the
 * rates from the first tick on. */
struct stats_state {
    double at;                      /* when the last lines were printed; 0 = not yet started */
    struct totals rings[VX_MAX_DEVS][VX_MAX_QUEUE_PAIRS + 1];     /* per device */
    struct nic_stats nic[VX_MAX_QUEUE_PAIRS + 1];
};
static struct stats_state stats;

/* Remember the counters the next --stats lines are rates from. */
static void stats_snapshot(void)
{
    for (int d = 0; d < ndevs; d++)
        for (int k = -1; k < VX_MAX_QUEUE_PAIRS; k++)
            stats.rings[d][k + 1] = sum_rings(&devs[d], k);
    for (int k = -1; k < nnics; k++)
        stats.nic[k + 1] = nic_snapshot(k);
}

/* One --stats round: for each device its line, its offload line and, if it
 * offers several queue pairs, a line per pair; the NIC's line (--iface),
 * then one per NIC queue if there are several; the capture's (--pcap).
 * The rates are over the time that really passed since the last round, not
 * over --stats SECONDS: on a loaded machine poll() returns late, and the
 * nominal interval would overstate them. */
static void print_all_stats(double now)
{
    double secs = now - stats.at;
    struct stats_state before = stats;
    stats_snapshot();
    for (int d = 0; d < ndevs; d++) {
        print_stats(&devs[d], dev_label(d), &stats.rings[d][0], &before.rings[d][0], secs);
        print_offload_line("stats", dev_label(d), &stats.rings[d][0]);
        print_log_line("stats", dev_label(d), &stats.rings[d][0]);
        for (int k = 0; devs[d].queue_pairs > 1 && k < (int)devs[d].queue_pairs; k++)
            print_pair_stats(dev_label(d), k, &stats.rings[d][k + 1], &before.rings[d][k + 1], secs);
    }
    for (int k = -1; nnics && k < nnics; k++) {
        char label[32] = "";
        if (k >= 0)
            snprintf(label, sizeof label, "queue %u: ", nic_queue(nics[k]));
        if (k < 0 || nnics > 1)
            print_nic_stats(label, &stats.nic[k + 1], &before.nic[k + 1], secs);
    }
    if (pcap_enabled())
        print_pcap_stats();
    sw_print_stats("stats");        /* a switch's ports: hits, misses, floods, ... (switch.c) */
    pmd_print_idle("stats", now);   /* each poll thread's cycles, and sleeps in adaptive mode (pmd_loop.c) */
    stats.at = now;
}

/* The control loop's one call for --stats (every SECONDS, 0 = off): the
 * first call takes the counters the first rates are from, every call
 * prints a round when one is due and lowers *wake to the next one. */
static void stats_tick(double every, double now, double *wake)
{
    if (every <= 0)
        return;
    if (stats.at == 0) {
        stats_snapshot();
        stats.at = now;
    }
    if (now >= stats.at + every)
        print_all_stats(now);
    if (stats.at + every < *wake)
        *wake = stats.at + every;
}

/* The exit lines, after shutdown has stopped every thread that counts, so
 * the totals are exact.  With --iface the NIC's comes first (from README's
 * Lab 4 run):
 *   vhost-xdp: exit: nic rx 4 packets, nic tx 6 packets, fill ring empty 0, tx ring full 0, invalid descriptors 0
 *   vhost-xdp: exit: from guest 6 packets, to guest 4 packets, 0 drops, 0 broken rings
 * With two devices each line names its device ("exit: device 0 (PATH):
 * from guest ...").  The NIC's first (all queues, then each if there
 * are several); then each device's, with several queue pairs a line per
 * pair too, which tests/test_dpdk.sh and test_qemu_mq.sh read to see that
 * every pair carried its share (the frontend chose the TX queues). */
static void print_totals(void)
{
    for (int k = -1; nnics && k < nnics; k++) {
        struct nic_stats ns = nic_snapshot(k);
        if (k < 0)
            vx_log("exit: nic rx %llu packets, nic tx %llu packets, fill ring empty %llu, tx ring full %llu, "
                   "invalid descriptors %llu", (unsigned long long)ns.rx_packets, (unsigned long long)ns.tx_packets,
                   (unsigned long long)ns.rx_fill_empty, (unsigned long long)ns.tx_ring_full,
                   (unsigned long long)ns.invalid_descs);
        else if (nnics > 1)
            vx_log("exit: nic queue %u: rx %llu packets, tx %llu packets", nic_queue(nics[k]),
                   (unsigned long long)ns.rx_packets, (unsigned long long)ns.tx_packets);
    }
    for (int d = 0; d < ndevs; d++) {
        for (int k = -1; k < (devs[d].queue_pairs > 1 ? (int)devs[d].queue_pairs : 0); k++) {
            struct totals fin = sum_rings(&devs[d], k);
            char calls[48] = "";    /* ", N calls dropped" once the call eventfds refused some */
            if (k < 0) {
                if (fin.calls_dropped)
                    snprintf(calls, sizeof calls, ", %llu calls dropped", (unsigned long long)fin.calls_dropped);
                vx_log("exit: %sfrom guest %llu packets, to guest %llu packets, %llu drops, %llu broken rings%s",
                       dev_label(d), (unsigned long long)fin.tx_packets, (unsigned long long)fin.rx_packets,
                       (unsigned long long)fin.drops, (unsigned long long)fin.broken, calls);
                print_offload_line("exit", dev_label(d), &fin);
                print_log_line("exit", dev_label(d), &fin);
            } else
                vx_log("exit: %squeue pair %d: from guest %llu packets, to guest %llu packets, %llu drops",
                       dev_label(d), k, (unsigned long long)fin.tx_packets, (unsigned long long)fin.rx_packets,
                       (unsigned long long)fin.drops);
        }
    }
    sw_print_stats("exit");
    pmd_print_idle("exit", vx_now());
}

/* === The ring view (--ring-view, SIGUSR1) ================================ */

/*
 * A picture of every started ring: its indices, its flags and which slots
 * the guest has offered, drawn by virtqueue.c (vq_ring_view: virtio 1.2
 * §2.7 for a split ring, §2.8 for a packed one) with a legend under each
 * device.  From a DPDK testpmd guest forwarding (README, "One packet"):
 *
 *   ring 1 (TX of pair 0): size 256, running
 *     avail->idx 17056  avail->flags 0x0001 NO_INTERRUPT
 *     used->idx  16928  used->flags  0x0001 NO_NOTIFY
 *
 * The view reads guest memory, which the frontend may have cut short
 * (fault.c): each ring's view runs with a guard.  After a fault the device
 * is handed to vhost_user.c as if a poll thread had found it (mem_fault):
 * its connection is reset.
 */
struct view_args {
    const struct vx_vring *vr;
    FILE *out;
};

static int view_one(void *arg)
{
    struct view_args *a = arg;
    vq_ring_view(a->vr, a->out);
    return 0;
}

static void view_guarded(struct vx_dev *dev, int ring, FILE *out)
{
    struct view_args a = { &dev->vrings[ring], out };
    void *addr = NULL;
    uintptr_t none = 0;
    if (vx_guarded(view_one, &a, &addr) == VX_FAULTED && vx_fault_log(dev->opt.socket_path, "ring view", &dev->mem, addr))
        __atomic_compare_exchange_n(&dev->mem_fault, &none, (uintptr_t)addr, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* Every attached ring of every device, formatted whole in memory and
 * written once, because the poll threads may log at the same time and a
 * picture cut by their lines would be unreadable.  After a fault in one
 * device's memory, its other rings are not read. */
static void print_ring_views(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out)
        return;
    for (int d = 0; d < ndevs; d++) {
        int n = 0;
        for (int i = 0; i < VX_MAX_VRINGS; i++)
            n += devs[d].vrings[i].attached;
        fprintf(out, "vhost-xdp: ring view: %s%d ring%s started\n", dev_label(d), n, n == 1 ? "" : "s");
        for (int i = 0; i < VX_MAX_VRINGS && !__atomic_load_n(&devs[d].mem_fault, __ATOMIC_SEQ_CST); i++)
            if (devs[d].vrings[i].attached)
                view_guarded(&devs[d], i, out);
        if (n)
            vq_ring_view_legend(out);
    }
    fclose(out);
    fwrite(text, 1, len, stderr);
    free(text);
}

/* The control loop's one call for the ring view: printed when SIGUSR1
 * asked for it, and every --ring-view SECONDS (0 = off) from the first
 * call on, lowering *wake to the next one.  A SIGUSR1 does not move the
 * timer. */
static void ring_view_tick(double every, bool asked, double now, double *wake)
{
    static double at;               /* the last timed view; 0 = not yet started */
    if (every > 0 && at == 0)
        at = now;
    bool due = every > 0 && now >= at + every;
    if (asked || due)
        print_ring_views();
    if (due)
        at = now;
    if (every > 0 && at + every < *wake)
        *wake = at + every;
}

/* === The switch: set-up, ageing, the MAC table view ======================= */

/* Before the poll threads: the ports (the devices, then the uplink) and a
 * lane per queue pair (switch.c), and the log's picture of who polls which
 * lane, as OVS logs its rx queue to PMD assignment:
 *   vhost-xdp: switch: pmd 0 polls lane 0: port 0 (/tmp/a.sock) queue pair 0, port 1 (/tmp/b.sock) ... */
static int switch_set_up(const struct config *cfg)
{
    if (sw_start(devs, ndevs, cfg->nic.ifname, nics, nnics, (uint32_t)cfg->mac_age) < 0)
        return -1;
    sw_log_lanes(cfg->ncpus > 0 ? cfg->ncpus : 1);
    return 0;
}

/* The control loop's one call for the switch: the clock its entries are
 * stamped with and the ageing sweep (switch.c, sw_tick), then the MAC
 * table, when SIGUSR1 asked or every --fdb-view SECONDS, written whole
 * (the poll threads may log meanwhile). */
static void switch_tick(const struct config *cfg, bool asked, double now, double *wake)
{
    static double at;               /* the last timed view; 0 = not yet started */
    if (!cfg->switch_on)
        return;
    sw_tick(now);
    if (cfg->fdb_every > 0 && at == 0)
        at = now;
    bool due = cfg->fdb_every > 0 && now >= at + cfg->fdb_every;
    if (asked || due) {
        char *text = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&text, &len);
        if (out) {
            fputs("vhost-xdp: fdb:\n", out);
            sw_print_fdb(out);
            fclose(out);
            fwrite(text, 1, len, stderr);
            free(text);
        }
    }
    if (due)
        at = now;
    if (cfg->fdb_every > 0 && at + cfg->fdb_every < *wake)
        *wake = at + cfg->fdb_every;
}

/* === --trace=rings: the guest's kicks ==================================== */

/*
 * A kick eventfd counts notifications (virtio 1.2 §2.9, "Driver
 * Notifications": a guest's write to its queue notify register becomes a
 * write of 1 through KVM's or QEMU's ioeventfd; DPDK virtio_user writes
 * the eventfd itself; vhost-user.rst, VHOST_USER_SET_VRING_KICK); read()
 * returns the count since the last read and resets it.  We poll the rings,
 * so nothing else of ours reads these fds: with --trace=rings the control
 * loop polls them too, only to log the kicks.
 *
 * The frontend decides how often the fd is readable: a guest may kick
 * millions of times a second, and an fd that is always readable would have
 * the control loop spin and the log grow by megabytes a second.  So per
 * ring and second: at most KICK_LINES lines, then one line counting the
 * kicks not shown; at most KICK_READS reads, after which the fd is not
 * polled for the rest of the second (its counter keeps the kicks: the next
 * read returns them all).  An fd at its end, in error or hung up (no eventfd
 * ever is; vhost_user.c refuses other kinds where it can tell) is dropped
 * from the poll set with one line.  Checking that the fd is still the ring's
 * keeps a read from a recycled fd number from eating another file's data.
 */
/*
 * So a guest's kicks read, for each ring, as
 *   vhost-xdp: trace: ring 0: kick (count 1)
 * and a flood stays short: in one run of tests/test_hostile.c (D5), a
 * thread kicking one ring as fast as it could for 2.5 s left 20 kick lines
 * in the log, and its fd was read at most 100 times a second.  A guest
 * that obeys the suppression we ask for (virtqueue.c, vq_attach) hardly
 * kicks at all: Lab 1 counts its kicks from these lines.
 */
#define KICK_LINES 5
#define KICK_READS 100

struct kick_watch {
    int fd;                         /* the kick fd these counts are for; a new fd starts afresh */
    int64_t second;                 /* CLOCK_MONOTONIC second of the counts */
    uint32_t reads, lines;          /* this second */
    uint64_t hidden;                /* kicks read this second and not shown */
    bool gone;                      /* end of file, error or hang-up: no longer polled */
    uint64_t counted;               /* --pmd-mode adaptive: the ring's `kicks` at the last line */
};
static struct kick_watch kick_watch[VX_MAX_DEVS][VX_MAX_VRINGS];

/* Which device and ring the kick fd in poll_set slot k belongs to (slots
 * 1 + ndevs and up; trace_kicks_poll() fills them in). */
static int kick_dev[POLL_MAX], kick_ring[POLL_MAX];

/* Should ring `ring` of device d have its kick fd polled now?  Also starts
 * a new second's counts, saying first what the last one did not show. */
static bool kick_watched(int d, int ring)
{
    struct kick_watch *w = &kick_watch[d][ring];
    int fd = devs[d].vrings[ring].kick_fd;
    if (fd < 0) {           /* none now: whatever fd comes next starts afresh, even with this number */
        w->fd = -1;
        return false;
    }
    if (w->fd != fd)
        *w = (struct kick_watch){ .fd = fd };
    int64_t second = (int64_t)vx_now();
    if (second != w->second) {
        if (w->hidden)
            vx_log("trace: %sring %d: %llu more kicks in %u reads in the last second, not shown", dev_label(d),
                   ring, (unsigned long long)w->hidden, w->reads);
        w->second = second;
        w->reads = w->lines = 0;
        w->hidden = 0;
    }
    return !w->gone && w->reads < KICK_READS;
}

/* Add the kick fds to watch to the poll set, after the devices' sockets.
 * An fd read KICK_READS times this second is left out until the next
 * second: its eventfd keeps counting meanwhile, nothing is lost. */
static void trace_kicks_counted(bool now_too);

static void trace_kicks_poll(struct poll_set *ps)
{
    if (pmd_kicks_owned()) {        /* --pmd-mode adaptive: the poll threads read them */
        trace_kicks_counted(false);
        return;
    }
    for (int d = 0; d < ndevs; d++) {
        for (int i = 0; i < VX_MAX_VRINGS; i++) {
            if (kick_watched(d, i)) {
                kick_dev[ps->n] = d;
                kick_ring[ps->n] = i;
                ps->fds[ps->n++] = (struct pollfd){ devs[d].vrings[i].kick_fd, POLLIN, 0 };
            }
        }
    }
}

/* One kick fd poll() found ready: read its count and log it, or stop
 * watching an fd that has ended. */
static void read_kick(int d, int ring, int fd, short revents)
{
    struct kick_watch *w = &kick_watch[d][ring];
    uint64_t count;
    ssize_t r = -1;
    if (devs[d].vrings[ring].kick_fd != fd || w->fd != fd)
        return;
    errno = 0;
    if (revents & POLLIN)
        r = read(fd, &count, sizeof count);
    if (r == sizeof count) {
        w->reads++;
        if (w->lines++ < KICK_LINES)
            vx_log("trace: %sring %d: kick (count %llu)", dev_label(d), ring, (unsigned long long)count);
        else
            w->hidden += count;
    } else if (!(r < 0 && (errno == EAGAIN || errno == EINTR))) {   /* EAGAIN: the frontend read it first */
        w->gone = true;
        vx_log("trace: %sring %d: kick fd %s: no longer watched", dev_label(d), ring,
               r == 0 ? "at end of file" : r > 0 ? "gave a short read" : errno ? strerror(errno) : "hung up");
    }
}

/* --pmd-mode adaptive: a sleeping poll thread waits on the kick fds and
 * reads them itself (pmd_loop.c, "When there is nothing to do"); reading
 * them here too would steal its wake-ups.  So the kicks are counted there
 * (vr->kicks) and said here, once a second per ring that had any:
 *   vhost-xdp: trace: ring 1: 12 kicks in the last second (read by the poll thread)
 * and also, with now_too, before a message is handled: a disconnect or a
 * ring stopped by it clears the ring's count, and the kicks read since the
 * last line would never be said. */
static void trace_kicks_counted(bool now_too)
{
    static int64_t second;
    int64_t now = (int64_t)vx_now();
    if (now == second && !now_too)
        return;
    second = now;
    for (int d = 0; d < ndevs; d++) {
        for (int i = 0; i < VX_MAX_VRINGS; i++) {
            struct kick_watch *w = &kick_watch[d][i];
            uint64_t kicks = __atomic_load_n(&devs[d].vrings[i].kicks, __ATOMIC_RELAXED);
            if (kicks > w->counted)
                vx_log("trace: %sring %d: %llu kicks in the last second (read by the poll thread)", dev_label(d), i,
                       (unsigned long long)(kicks - w->counted));
            w->counted = kicks;     /* lower after a reconnect: counting starts again */
        }
    }
}

/* After poll(): every kick fd with something to say.  Without
 * --trace=rings the poll set has none, and these loops do not run. */
static void trace_kicks_read(const struct poll_set *ps)
{
    for (int d = 0; d < ndevs && vx_trace_rings && pmd_kicks_owned(); d++)
        if (ps->fds[1 + d].revents) {   /* a message comes: what it may clear is said first */
            trace_kicks_counted(true);
            break;
        }
    for (int k = 1 + ndevs; k < ps->n; k++)
        if (ps->fds[k].revents)
            read_kick(kick_dev[k], kick_ring[k], ps->fds[k].fd, ps->fds[k].revents);
}
