/*
 * nic_afxdp.c - the NIC side of the data path: an AF_XDP socket on each of
 * one or more queues of a network interface, set up with nothing but
 * syscalls (no libbpf, no libxdp, no compiler for the BPF program).
 *
 * Where it sits: pmd_loop.c moves packets between a guest's virtqueues
 * (virtqueue.c) and this port.  A packet from the wire is written by the
 * kernel straight into a frame of our UMEM (a buffer we registered with the
 * socket); the poll thread copies it once, from that frame into guest memory.
 * A packet from the guest is copied once, from guest memory into a free UMEM
 * frame, and the kernel sends it from there.  In the articles' DPDK picture
 * this file is the poll-mode driver: the poll thread sees no interrupt, no
 * sk_buff and makes no syscall per packet.
 *
 * The pieces (Documentation/networking/af_xdp.rst, include/uapi/linux/if_xdp.h):
 *
 *   UMEM            one page-aligned buffer of frame_count equal frames; a
 *                   frame is named by its "address" = offset in the UMEM
 *   fill ring       us -> kernel: frames the kernel may receive into
 *   RX ring         kernel -> us: received packets (address, length)
 *   TX ring         us -> kernel: packets to send (address, length)
 *   completion ring kernel -> us: frames whose packets have been sent
 *   XDP program     runs for every packet the interface receives and
 *                   redirects it to our socket through an XSKMAP
 *
 * Each ring is a single-producer single-consumer ring of 2^k entries with a
 * free-running 32-bit producer index and consumer index, shared with the
 * kernel by mmap.  One side only ever writes the producer, the other only
 * the consumer, so no lock is needed: only the ordering described at "Ring
 * arithmetic" below.
 *
 * Multiqueue (--queue Q-R): one program and one XSKMAP for the interface,
 * and one socket with its own UMEM and four rings per queue, so that each
 * queue pair's poll thread owns its port alone (SPSC rings, no lock).  The
 * program sends each packet to the socket of the queue it arrived on; the
 * NIC's RSS (or, on a veth, the peer's choice of TX queue) spreads flows.
 * The first queue's port is the lab sheet below; the others repeat its
 * steps 4 to 6 (second reading, "More queues").
 *
 * Read in this order.  FIRST READING, a lab sheet: the port (the data
 * structures), the XDP program, then the set-up steps one function each in
 * the order the kernel needs them (1 the interface, 2 the XSKMAP and the
 * program, 3 the program attached through a BPF link, 4 the socket and its
 * UMEM, 5 the four rings and their arithmetic, 6 the RX frames, bind and
 * the XSKMAP entry), nic_open() which runs them, the data path (RX, then
 * TX) and nic_close().  Only nic_rx_* and nic_tx_* run on the poll thread;
 * they never block and make a syscall only when the kernel asks for one
 * (need_wakeup).
 *
 * SECOND READING, after the "Second reading" marker: the netlink messages
 * that read the interface's state and repair a stale XDP program an earlier
 * run left, what kernels older than 5.9 need, the queues after the first,
 * the long error diagnostics, the counters main.c reads, TX checksums by
 * the kernel, and what a poll thread that sleeps (--pmd-mode adaptive)
 * needs from the port.  The first reading calls each of them from one
 * place, and names it there.
 */
#include "vhost_xdp.h"

#include <dirent.h>
#include <errno.h>
#include <net/if.h>             /* if_nametoindex, IFF_UP */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/bpf.h>          /* bpf(2) commands, struct bpf_insn, XDP_PASS */
#include <linux/if_link.h>      /* IFLA_XDP_*, XDP_FLAGS_* */
#include <linux/if_xdp.h>       /* the AF_XDP socket API */
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/virtio_net.h>     /* VIRTIO_NET_HDR_F_NEEDS_CSUM */

/* Names the kernel keeps with the program and the map, so that `ip link`,
 * `bpftool prog` and `bpftool map` show whose they are, and so that a
 * program left by an earlier run is recognised (replace_stale_programs).
 * At most 15 characters: BPF_OBJ_NAME_LEN is 16 with the NUL. */
#define NIC_PROG_NAME "vx_xsk_redirect"
#define NIC_MAP_NAME  "vx_xsks"

/* === The port ============================================================ */

/* One of the four rings as mapped into our address space. */
struct xsk_ring {
    uint32_t *producer;         /* next entry the producer will fill */
    uint32_t *consumer;         /* next entry the consumer will read */
    uint32_t *flags;            /* XDP_RING_NEED_WAKEUP, written by the kernel */
    void     *entries;          /* u64 addresses (fill, completion) or struct xdp_desc (RX, TX) */
    uint32_t  size, mask;       /* 2^k entries: slot = index & mask */
    /* Our private copies (libbpf's names).  On a ring we produce into (fill,
     * TX) cached_prod is the truth and cached_cons our last look at the
     * kernel's consumer; on a ring we consume (RX, completion) the reverse.
     * Looking at the kernel's index only when the cached one says "no room"
     * or "nothing there" keeps its cache line from bouncing. */
    uint32_t  cached_prod, cached_cons;
    void     *map;              /* what mmap returned, for munmap */
    size_t    map_len;
};

struct nic_port {
    /* Set up by nic_open(), read-only afterwards. */
    char      ifname[IF_NAMESIZE];
    unsigned  ifindex;
    uint32_t  queue;
    uint32_t  xdp_flags;        /* XDP_FLAGS_DRV_MODE (native) or XDP_FLAGS_SKB_MODE (generic) */
    bool      zerocopy;         /* as the kernel reports it after bind (XDP_OPTIONS) */
    char      mode_name[48];
    /* The interface's program and map: held by the first queue's port
     * only (-1 in the others, which borrow map_fd to join it). */
    int       map_fd;           /* the XSKMAP: rx queue index -> AF_XDP socket */
    int       prog_fd;          /* the XDP program */
    int       link_fd;          /* the BPF link that holds the program on the interface */
    bool      netlink_attached; /* fallback for kernels without XDP links: detach by hand */
    int       xsk_fd;           /* the AF_XDP socket */

    uint8_t  *umem;             /* frame_count * frame_size bytes, page aligned */
    uint64_t  umem_size;
    uint32_t  frame_size, frame_count;

    struct xsk_ring fill, comp, rx, tx;

    /* The TX frame allocator: a stack of free frame addresses.  The first
     * half of the UMEM is for RX and lives in the fill ring, the RX ring or
     * the caller's hands; the second half is for TX and lives here, in the
     * TX ring or in the completion ring.  Neither half ever borrows from the
     * other, so a flood in one direction cannot starve the other. */
    uint64_t *tx_free;
    uint32_t  tx_nfree, tx_frames;
    /* 0, or the room for AF_XDP's TX metadata before each TX packet when
     * the kernel completes checksums for us (tx_csum): second reading,
     * "TX checksums by the kernel". */
    uint32_t  tx_headroom;
    bool      tx_csum;
    bool      kick_error_logged;

    struct nic_stats stats;     /* written by the poll thread only */
};

/* bpf(2) has no glibc wrapper: call it by number.  Every command takes the
 * same union, and the size tells the kernel which version of it we know.
 * Each caller memsets the whole union first (`= { 0 }` need only zero its
 * first member): the kernel refuses with EINVAL a command whose bytes past
 * the fields it uses are not zero (CHECK_ATTR in kernel/bpf/syscall.c). */
static int sys_bpf(enum bpf_cmd cmd, union bpf_attr *attr)
{
    return (int)syscall(__NR_bpf, cmd, attr, sizeof *attr);
}

/* bpf_attr and xdp_umem_reg carry pointers as u64, so that one layout
 * serves 32-bit and 64-bit processes alike. */
static uint64_t ptr_to_u64(const void *ptr)
{
    return (uint64_t)(uintptr_t)ptr;
}

/* The second-reading helpers the steps call, one call site each, all
 * defined after the "Second reading" marker under the banner named here. */
struct link_info;
static int  link_query(unsigned ifindex, struct link_info *li);                 /* Netlink */
static int  replace_stale_programs(struct nic_port *p, const struct link_info *li);  /* Stale programs */
static int  attach_through_netlink(struct nic_port *p, uint32_t mode_flag);     /* Older kernels */
static void detach_through_netlink(const struct nic_port *p);                   /* Older kernels */
static void raise_memlock_limit(void);                                          /* Older kernels */
static int  open_more_queues(struct nic_port **ports, const struct nic_options *opt, uint32_t n);  /* More queues */
static const char *perm_hint(int err);                                          /* When a step fails */
static const char *native_xdp_hint(int err);
static int  check_queue_range(const struct nic_port *p, uint32_t last);
static void prog_load_failed(const struct nic_port *p, union bpf_attr *a);
static void umem_reg_failed(const struct nic_port *p, int err);
static int  bind_retry(const struct nic_port *p, const struct sockaddr_xdp *sxdp, bool zerocopy);
static void log_kernel_drops(const struct nic_port *p);                        /* Instruments */
static int  umem_reg_tx_metadata(struct nic_port *p, struct xdp_umem_reg *reg);  /* TX checksums */
static void tx_csum_decide(struct nic_port *p);
static uint32_t tx_metadata_csum(const struct vx_pkt *pkt);

/* === The XDP program ======================================================
 *
 * It runs in the kernel for every packet the interface receives, before an
 * sk_buff exists (native mode, in the driver) or just after (generic mode),
 * and decides the packet's fate.  Ours is this C function, hand-assembled so
 * that no compiler and no ELF loader are needed:
 *
 *     int xsk_redirect(struct xdp_md *ctx)
 *     {
 *         return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
 *     }
 *
 * Calling convention (Documentation/bpf/standardization/instruction-set.rst):
 * r1 holds the context on entry, a helper takes its arguments in r1..r5 and
 * returns in r0, and r0 is the program's verdict.  bpf_redirect_map() looks
 * the queue up in the XSKMAP: a socket there gets the packet (XDP_REDIRECT);
 * if there is none, the low bits of the third argument are the verdict
 * (Linux >= 5.3): XDP_PASS gives the packet to the kernel's stack as if no
 * program were attached, so other queues' traffic keeps working.
 */
static const struct bpf_insn xsk_redirect_prog[] = {
    /* r2 = ctx->rx_queue_index (32-bit load; the field offset goes in `off`,
     * imm must be 0 or the verifier complains of "reserved fields") */
    { .code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = BPF_REG_2, .src_reg = BPF_REG_1,
      .off = offsetof(struct xdp_md, rx_queue_index) },
    /* r1 = &xsks: a two-slot 64-bit immediate load; src_reg BPF_PSEUDO_MAP_FD
     * tells the verifier that imm is a map fd, to be replaced by the map's
     * address.  The fd is patched in at load time (XSK_PROG_MAP_INSN). */
    { .code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1, .src_reg = BPF_PSEUDO_MAP_FD },
    { 0 },                      /* second slot: upper 32 bits of the immediate */
    /* r3 = XDP_PASS, the verdict when no socket is bound to this queue */
    { .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_3, .imm = XDP_PASS },
    /* r0 = bpf_redirect_map(r1, r2, r3) */
    { .code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_redirect_map },
    /* return r0 */
    { .code = BPF_JMP | BPF_EXIT },
};
#define XSK_PROG_MAP_INSN 1
#define XSK_PROG_LEN (sizeof xsk_redirect_prog / sizeof xsk_redirect_prog[0])

/* === Step 1: the interface: exists, up, which XDP program it has =========
 *
 * One RTM_GETLINK netlink message answers all three: the message `ip link
 * show` sends.  link_query() sends it and reads the answer into this
 * (second reading, "Netlink": a message format of its own, not AF_XDP).
 */

struct link_info {
    unsigned flags;             /* ifi_flags: IFF_UP, ... */
    uint32_t drv_prog_id, skb_prog_id, hw_prog_id;  /* XDP program in each mode, 0 = none */
};

/* Each check here turns what would otherwise be a puzzling failure later
 * (EINVAL from bind, or a socket that never receives) into one line that
 * says what to do.  The name goes into a sysfs path, hence no '/'. */
static int check_interface(struct nic_port *p, const struct nic_options *opt, uint32_t last,
                           struct link_info *li)
{
    if (!opt->ifname || !opt->ifname[0] || strlen(opt->ifname) >= IF_NAMESIZE || strchr(opt->ifname, '/')) {
        vx_log("interface name \"%s\" is not valid", opt->ifname ? opt->ifname : "");
        return -1;
    }
    snprintf(p->ifname, sizeof p->ifname, "%s", opt->ifname);
    p->ifindex = if_nametoindex(p->ifname);
    if (p->ifindex == 0) {
        vx_log("%s: interface not found (%s); see `ip link show`", p->ifname, strerror(errno));
        return -1;
    }
    if (link_query(p->ifindex, li) < 0) {
        vx_log("%s: RTM_GETLINK failed: %s", p->ifname, strerror(errno));
        return -1;
    }
    /* XDP attaches to a down interface without complaint, and then no
     * packet ever comes: say so now. */
    if (!(li->flags & IFF_UP)) {
        vx_log("%s: interface is down: `ip link set dev %s up` first", p->ifname, p->ifname);
        return -1;
    }
    /* A queue the interface does not have: bind() would say only EINVAL. */
    return check_queue_range(p, last);
}

/* === Step 2: the XSKMAP and the program ====================================
 *
 * The XSKMAP is an array of AF_XDP sockets indexed by queue id; the program
 * refers to it by fd, so the map must exist before the program is loaded.
 */

/* The map is indexed by queue id, so it must reach our last queue: last + 1
 * entries.  The others stay empty, and the program's fallback (XDP_PASS)
 * serves the packets of those queues. */
static int create_xskmap(struct nic_port *p, uint32_t last)
{
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_XSKMAP;
    a.key_size = sizeof(uint32_t);      /* queue id */
    a.value_size = sizeof(uint32_t);    /* socket fd (the map keeps the socket, not the fd) */
    a.max_entries = last + 1;
    snprintf(a.map_name, sizeof a.map_name, "%s", NIC_MAP_NAME);
    p->map_fd = sys_bpf(BPF_MAP_CREATE, &a);
    if (p->map_fd < 0) {
        vx_log("%s: bpf(BPF_MAP_CREATE, XSKMAP) failed: %s%s", p->ifname, strerror(errno), perm_hint(errno));
        return -1;
    }
    return 0;
}

/* BPF_PROG_LOAD: the kernel's verifier checks the program (every path
 * ends, every access is allowed, the helper gets the right argument types)
 * before it accepts it; the map fd in instruction 1 becomes the map. */
static int load_program(struct nic_port *p)
{
    struct bpf_insn insns[XSK_PROG_LEN];
    memcpy(insns, xsk_redirect_prog, sizeof insns);
    insns[XSK_PROG_MAP_INSN].imm = p->map_fd;

    /* The kernel only uses the license to decide whether GPL-only helpers
     * may be called; bpf_redirect_map() is not one of them. */
    static const char license[] = "MIT";
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_type = BPF_PROG_TYPE_XDP;
    a.insns = ptr_to_u64(insns);
    a.insn_cnt = XSK_PROG_LEN;
    a.license = ptr_to_u64(license);
    snprintf(a.prog_name, sizeof a.prog_name, "%s", NIC_PROG_NAME);
    /* prog_flags stays 0, without BPF_F_XDP_HAS_FRAGS: the program only
     * promises to handle packets in one buffer, so a driver whose MTU needs
     * several refuses to attach it (ERANGE on veth: see native_xdp_hint). */
    p->prog_fd = sys_bpf(BPF_PROG_LOAD, &a);
    if (p->prog_fd >= 0)
        return 0;
    prog_load_failed(p, &a);    /* one line, and the verifier's log ("When a step fails") */
    return -1;
}

/* === Step 3: attach the program to the interface ==========================
 *
 * From here on every packet the interface receives runs the program.
 * Before that, nic_open() clears the interface of a program an earlier run
 * left attached through netlink, which would block ours (second reading,
 * "Stale programs").
 *
 * BPF_LINK_CREATE (Linux >= 5.9) ties the attachment to a file descriptor:
 * when the last fd of the link closes, which includes the process dying of
 * SIGKILL, the kernel detaches the program and the interface is as it was.
 * Older kernels answer EINVAL (no such attach type): attach through netlink
 * then, and detach by hand in nic_close() (second reading, "Older kernels").
 */
static int attach_program(struct nic_port *p, uint32_t mode_flag)
{
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.link_create.prog_fd = (uint32_t)p->prog_fd;
    a.link_create.target_ifindex = p->ifindex;
    a.link_create.attach_type = BPF_XDP;
    a.link_create.flags = mode_flag;
    p->link_fd = sys_bpf(BPF_LINK_CREATE, &a);
    if (p->link_fd >= 0)
        return 0;
    return errno == EINVAL ? attach_through_netlink(p, mode_flag) : -1;
}

/* --xdp-mode: native (in the driver, before any sk_buff exists: the fast
 * one, and the only one that can do zero-copy), generic (after the kernel
 * has built an sk_buff: works on every interface), or auto: native, and
 * generic if the driver refuses, saying why. */
static int attach_in_mode(struct nic_port *p, const struct nic_options *opt)
{
    if (opt->mode != NIC_XDP_SKB) {
        if (attach_program(p, XDP_FLAGS_DRV_MODE) == 0) {
            p->xdp_flags = XDP_FLAGS_DRV_MODE;
            return 0;
        }
        int err = errno;
        if (opt->mode == NIC_XDP_NATIVE || opt->zerocopy) {
            vx_log("%s: native XDP attach failed: %s%s%s", p->ifname, strerror(err), native_xdp_hint(err),
                   opt->zerocopy ? " (--zerocopy needs native mode)" : "");
            return -1;
        }
        vx_log("%s: native XDP not available (%s%s): falling back to generic (skb) mode", p->ifname,
               strerror(err), native_xdp_hint(err));
    }
    if (attach_program(p, XDP_FLAGS_SKB_MODE) < 0) {
        vx_log("%s: generic XDP attach failed: %s%s", p->ifname, strerror(errno), perm_hint(errno));
        return -1;
    }
    p->xdp_flags = XDP_FLAGS_SKB_MODE;
    return 0;
}

/* === Step 4: the socket and its UMEM ======================================
 *
 * The UMEM is ordinary anonymous memory that the kernel pins (get_user_pages)
 * when we register it.  Pinned pages count against RLIMIT_MEMLOCK unless the
 * process has CAP_IPC_LOCK (net/xdp/xdp_umem.c, xdp_umem_account_pages: it
 * answers ENOBUFS when over the limit).  Frames are aligned chunks: the
 * frame of any address inside it is addr & ~(frame_size - 1).
 */
static int create_socket_and_umem(struct nic_port *p)
{
    p->xsk_fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (p->xsk_fd < 0) {
        vx_log("%s: socket(AF_XDP) failed: %s%s", p->ifname, strerror(errno), perm_hint(errno));
        return -1;
    }
    /* mmap gives page-aligned memory, as XDP_UMEM_REG requires.
     * MAP_POPULATE touches every page now, so that the poll thread never
     * takes a page fault on a frame. */
    p->umem_size = (uint64_t)p->frame_count * p->frame_size;
    void *mem = mmap(NULL, p->umem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                     -1, 0);
    if (mem == MAP_FAILED) {
        vx_log("%s: cannot allocate the UMEM (%llu MiB): %s", p->ifname,
               (unsigned long long)(p->umem_size >> 20), strerror(errno));
        return -1;
    }
    p->umem = mem;

    /* Zero the whole struct: newer kernels read fields that older headers
     * call padding (Linux 6.8 added tx_metadata_len after `flags`), and
     * garbage there makes XDP_UMEM_REG fail with EINVAL. */
    struct xdp_umem_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.addr = ptr_to_u64(p->umem);
    reg.len = p->umem_size;
    reg.chunk_size = p->frame_size;
    /* Room the kernel leaves before each received packet for us; we need
     * none, since we copy packets out and never grow them in place.  (Copy
     * mode leaves its own XDP_PACKET_HEADROOM on top: see "Data path: RX".) */
    reg.headroom = 0;
    /* reg.flags stays 0: aligned-chunk mode (no XDP_UMEM_UNALIGNED_CHUNK_FLAG),
     * where frames start at multiples of chunk_size: what lets
     * addr & ~(frame_size - 1) find the frame of any address.
     * A kernel that can complete TX checksums (Linux 6.11+) is asked for
     * room to say where, first ("TX checksums by the kernel"). */
    if (umem_reg_tx_metadata(p, &reg) == 0)
        return 0;
    if (setsockopt(p->xsk_fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof reg) < 0) {
        umem_reg_failed(p, errno);      /* RLIMIT_MEMLOCK, most often ("When a step fails") */
        return -1;
    }
    return 0;
}

/* === Step 5: the four rings ===============================================
 *
 * Sizes first (setsockopt, powers of two), then XDP_MMAP_OFFSETS tells where
 * producer, consumer, flags and the entries sit inside each ring's mapping,
 * and each ring is mmap'ed from the socket at its fixed page offset.
 *
 * Sizes: RX frames = TX frames = frame_count / 2.  The RX and TX rings hold
 * all frames of their half, so they can never overflow.  The fill ring is
 * twice the RX frames: the kernel publishes its fill-ring consumer index in
 * batches, so a received frame can come back to us before the kernel has
 * released its fill slot; with a fill ring only as large as the RX frames,
 * RX has been seen to stall after ~86k packets.
 */
/* One ring's mapping: the kernel's producer, consumer and flags words
 * first (at the offsets it reported, each on its own cache line), then
 * the entries from off->desc on.  `pgoff` is not a file offset but the
 * ring's name: XDP_PGOFF_RX_RING, XDP_UMEM_PGOFF_FILL_RING, ... */
static int ring_map(struct nic_port *p, struct xsk_ring *r, const struct xdp_ring_offset *off, uint32_t size,
                    size_t entry_size, off_t pgoff, const char *name)
{
    r->map_len = off->desc + (size_t)size * entry_size;
    r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, p->xsk_fd, pgoff);
    if (r->map == MAP_FAILED) {
        r->map = NULL;
        vx_log("%s: mmap of the %s ring failed: %s", p->ifname, name, strerror(errno));
        return -1;
    }
    r->producer = (uint32_t *)((char *)r->map + off->producer);
    r->consumer = (uint32_t *)((char *)r->map + off->consumer);
    r->flags = (uint32_t *)((char *)r->map + off->flags);
    r->entries = (char *)r->map + off->desc;
    r->size = size;
    r->mask = size - 1;
    /* Both 0 on a new socket; read rather than assumed all the same. */
    r->cached_prod = *r->producer;
    r->cached_cons = *r->consumer;
    return 0;
}

/* The sizes must be set before the mmaps (the kernel allocates a ring when
 * it is sized).  The fill and completion rings belong to the UMEM (older
 * kernels refuse to size them before XDP_UMEM_REG), RX and TX to the socket. */
static int create_rings(struct nic_port *p)
{
    uint32_t half = p->frame_count / 2;
    const struct { int opt; uint32_t size; const char *name; } sizes[] = {
        { XDP_UMEM_FILL_RING,       2 * half, "fill" },
        { XDP_UMEM_COMPLETION_RING, half,     "completion" },
        { XDP_RX_RING,              half,     "RX" },
        { XDP_TX_RING,              half,     "TX" },
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (setsockopt(p->xsk_fd, SOL_XDP, sizes[i].opt, &sizes[i].size, sizeof sizes[i].size) < 0) {
            vx_log("%s: sizing the %s ring (%u entries) failed: %s", p->ifname, sizes[i].name, sizes[i].size,
                   strerror(errno));
            return -1;
        }
    }
    /* Kernels before 5.4 know no `flags` word (no need_wakeup) and answer
     * with a shorter struct: hence the length check. */
    struct xdp_mmap_offsets off;
    socklen_t optlen = sizeof off;
    if (getsockopt(p->xsk_fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen) < 0 || optlen != sizeof off) {
        vx_log("%s: XDP_MMAP_OFFSETS failed: %s (kernel older than 5.4?)", p->ifname, strerror(errno));
        return -1;
    }
    if (ring_map(p, &p->fill, &off.fr, 2 * half, sizeof(uint64_t), XDP_UMEM_PGOFF_FILL_RING, "fill") < 0 ||
        ring_map(p, &p->comp, &off.cr, half, sizeof(uint64_t), XDP_UMEM_PGOFF_COMPLETION_RING, "completion") < 0 ||
        ring_map(p, &p->rx, &off.rx, half, sizeof(struct xdp_desc), XDP_PGOFF_RX_RING, "RX") < 0 ||
        ring_map(p, &p->tx, &off.tx, half, sizeof(struct xdp_desc), XDP_PGOFF_TX_RING, "TX") < 0)
        return -1;
    return 0;
}

/* === Ring arithmetic ======================================================
 *
 * Indexes run freely and wrap at 2^32; entries in use = producer - consumer
 * in unsigned arithmetic, right across the wrap: producer 3 and consumer
 * 0xfffffffe are 5 entries, in slots 0xfffffffe & mask ... 2 & mask.  The
 * ring's size being a power of two is what makes `& mask` agree with the
 * wrap at 2^32.  The ordering contract with the kernel
 * (net/xdp/xsk_queue.h, the comment above struct xdp_ring):
 *   producer: check room (load consumer), write entries, then store-release
 *             the producer index, so the entries are visible before it;
 *   consumer: load-acquire the producer index, read entries, then
 *             store-release the consumer index, so we are done reading a slot
 *             before the producer may refill it.
 */
/* Producer side.  Room for `want` entries?  The kernel's consumer index is
 * loaded only when our cached one says there is not enough. */
static uint32_t ring_prod_free(struct xsk_ring *r, uint32_t want)
{
    uint32_t free = r->size - (r->cached_prod - r->cached_cons);
    if (free >= want)
        return free;
    r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
    return r->size - (r->cached_prod - r->cached_cons);
}

/* Publish the n entries written after cached_prod. */
static void ring_prod_submit(struct xsk_ring *r, uint32_t n)
{
    r->cached_prod += n;
    __atomic_store_n(r->producer, r->cached_prod, __ATOMIC_RELEASE);
}

/* Consumer side.  Entries ready for us; the kernel's producer index is
 * loaded only once we have used up those we already knew of. */
static uint32_t ring_cons_avail(struct xsk_ring *r)
{
    uint32_t avail = r->cached_prod - r->cached_cons;
    if (avail)
        return avail;
    r->cached_prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
    return r->cached_prod - r->cached_cons;
}

/* Hand n read slots back to the producer. */
static void ring_cons_release(struct xsk_ring *r, uint32_t n)
{
    r->cached_cons += n;
    __atomic_store_n(r->consumer, r->cached_cons, __ATOMIC_RELEASE);
}

/* The kernel asks for a syscall (XDP_USE_NEED_WAKEUP, see bind_socket).
 * A relaxed load: where a stale flag would lose a wakeup the caller fences
 * first (nic_tx_submit); elsewhere the next poll simply looks again. */
static bool ring_needs_wakeup(const struct xsk_ring *r)
{
    return __atomic_load_n(r->flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP;
}

/* The fill ring's slot for free-running index idx. */
static uint64_t *fill_slot(struct nic_port *p, uint32_t idx)
{
    return &((uint64_t *)p->fill.entries)[idx & p->fill.mask];
}

/* A pointer the caller hands back -> its UMEM address.  Anything outside the
 * UMEM (below it too: the subtraction wraps) comes out >= umem_size. */
static uint64_t umem_addr(const struct nic_port *p, const uint8_t *data)
{
    return (uint64_t)((uintptr_t)data - (uintptr_t)p->umem);
}

/* === Step 6: hand the kernel its RX frames, bind, join the XSKMAP ========= */

/* Split the UMEM: frames 0 .. half-1 go to the kernel through the fill ring,
 * ready for the first packets (before bind(), so that none arrives to an
 * empty ring); the rest become the TX free stack. */
static void fill_ring_prime(struct nic_port *p)
{
    uint32_t half = p->frame_count / 2;
    for (uint32_t i = 0; i < half; i++)
        *fill_slot(p, p->fill.cached_prod + i) = (uint64_t)i * p->frame_size;
    ring_prod_submit(&p->fill, half);

    p->tx_frames = p->frame_count - half;
    for (uint32_t i = 0; i < p->tx_frames; i++)
        p->tx_free[p->tx_nfree++] = (uint64_t)(half + i) * p->frame_size;
}

/*
 * bind() attaches the socket to one queue of the interface.  Flags:
 *   XDP_COPY / XDP_ZEROCOPY  force copy mode (the kernel copies between its
 *       buffers and our frames; works on any driver) or zero-copy mode (the
 *       driver DMAs straight into our frames; EOPNOTSUPP where the driver
 *       cannot, e.g. veth);
 *   XDP_USE_NEED_WAKEUP  the kernel sets XDP_RING_NEED_WAKEUP in a ring's
 *       flags when it needs a syscall to make progress, instead of us
 *       making one every time (Documentation/networking/af_xdp.rst,
 *       "XDP_USE_NEED_WAKEUP bind flag").
 * We always force one of the two: with neither flag the kernel would pick
 * zero-copy wherever the driver has it, and the mode would depend on the
 * NIC rather than on --zerocopy.  sxdp_shared_umem_fd stays 0 (no
 * XDP_SHARED_UMEM): every queue has a UMEM of its own, so no two poll
 * threads share a ring.
 */
static int bind_socket(struct nic_port *p, bool zerocopy)
{
    struct sockaddr_xdp sxdp = {
        .sxdp_family = AF_XDP,
        .sxdp_flags = XDP_USE_NEED_WAKEUP | (zerocopy ? XDP_ZEROCOPY : XDP_COPY),
        .sxdp_ifindex = p->ifindex,
        .sxdp_queue_id = p->queue,
    };
    /* On failure bind_retry() waits out a queue that our previous run's
     * socket still holds (EBUSY for ~20 ms), or says in one line why the
     * queue cannot be had ("When a step fails"). */
    if (bind(p->xsk_fd, (struct sockaddr *)&sxdp, sizeof sxdp) < 0 && bind_retry(p, &sxdp, zerocopy) < 0)
        return -1;

    /* Ask what we got rather than assume it; should the kernel not say,
     * the mode we forced with the bind flag is the mode we have. */
    struct xdp_options xo = { 0 };
    socklen_t optlen = sizeof xo;
    p->zerocopy = zerocopy;
    if (getsockopt(p->xsk_fd, SOL_XDP, XDP_OPTIONS, &xo, &optlen) == 0)
        p->zerocopy = xo.flags & XDP_OPTIONS_ZEROCOPY;
    return 0;
}

/* Only now, with the socket bound, may the program find it: XSKMAP[queue] = socket. */
static int join_xskmap(struct nic_port *p, int map_fd)
{
    uint32_t key = p->queue;
    uint32_t value = (uint32_t)p->xsk_fd;
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_fd = (uint32_t)map_fd;
    a.key = ptr_to_u64(&key);
    a.value = ptr_to_u64(&value);
    a.flags = BPF_ANY;          /* insert, or replace what an earlier socket left */
    if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a) < 0) {
        vx_log("%s: adding the socket to the XSKMAP failed: %s", p->ifname, strerror(errno));
        return -1;
    }
    return 0;
}

/* === nic_open: the whole lab sheet, in order ============================== */

/* The UMEM's geometry, checked before anything is allocated.  main.c checks
 * the command line's syntax; the limits the kernel imposes are here, next
 * to the code that depends on them. */
static int check_options(struct nic_port *p, const struct nic_options *opt)
{
    long page = sysconf(_SC_PAGESIZE);
    p->frame_size = opt->frame_size ? opt->frame_size : 4096;
    p->frame_count = opt->frame_count ? opt->frame_count : 4096;
    /* Aligned-chunk mode: a power of two from 2048 (XDP_UMEM_MIN_CHUNK_SIZE)
     * up to the page size. */
    if (p->frame_size < 2048 || (long)p->frame_size > page || (p->frame_size & (p->frame_size - 1))) {
        vx_log("UMEM frame size %u: must be a power of two from 2048 to %ld", p->frame_size, page);
        return -1;
    }
    /* Power of two: each ring is half of it.  At least four bursts: each
     * half (RX, TX) then holds two, so one poll can never take every frame
     * there is.  At most 2^20: 4 GiB of UMEM at 4 KiB a frame. */
    if (p->frame_count < 4 * VX_BURST || p->frame_count > (1u << 20) || (p->frame_count & (p->frame_count - 1))) {
        vx_log("UMEM frame count %u: must be a power of two from %d to %u", p->frame_count, 4 * VX_BURST,
               1u << 20);
        return -1;
    }
    if (opt->zerocopy && opt->mode == NIC_XDP_SKB) {
        vx_log("--zerocopy needs native XDP: generic (skb) mode always copies");
        return -1;
    }
    return 0;
}

/* A port with nothing set up yet (every field "nothing": -1 or NULL), so
 * that nic_close() can undo any prefix of the set-up. */
static struct nic_port *port_new(const struct nic_options *opt)
{
    struct nic_port *p = calloc(1, sizeof *p);
    if (!p)
        goto out_of_memory;
    p->map_fd = p->prog_fd = p->link_fd = p->xsk_fd = -1;
    if (check_options(p, opt) < 0) {
        free(p);
        return NULL;
    }
    /* Room for every frame, though only the TX half ever lives here. */
    p->tx_free = calloc(p->frame_count, sizeof *p->tx_free);
    if (p->tx_free)
        return p;
    free(p);
out_of_memory:
    vx_log("AF_XDP port: out of memory");
    return NULL;
}

/* Steps 4 to 6 for one queue: its socket, UMEM and rings, joined to the
 * interface's XSKMAP (map_fd, held by the first queue's port). */
static int open_queue(struct nic_port *p, const struct nic_options *opt, int map_fd)
{
    /* 4. the AF_XDP socket and its UMEM */
    if (create_socket_and_umem(p) < 0)
        return -1;
    /* 5. the four rings */
    if (create_rings(p) < 0)
        return -1;
    /* 6. RX frames into the fill ring, bind to the queue, join the XSKMAP */
    fill_ring_prime(p);
    if (bind_socket(p, opt->zerocopy) < 0 || join_xskmap(p, map_fd) < 0)
        return -1;
    snprintf(p->mode_name, sizeof p->mode_name, "%s, %s",
             p->xdp_flags == XDP_FLAGS_DRV_MODE ? "native (drv)" : "generic (skb)",
             p->zerocopy ? "zerocopy" : "copy");
    vx_log("%s queue %u: AF_XDP port ready: XDP %s; UMEM %u frames x %u B (%u RX, %u TX)", p->ifname,
           p->queue, p->mode_name, p->frame_count, p->frame_size, p->frame_count / 2, p->tx_frames);
    tx_csum_decide(p);      /* who completes TX checksums: the kernel, or offload.c */
    return 0;
}

/* The set-up, one step per line, in the order the kernel needs them: the
 * interface's program and map once (in ports[0]), then a socket per queue.
 * Any failure has been logged in one line by its step; everything made so
 * far is closed again and ports[] is all NULL.
 *
 * What the steps leave behind, to look at from a shell while vhost-xdp runs
 * (IF is the --iface, PID vhost-xdp's process; the values from a veth):
 *   its log     "IF: XDP program attached (BPF link)" after step 3, then
 *               "IF queue 0: AF_XDP port ready: XDP native (drv), copy;
 *               UMEM 4096 frames x 4096 B (2048 RX, 2048 TX)" after step 6
 *   ip link show dev IF       "xdp" after the MTU ("xdpgeneric" in generic
 *               mode) and "prog/xdp id N name vx_xsk_redirect tag ... jited"
 *   ls -l /proc/PID/fd        anon_inode:bpf-map and anon_inode:bpf-prog
 *               (step 2), anon_inode:bpf_link (step 3), socket:[N] (step 4)
 *   cat /proc/PID/fdinfo/FD   for the map: map_type 17 (XSKMAP), key_size 4,
 *               max_entries; the program: prog_type 6 (XDP), verified_insns 5
 *               (six slots: the 64-bit load is one instruction in two); the
 *               link: link_type xdp and the interface's ifindex
 * Once vhost-xdp has exited, `ip link show dev IF` shows no program again.
 */
int nic_open(struct nic_port **ports, const struct nic_options *opt)
{
    struct link_info li;
    uint32_t n = opt->nqueues ? opt->nqueues : 1;
    uint32_t last = opt->queue + n - 1;     /* queues opt->queue .. last */
    memset(ports, 0, n * sizeof *ports);
    struct nic_port *p = ports[0] = port_new(opt);
    if (!p)
        goto fail;
    raise_memlock_limit();      /* kernels before 5.11 charge BPF maps to it ("Older kernels") */

    /* 1. the interface exists, is up, has those queues; what XDP it has now */
    if (check_interface(p, opt, last, &li) < 0)
        goto fail;
    /* 2. the XSKMAP, then the program that uses it */
    if (create_xskmap(p, last) < 0 || load_program(p) < 0)
        goto fail;
    /* 3. clear the interface of stale programs, attach ours (native, else generic) */
    if (replace_stale_programs(p, &li) < 0 || attach_in_mode(p, opt) < 0)
        goto fail;
    vx_log("%s: XDP program attached (%s)", p->ifname, p->netlink_attached ? "through netlink" : "BPF link");
    /* 4-6. the first queue's socket, UMEM and rings, bound and in the XSKMAP */
    p->queue = opt->queue;
    if (open_queue(p, opt, p->map_fd) < 0)
        goto fail;
    /* The same for each further queue of --queue Q-R ("More queues") */
    if (n > 1 && open_more_queues(ports, opt, n) < 0)
        goto fail;
    return 0;

fail:
    for (uint32_t k = 0; k < n; k++) {
        nic_close(ports[k]);
        ports[k] = NULL;
    }
    return -1;
}

/* === Data path: RX ========================================================
 *
 * The kernel has taken frames from the fill ring, written packets into them
 * and put (address, length) descriptors on the RX ring.  In copy mode the
 * address points XDP_PACKET_HEADROOM (256) bytes into the frame; the frame is
 * addr & ~(frame_size - 1).  We hand out pointers into those frames; the
 * caller copies the packets to the guest and gives the frames back with
 * nic_rx_release(), which returns them to the fill ring.
 */
int nic_rx_burst(struct nic_port *p, struct vx_pkt *pkts, int n)
{
    if (n <= 0)
        return 0;
    uint32_t avail = ring_cons_avail(&p->rx);
    if (avail == 0) {
        /* A zero-copy driver whose fill ring ran dry sleeps until we poke
         * it (copy mode never sets this flag). */
        if (ring_needs_wakeup(&p->fill))
            recvfrom(p->xsk_fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
        return 0;
    }
    /* No more than the caller has room for (it asked for as many as the
     * guest has buffers): the rest waits in the RX ring for the next poll. */
    if (avail > (uint32_t)n)
        avail = (uint32_t)n;

    /* Check each descriptor before trusting it with a pointer into the
     * UMEM: the kernel is not hostile, but a wrong address here would make
     * the poll thread copy from outside its own memory.  Bound without
     * XDP_USE_SG, the socket never gets a packet split over several frames
     * (the kernel drops it): one descriptor is one whole packet, and its
     * `options` (XDP_PKT_CONTD) need no look. */
    const struct xdp_desc *descs = p->rx.entries;
    uint32_t bad = 0;
    uint64_t bytes = 0;
    int got = 0;
    for (uint32_t i = 0; i < avail; i++) {
        const struct xdp_desc *d = &descs[(p->rx.cached_cons + i) & p->rx.mask];
        uint64_t in_frame = d->addr & (p->frame_size - 1);
        if (d->addr >= p->umem_size || d->len == 0 || d->len > p->frame_size - in_frame) {
            /* Never from a sane kernel; recycle the frame if it is ours. */
            if (d->addr < p->umem_size)
                *fill_slot(p, p->fill.cached_prod + bad++) = d->addr - in_frame;
            continue;
        }
        pkts[got].len = d->len;
        pkts[got].room = p->frame_size - (uint32_t)in_frame;
        pkts[got].data = p->umem + d->addr;
        bytes += d->len;
        got++;
    }
    /* The RX slots go back at once: a slot only names a frame, and the
     * frame stays ours until nic_rx_release() puts it in the fill ring. */
    ring_cons_release(&p->rx, avail);
    if (bad) {
        ring_prod_submit(&p->fill, bad);
        vx_counter_add(p->stats.invalid_descs, avail - (uint32_t)got);
    }
    vx_counter_add(p->stats.rx_packets, (uint64_t)got);
    vx_counter_add(p->stats.rx_bytes, bytes);
    /* Has the kernel taken every frame we offered?  Then it has nowhere to
     * put the next packet and drops it: we are slower than the wire. */
    if (__atomic_load_n(p->fill.consumer, __ATOMIC_ACQUIRE) == p->fill.cached_prod)
        vx_counter_add(p->stats.rx_fill_empty, 1);
    return got;
}

/* The caller is done with the frames nic_rx_burst() lent it: back to the
 * fill ring, where the kernel takes them for the next packets.  Each frame
 * goes back whole, at its start (copy mode's offset dropped). */
void nic_rx_release(struct nic_port *p, const struct vx_pkt *pkts, int n)
{
    /* The fill ring holds twice the RX frames, so there is always room. */
    uint32_t room = ring_prod_free(&p->fill, (uint32_t)n);
    uint32_t put = 0;
    for (int i = 0; i < n; i++) {
        uint64_t addr = umem_addr(p, pkts[i].data);
        if (addr >= p->umem_size || put == room) {
            vx_counter_add(p->stats.invalid_descs, 1);          /* not one of our RX frames */
            continue;
        }
        *fill_slot(p, p->fill.cached_prod + put++) = addr & ~(uint64_t)(p->frame_size - 1);
    }
    ring_prod_submit(&p->fill, put);
}

/* === Data path: TX ========================================================
 *
 * A TX frame cycles: free stack -> caller fills it -> TX ring -> the kernel
 * sends it -> completion ring -> free stack.  In copy mode the kernel sends
 * only from sendto() (at most 32 descriptors per call), and it keeps the TX
 * ring's NEED_WAKEUP flag set, so every burst costs one syscall there; a
 * zero-copy driver sends on its own and sets the flag only when it sleeps.
 */

/* The kick.  Four errors are part of normal life, none loses a frame:
 *   EAGAIN   the kernel sent its batch (32) or the device queue was busy;
 *            the rest stay in the TX ring for the next kick;
 *   EBUSY    copy mode: the device dropped one packet (NET_XMIT_DROP, e.g.
 *            a full qdisc); its frame still comes back on the completion
 *            ring, so only the packet is lost (the qdisc counts the drop);
 *   ENOBUFS  no memory for an skb right now; ENETDOWN: the link is down. */
static void tx_kick(struct nic_port *p)
{
    if (!ring_needs_wakeup(&p->tx))
        return;
    /* An empty sendto() is the AF_XDP kick: the kernel (xsk_sendmsg) sends
     * what the TX ring holds.  MSG_DONTWAIT: never block the poll thread. */
    if (sendto(p->xsk_fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0)
        return;
    if (errno == EAGAIN || errno == EBUSY || errno == ENOBUFS || errno == ENETDOWN)
        return;
    /* Anything else is logged once: at millions of kicks a second, a line
     * per failure would drown the log. */
    if (!p->kick_error_logged) {
        p->kick_error_logged = true;
        vx_log("%s: AF_XDP TX kick failed: %s (logged once)", p->ifname, strerror(errno));
    }
}

/* A TX frame back onto the free stack.  An address that is not in the
 * UMEM, or one frame too many (a frame freed twice), is counted and
 * dropped instead of corrupting the stack. */
static void tx_free_frame(struct nic_port *p, uint64_t addr)
{
    if (addr >= p->umem_size || p->tx_nfree == p->tx_frames) {
        vx_counter_add(p->stats.invalid_descs, 1);
        return;
    }
    p->tx_free[p->tx_nfree++] = addr & ~(uint64_t)(p->frame_size - 1);
}

/* Frames whose packets are gone come back through the completion ring. */
static void tx_reap_completions(struct nic_port *p)
{
    uint32_t done = ring_cons_avail(&p->comp);
    const uint64_t *addrs = p->comp.entries;
    for (uint32_t i = 0; i < done; i++)
        tx_free_frame(p, addrs[(p->comp.cached_cons + i) & p->comp.mask]);
    if (done)
        ring_cons_release(&p->comp, done);
}

/* Lend the caller up to n free TX frames to copy guest packets into.  Also
 * the TX side's housekeeping, done once per poll whether or not the guest
 * sends anything: reap completions, and kick again for what an earlier kick
 * left in the TX ring. */
int nic_tx_alloc(struct nic_port *p, struct vx_pkt *pkts, int n)
{
    tx_reap_completions(p);
    /* Descriptors left in the TX ring by an earlier kick that hit EAGAIN or
     * the 32-per-call limit need another kick, even if nothing new comes. */
    if (p->tx.cached_prod != __atomic_load_n(p->tx.consumer, __ATOMIC_ACQUIRE))
        tx_kick(p);
    if (n <= 0)
        return 0;
    if (p->tx_nfree == 0) {
        vx_counter_add(p->stats.tx_ring_full, 1);   /* every TX frame is in flight: the guest waits */
        return 0;
    }
    /* The frame is the caller's, from its first byte: in copy mode the
     * kernel copies a TX packet into an skb of its own, and a zero-copy
     * driver sends straight from the frame; neither needs headroom.  (Only
     * the TX metadata does, when it is used: tx_headroom, 0 otherwise.) */
    int got = n < (int)p->tx_nfree ? n : (int)p->tx_nfree;
    for (int i = 0; i < got; i++) {
        pkts[i].data = p->umem + p->tx_free[--p->tx_nfree] + p->tx_headroom;
        pkts[i].room = p->frame_size - p->tx_headroom;
        pkts[i].len = 0;
    }
    return got;
}

/* The first nfilled of the nalloc frames nic_tx_alloc() lent now hold
 * packets: onto the TX ring with them, and kick.  The rest go back to the
 * free stack unused (the guest had fewer packets than we had frames). */
void nic_tx_submit(struct nic_port *p, struct vx_pkt *pkts, int nfilled, int nalloc)
{
    /* The TX ring holds every TX frame, so this never falls short; if it
     * did, the packet would be dropped and counted. */
    uint32_t room = ring_prod_free(&p->tx, (uint32_t)nfilled);
    struct xdp_desc *descs = p->tx.entries;
    uint32_t sent = 0;
    uint64_t bytes = 0;
    for (int i = 0; i < nfilled; i++) {
        uint64_t addr = umem_addr(p, pkts[i].data);
        uint64_t in_frame = addr & (p->frame_size - 1);
        /* The packet must lie inside its frame: a length beyond the
         * frame's end would have the kernel send the next frame's bytes
         * (or refuse the descriptor and count it invalid).  These are the
         * kernel's own checks (net/xdp/xsk_queue.h, xp_aligned_validate_desc);
         * it skips a descriptor that fails them without ever returning its
         * frame on the completion ring, so the frame would be lost to us. */
        if (addr >= p->umem_size || pkts[i].len == 0 || pkts[i].len > p->frame_size - in_frame) {
            tx_free_frame(p, addr);     /* counts it as invalid if not ours */
            if (addr < p->umem_size)
                vx_counter_add(p->stats.invalid_descs, 1);
            continue;
        }
        if (sent == room) {
            tx_free_frame(p, addr);
            vx_counter_add(p->stats.tx_ring_full, 1);
            continue;
        }
        struct xdp_desc *d = &descs[(p->tx.cached_prod + sent) & p->tx.mask];
        d->addr = addr;
        d->len = pkts[i].len;
        /* No option bits: one whole packet (no XDP_PKT_CONTD), no TX
         * metadata; a bit the kernel does not know makes it invalid.  A
         * packet whose checksum offload.c left for the kernel (tx_csum)
         * says where it goes, in the TX metadata. */
        d->options = 0;
        if (p->tx_csum && (pkts[i].hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM))
            d->options = tx_metadata_csum(&pkts[i]);
        bytes += pkts[i].len;
        sent++;
    }
    for (int i = nfilled; i < nalloc; i++)
        tx_free_frame(p, umem_addr(p, pkts[i].data));
    if (sent == 0)
        return;
    ring_prod_submit(&p->tx, sent);
    /* Full fence: our producer store must be visible before we read the
     * kernel's flag (store->load is the one reordering x86 allows), or we
     * could miss a wakeup request made just after the kernel last looked. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    tx_kick(p);
    vx_counter_add(p->stats.tx_packets, sent);
    vx_counter_add(p->stats.tx_bytes, bytes);
}

/* === nic_close: leave the interface as we found it ======================== */

void nic_close(struct nic_port *p)
{
    if (!p)
        return;
    /* Detach first: from here on the interface passes packets to the stack
     * as before instead of redirecting them to a socket about to close.
     * (Only the first queue's port holds the program: close it first.) */
    if (p->link_fd >= 0)
        close(p->link_fd);
    if (p->netlink_attached)
        detach_through_netlink(p);          /* kernels before 5.9 ("Older kernels") */
    if (p->xsk_fd >= 0)
        log_kernel_drops(p);        /* while the socket still exists ("Instruments") */
    /* The rings, then the socket, then the UMEM: the kernel stops using the
     * UMEM only once the socket is closed. */
    struct xsk_ring *rings[] = { &p->fill, &p->comp, &p->rx, &p->tx };
    for (size_t i = 0; i < sizeof rings / sizeof rings[0]; i++)
        if (rings[i]->map)
            munmap(rings[i]->map, rings[i]->map_len);
    if (p->xsk_fd >= 0)
        close(p->xsk_fd);       /* also takes it out of the XSKMAP, unpins the UMEM */
    if (p->umem)
        munmap(p->umem, p->umem_size);
    /* Closing these two detaches nothing (the link or the netlink
     * attachment holds the program, the program holds its map): hence the
     * explicit detach above.  The kernel frees each with its last holder. */
    if (p->prog_fd >= 0)
        close(p->prog_fd);
    if (p->map_fd >= 0)
        close(p->map_fd);
    free(p->tx_free);
    free(p);
}

/* === Second reading: netlink, stale programs, old kernels, more queues, errors, instruments ====== */

/* === Netlink: the interface's state, and its XDP program ==================
 *
 * rtnetlink is the interface `ip link` speaks to the kernel: a datagram
 * socket (AF_NETLINK, NETLINK_ROUTE) on which we send a request and read
 * the answer.  A message is a header, a fixed struct, then attributes:
 *
 *   struct nlmsghdr    length, type (RTM_GETLINK, RTM_SETLINK), flags, seq
 *   struct ifinfomsg   which interface (ifi_index), its flags (IFF_UP, ...)
 *   struct rtattr ...  type-length-value attributes, each 4-byte aligned;
 *                      one may nest others (IFLA_XDP holds IFLA_XDP_FD, ...)
 *
 * Two requests serve us: RTM_GETLINK asks for a link (link_query: is it
 * up, which XDP programs it has), RTM_SETLINK with IFLA_XDP { IFLA_XDP_FD =
 * -1 } detaches a program, as `ip link set dev IF xdp off` does
 * (link_set_xdp: stale programs, and kernels without BPF links).
 */

/* An RTM_GETLINK or RTM_SETLINK request: netlink header, the link's
 * ifinfomsg, then attributes.  64 bytes of attributes hold what we send at
 * most: IFLA_XDP nesting IFLA_XDP_FD and IFLA_XDP_FLAGS (20 bytes).
 * Every field the request does not name is zero; in an RTM_SETLINK,
 * ifi_flags = ifi_change = 0 leaves the interface's flags (up, ...) alone.
 * The detach request (link_set_xdp with prog_fd -1), 52 bytes in all:
 *
 *   nlmsghdr   len 52, RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, seq 1  16 B
 *   ifinfomsg  family AF_UNSPEC, ifi_index = the interface             16 B
 *   rtattr     IFLA_XDP | NLA_F_NESTED, len 20 (itself and the two)     4 B
 *     rtattr   IFLA_XDP_FD, len 8: -1                                    8 B
 *     rtattr   IFLA_XDP_FLAGS, len 8: the mode, e.g. XDP_FLAGS_SKB_MODE  8 B
 */
struct link_req {
    struct nlmsghdr  nh;
    struct ifinfomsg ifi;
    char             attrs[64];
};

/* Append one attribute to a netlink message (attributes are TLVs aligned to
 * 4 bytes: include/uapi/linux/netlink.h). */
static struct rtattr *nl_add_attr(struct nlmsghdr *nh, unsigned short type, const void *data,
                                  unsigned short len)
{
    struct rtattr *rta = (struct rtattr *)((char *)nh + NLMSG_ALIGN(nh->nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = RTA_LENGTH(len);
    if (len)
        memcpy(RTA_DATA(rta), data, len);
    nh->nlmsg_len = NLMSG_ALIGN(nh->nlmsg_len) + RTA_ALIGN(rta->rta_len);
    return rta;
}

/* The kernel's own sentence for an error ("extended ack", NETLINK_EXT_ACK),
 * e.g. "Native and generic XDP can't be active at the same time." */
static void nl_ext_ack_message(const struct nlmsghdr *nh, char *msg, size_t msglen)
{
    const struct nlmsgerr *err = NLMSG_DATA(nh);
    size_t off = NLMSG_HDRLEN + sizeof *err;
    msg[0] = '\0';
    if (!(nh->nlmsg_flags & NLM_F_ACK_TLVS))
        return;
    if (!(nh->nlmsg_flags & NLM_F_CAPPED))      /* our request is echoed first */
        off += err->msg.nlmsg_len - NLMSG_HDRLEN;
    if (off >= nh->nlmsg_len)
        return;
    int len = (int)(nh->nlmsg_len - NLMSG_ALIGN(off));
    for (const struct rtattr *a = (const void *)((const char *)nh + NLMSG_ALIGN(off)); RTA_OK(a, len);
         a = RTA_NEXT(a, len))
        if (a->rta_type == NLMSGERR_ATTR_MSG)
            snprintf(msg, msglen, "%.*s", (int)RTA_PAYLOAD(a), (const char *)RTA_DATA(a));
}

/* Send one request to the kernel's rtnetlink and read its one answer: the
 * link for RTM_GETLINK, an ACK (error 0) or an error for RTM_SETLINK.
 * Returns 0, or -1 with errno and the kernel's sentence in msg. */
static int nl_transact(struct nlmsghdr *req, void *reply, size_t replylen, char *msg, size_t msglen)
{
    msg[0] = '\0';
    /* One socket per request, closed at once: set-up runs a handful of
     * requests, and a fresh socket never holds an answer meant for an
     * earlier one.  No bind(): the kernel gives it an address on sendto. */
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);  /* errors come with a sentence */
    setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);  /* ...without our request echoed */
    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
    req->nlmsg_seq = 1;
    ssize_t n = -1;
    if (sendto(fd, req, req->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) >= 0)
        n = recv(fd, reply, replylen, 0);
    int err = errno;
    close(fd);
    if (n < 0) {
        errno = err;
        return -1;
    }
    /* An answer larger than our buffer arrives cut short: its nlmsg_len
     * then exceeds what we read, and NLMSG_OK says no. */
    struct nlmsghdr *nh = reply;
    if (!NLMSG_OK(nh, (size_t)n)) {
        errno = EPROTO;
        return -1;
    }
    if (nh->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = NLMSG_DATA(nh);
        if (e->error == 0)
            return 0;           /* the ACK */
        nl_ext_ack_message(nh, msg, msglen);
        errno = -e->error;
        return -1;
    }
    return 0;
}

/* RTM_GETLINK for one interface: its flags and the ids of the XDP programs
 * it has.  The answer carries every attribute of the link (statistics, VF
 * and queue information, ...): 32 KiB is room for any ordinary interface. */
static int link_query(unsigned ifindex, struct link_info *li)
{
    /* No NLM_F_ACK: the answer is the link itself (or an error). */
    struct link_req req = {
        .nh = { .nlmsg_len = NLMSG_LENGTH(sizeof req.ifi), .nlmsg_type = RTM_GETLINK,
                .nlmsg_flags = NLM_F_REQUEST },
        .ifi = { .ifi_family = AF_UNSPEC, .ifi_index = (int)ifindex },
    };
    char reply[32768], msg[256];
    memset(li, 0, sizeof *li);
    if (nl_transact(&req.nh, reply, sizeof reply, msg, sizeof msg) < 0)
        return -1;

    struct nlmsghdr *nh = (struct nlmsghdr *)reply;
    struct ifinfomsg *ifi = NLMSG_DATA(nh);
    li->flags = ifi->ifi_flags;
    int len = (int)IFLA_PAYLOAD(nh);
    for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if ((a->rta_type & NLA_TYPE_MASK) != IFLA_XDP)
            continue;
        /* IFLA_XDP nests one attribute per mode that has a program
         * (net/core/rtnetlink.c, rtnl_xdp_fill). */
        int xlen = (int)RTA_PAYLOAD(a);
        for (struct rtattr *x = RTA_DATA(a); RTA_OK(x, xlen); x = RTA_NEXT(x, xlen)) {
            uint32_t id = *(uint32_t *)RTA_DATA(x);
            switch (x->rta_type & NLA_TYPE_MASK) {
            case IFLA_XDP_DRV_PROG_ID: li->drv_prog_id = id; break;
            case IFLA_XDP_SKB_PROG_ID: li->skb_prog_id = id; break;
            case IFLA_XDP_HW_PROG_ID:  li->hw_prog_id = id; break;
            }
        }
    }
    return 0;
}

/* RTM_SETLINK IFLA_XDP { FD = prog_fd (-1: detach), FLAGS = mode }. */
static int link_set_xdp(unsigned ifindex, int prog_fd, uint32_t flags, char *msg, size_t msglen)
{
    /* NLM_F_ACK: a successful RTM_SETLINK is otherwise answered with
     * nothing at all, and nl_transact's recv() would wait for ever. */
    struct link_req req = {
        .nh = { .nlmsg_len = NLMSG_LENGTH(sizeof req.ifi), .nlmsg_type = RTM_SETLINK,
                .nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK },
        .ifi = { .ifi_family = AF_UNSPEC, .ifi_index = (int)ifindex },
    };
    char reply[1024];           /* an ACK, or an error with the kernel's sentence */
    struct rtattr *xdp = nl_add_attr(&req.nh, IFLA_XDP | NLA_F_NESTED, NULL, 0);
    nl_add_attr(&req.nh, IFLA_XDP_FD, &prog_fd, sizeof prog_fd);
    nl_add_attr(&req.nh, IFLA_XDP_FLAGS, &flags, sizeof flags);
    /* The nest's length is known only now: it covers its two children. */
    xdp->rta_len = (unsigned short)((char *)&req.nh + req.nh.nlmsg_len - (char *)xdp);
    return nl_transact(&req.nh, reply, sizeof reply, msg, msglen);
}

/* === Stale programs: what an earlier run left on the interface ===========
 *
 * A program attached through netlink (by `ip link set dev IF xdp ...`, by
 * another tool, or by a vhost-xdp that ran on a kernel without XDP links and
 * died) outlives its process and blocks ours: the kernel refuses a BPF link
 * on an interface that already has a program in that mode (EBUSY), and a
 * program in generic mode next to one in native mode (EEXIST).  We detach it
 * with netlink and say so.  A program held by a BPF link belongs to a live
 * process: netlink cannot detach it (EBUSY) and we do not try harder.
 *
 * What it looks like (tests/test_afxdp.sh leaves such a program with
 * tests/afxdp_tool netlink-attach, then starts a port on the interface):
 *   vhost-xdp: IF: replaced a stale XDP program left on the interface: id 525
 *     "stale_test" (generic mode, attached through netlink by another tool) detached
 *   vhost-xdp: IF: XDP program attached (BPF link)
 */

/* A program's name from its id (what RTM_GETLINK reports), for the log
 * line: BPF_PROG_GET_FD_BY_ID, then BPF_OBJ_GET_INFO_BY_FD.  Without the
 * privilege for the first, the name is "?". */
static void prog_name_by_id(uint32_t id, char *name, size_t len)
{
    union bpf_attr a;
    struct bpf_prog_info info;
    snprintf(name, len, "?");
    memset(&a, 0, sizeof a);
    a.prog_id = id;
    int fd = sys_bpf(BPF_PROG_GET_FD_BY_ID, &a);
    if (fd < 0)
        return;
    /* Zeroed: the kernel reads some of info's fields as requests (buffer
     * pointers and counts for the instructions, the map ids, ...), and
     * info_len says how much of it we have: it fills in no more. */
    memset(&info, 0, sizeof info);
    memset(&a, 0, sizeof a);
    a.info.bpf_fd = (uint32_t)fd;
    a.info.info_len = sizeof info;
    a.info.info = ptr_to_u64(&info);
    if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a) == 0 && info.name[0])
        snprintf(name, len, "%s", info.name);
    close(fd);
}

/* Every mode's program found by check_interface(), detached in turn, each
 * with one line saying what it was and who probably left it. */
static int replace_stale_programs(struct nic_port *p, const struct link_info *li)
{
    const struct { uint32_t id; uint32_t flags; const char *mode; } attached[] = {
        { li->drv_prog_id, XDP_FLAGS_DRV_MODE, "native" },
        { li->skb_prog_id, XDP_FLAGS_SKB_MODE, "generic" },
        { li->hw_prog_id,  XDP_FLAGS_HW_MODE,  "offloaded" },
    };
    for (size_t i = 0; i < sizeof attached / sizeof attached[0]; i++) {
        if (attached[i].id == 0)
            continue;
        char name[BPF_OBJ_NAME_LEN + 1], msg[256];
        prog_name_by_id(attached[i].id, name, sizeof name);
        if (link_set_xdp(p->ifindex, -1, attached[i].flags, msg, sizeof msg) < 0) {
            if (errno == EBUSY)
                vx_log("%s: XDP program id %u \"%s\" (%s mode) is held by a BPF link, so another running "
                       "process owns it (another vhost-xdp?): stop that first", p->ifname, attached[i].id,
                       name, attached[i].mode);
            else
                vx_log("%s: cannot detach the XDP program id %u \"%s\" (%s mode) found on it: %s%s%s%s",
                       p->ifname, attached[i].id, name, attached[i].mode, strerror(errno),
                       msg[0] ? " (" : "", msg, msg[0] ? ")" : "");
            return -1;
        }
        vx_log("%s: replaced a stale XDP program left on the interface: id %u \"%s\" (%s mode, attached "
               "through netlink by %s) detached", p->ifname, attached[i].id, name, attached[i].mode,
               strcmp(name, NIC_PROG_NAME) == 0 ? "an earlier vhost-xdp" : "another tool");
    }
    return 0;
}

/* === Older kernels: no BPF links (before 5.9), RLIMIT_MEMLOCK (before 5.11) */

/* Attach through netlink, as `ip link set dev IF xdp...` does.  The
 * attachment then belongs to the interface, not to a file descriptor: it
 * outlives us if we are killed, and nic_close() must detach it by hand. */
static int attach_through_netlink(struct nic_port *p, uint32_t mode_flag)
{
    /* UPDATE_IF_NOEXIST: without it netlink silently replaces whatever
     * program the interface has, even one attached since we looked. */
    char msg[256];
    if (link_set_xdp(p->ifindex, p->prog_fd, mode_flag | XDP_FLAGS_UPDATE_IF_NOEXIST, msg, sizeof msg) < 0) {
        if (msg[0])
            vx_log("%s: netlink attach: %s", p->ifname, msg);
        return -1;
    }
    p->netlink_attached = true;
    vx_log("%s: BPF_LINK_CREATE refused (kernel older than 5.9?): attached through netlink instead; "
           "if vhost-xdp is killed the program stays until the next run replaces it", p->ifname);
    return 0;
}

/* nic_close(): the netlink attachment's undo (a BPF link needs none). */
static void detach_through_netlink(const struct nic_port *p)
{
    char msg[256];
    if (link_set_xdp(p->ifindex, -1, p->xdp_flags, msg, sizeof msg) < 0)
        vx_log("%s: detaching the XDP program failed: %s %s", p->ifname, strerror(errno), msg);
}

/* Kernels before 5.11 charge maps and programs to RLIMIT_MEMLOCK (newer
 * ones to the memory cgroup): raise the limit when we may. */
static void raise_memlock_limit(void)
{
    struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY }, cur;
    if (setrlimit(RLIMIT_MEMLOCK, &unlimited) == 0)
        return;
    /* Without CAP_SYS_RESOURCE we can still lift the soft limit to the hard one. */
    if (getrlimit(RLIMIT_MEMLOCK, &cur) == 0 && cur.rlim_cur < cur.rlim_max) {
        cur.rlim_cur = cur.rlim_max;
        setrlimit(RLIMIT_MEMLOCK, &cur);
    }
}

/* === More queues: several sockets on one program and one XSKMAP ==========
 *
 * --queue Q-R: nic_open() has set up the interface's program and map and
 * the first queue's socket in ports[0].  Each further queue gets steps 4 to
 * 6 again: a socket with its own UMEM and rings, bound to its queue, in its
 * slot of the same XSKMAP.  These ports copy the interface's name, index and
 * XDP mode from the first; they hold no program (their prog, map and link
 * fds stay -1, netlink_attached false), so closing them detaches nothing.
 *
 * The XSKMAP then holds XSKMAP[Q+k] = socket k, and the program, which
 * looks up ctx->rx_queue_index, hands each packet to the socket of the
 * queue it arrived on.  Each socket has a UMEM of its own rather than one
 * UMEM shared (XDP_SHARED_UMEM): in a shared one the frames are one pool,
 * which the poll threads of different queues would have to hand out
 * between them, lock and all; apart, every frame, ring and free stack of a
 * queue is its thread's alone.  Each port logs its own "queue N: AF_XDP
 * port ready" line; --stats and the exit lines count each queue apart.
 */
static int open_more_queues(struct nic_port **ports, const struct nic_options *opt, uint32_t n)
{
    for (uint32_t k = 1; k < n; k++) {
        struct nic_port *p = ports[k] = port_new(opt);
        if (!p)
            return -1;
        memcpy(p->ifname, ports[0]->ifname, sizeof p->ifname);
        p->ifindex = ports[0]->ifindex;
        p->xdp_flags = ports[0]->xdp_flags;
        p->queue = opt->queue + k;
        if (open_queue(p, opt, ports[0]->map_fd) < 0)
            return -1;
    }
    return 0;
}

/* === When a step fails: errors in words ===================================
 *
 * Each of these turns an errno that says little (EPERM, EINVAL, ENOBUFS,
 * EBUSY) into one line that names the object and says what to do; the
 * tests and labs grep these lines, so their words stay as they are.
 */

/* What to add to an EPERM: the capabilities each step needs
 * (bpf(2): CAP_BPF + CAP_NET_ADMIN for XDP programs and XSKMAPs since 5.8,
 * CAP_SYS_ADMIN before; netlink RTM_SETLINK: CAP_NET_ADMIN; socket(AF_XDP):
 * CAP_NET_RAW). */
static const char *perm_hint(int err)
{
    if (err != EPERM && err != EACCES)
        return "";
    if (geteuid() != 0)
        return ": not root; run as root, or give vhost-xdp the capabilities "
               "(setcap cap_net_admin,cap_bpf,cap_net_raw,cap_ipc_lock+ep vhost-xdp)";
    return ": root, but without CAP_NET_ADMIN + CAP_BPF + CAP_NET_RAW (a container or setpriv?)";
}

/* Why the driver's (native) XDP refused us, in words. */
static const char *native_xdp_hint(int err)
{
    switch (err) {
    case EOPNOTSUPP: return ": the driver has no native XDP";
    case ERANGE:     return ": MTU too large for XDP (veth: the peer's MTU)";
    case ENOSPC:     return ": veth needs at least as many RX queues as its peer has TX queues";
    case EBUSY:
    case EEXIST:     return ": another XDP program appeared on the interface";
    default:         return "";
    }
}

/* Number of RX queues the kernel has active (real_num_rx_queues): one
 * rx-N directory each in sysfs (Documentation/ABI/testing/sysfs-class-net-queues).
 * -1 if sysfs does not tell (then bind() will). */
static int count_rx_queues(const char *ifname)
{
    char path[64 + IF_NAMESIZE];
    snprintf(path, sizeof path, "/sys/class/net/%s/queues", ifname);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strncmp(e->d_name, "rx-", 3) == 0)
            n++;
    closedir(d);
    return n;
}

/* Step 1: the last queue asked for must exist.  Checked here, since bind()
 * would answer only EINVAL. */
static int check_queue_range(const struct nic_port *p, uint32_t last)
{
    int nqueues = count_rx_queues(p->ifname);
    if (nqueues > 0 && last >= (uint32_t)nqueues) {
        vx_log("%s: queue %u out of range: the interface has %d RX queue%s (0..%d; see `ethtool -l %s`)",
               p->ifname, last, nqueues, nqueues == 1 ? "" : "s", nqueues - 1, p->ifname);
        return -1;
    }
    return 0;
}

/* Step 2: BPF_PROG_LOAD refused the program (`a`, as load_program() sent
 * it).  Unless the refusal was for want of privilege, load it again with the
 * verifier's log on, to show why.  (Not the first time: the log costs time
 * and a buffer, and is empty on success.)  Ours takes a few hundred bytes;
 * 64 KiB is room to spare, static rather than on the stack. */
static void prog_load_failed(const struct nic_port *p, union bpf_attr *a)
{
    int err = errno;
    vx_log("%s: bpf(BPF_PROG_LOAD) rejected the XDP program: %s%s", p->ifname, strerror(err), perm_hint(err));
    if (err == EPERM || err == EACCES)
        return;
    static char log[65536];
    log[0] = '\0';
    a->log_level = 1;
    a->log_buf = ptr_to_u64(log);
    a->log_size = sizeof log;
    int fd = sys_bpf(BPF_PROG_LOAD, a);
    if (fd >= 0)
        close(fd);
    fprintf(stderr, "--- verifier log ---\n%s--- end of verifier log ---\n", log);
}

/* Step 4: XDP_UMEM_REG refused the UMEM.  Most often it is over
 * RLIMIT_MEMLOCK (the pinned pages count against it): say so, with the
 * limit and the ways to raise it. */
static void umem_reg_failed(const struct nic_port *p, int err)
{
    struct rlimit rl;
    getrlimit(RLIMIT_MEMLOCK, &rl);
    if (err == ENOBUFS || err == ENOMEM || err == EPERM)
        vx_log("%s: registering the UMEM (%llu MiB) failed: %s: it is locked memory and RLIMIT_MEMLOCK "
               "is %lld KiB; raise it (`ulimit -l unlimited`, LimitMEMLOCK= in systemd) or give the "
               "process CAP_IPC_LOCK", p->ifname, (unsigned long long)(p->umem_size >> 20),
               strerror(err), rl.rlim_cur == RLIM_INFINITY ? -1LL : (long long)(rl.rlim_cur >> 10));
    else
        vx_log("%s: XDP_UMEM_REG (%u frames of %u bytes) failed: %s", p->ifname, p->frame_count,
               p->frame_size, strerror(err));
}

/* Step 6: bind() failed with errno.  A socket closed a moment ago (our
 * previous run) keeps the queue busy until the kernel's deferred cleanup
 * runs: EBUSY for ~20 ms, so bind again every 10 ms for a while.  A second
 * is 50 times that, so a slow machine gets through, while a queue that
 * another process really holds is reported within a second.  Returns 0
 * once bound, or -1 after one line saying why not. */
#define BIND_EBUSY_RETRY_MS 1000

static int bind_retry(const struct nic_port *p, const struct sockaddr_xdp *sxdp, bool zerocopy)
{
    for (int waited_ms = 0;; waited_ms += 10) {
        int err = errno;
        if (err == EBUSY && waited_ms < BIND_EBUSY_RETRY_MS) {
            nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);     /* 10 ms */
            if (bind(p->xsk_fd, (const struct sockaddr *)sxdp, sizeof *sxdp) == 0)
                return 0;
            continue;
        }
        if (zerocopy && err == EOPNOTSUPP)
            vx_log("%s: the driver does not support AF_XDP zero-copy (%s; veth never does): "
                   "drop --zerocopy to use copy mode", p->ifname, strerror(err));
        else if (err == EBUSY)
            vx_log("%s: queue %u is taken by another AF_XDP socket (still EBUSY after %d ms)", p->ifname,
                   p->queue, BIND_EBUSY_RETRY_MS);
        else
            vx_log("%s: bind(AF_XDP, queue %u) failed: %s%s", p->ifname, p->queue, strerror(err),
                   err == EINVAL ? " (queue id out of range?)" : "");
        return -1;
    }
}

/* === TX checksums by the kernel: AF_XDP TX metadata (Linux 6.11+) ========
 *
 * A guest that negotiated VIRTIO_NET_F_CSUM sends TCP and UDP packets whose
 * checksum field holds only the pseudo-header's sum, with csum_start and
 * csum_offset saying where the rest is to be summed and stored (virtio 1.2
 * §5.1.6.2): the hardware's job.  offload.c can do it in software; since
 * Linux 6.8 an AF_XDP socket can also hand it to the kernel, per packet, in
 * a small struct written just before the packet in its UMEM frame
 * (Documentation/networking/xsk-tx-metadata.rst):
 *
 *      frame:  | struct xsk_tx_metadata (16 B) | packet ...
 *                                              ^ xdp_desc.addr
 *
 * with the descriptor's option XDP_TX_METADATA and the metadata's flag
 * XDP_TXMD_FLAGS_CHECKSUM: csum_start, csum_offset, counted from the
 * packet's first byte, the very meaning of virtio's two fields.
 *
 * Three facts decide when we use it:
 *   - the UMEM must be registered with tx_metadata_len (16) and, since Linux
 *     6.11, the flag XDP_UMEM_TX_METADATA_LEN; a kernel that does not know
 *     the flag refuses the registration with EINVAL, and we register again
 *     without it (6.8-6.10 took tx_metadata_len without the flag: we do not
 *     rely on them, so their checksums stay in software);
 *   - in copy mode (every veth, every driver without AF_XDP zero-copy) the
 *     kernel builds an skb from the frame and marks it CHECKSUM_PARTIAL at
 *     csum_start/csum_offset, as its own TCP stack would: a device with
 *     checksum offload completes it, the stack (validate_xmit_skb) does it in
 *     software for one without, and over a veth to a local peer nobody
 *     needs to (the peer's stack trusts a partial checksum that never left
 *     the machine);
 *   - in zero-copy mode the driver reads the metadata itself, and a driver
 *     that cannot checksum ignores the request: the packet would leave with
 *     a wrong checksum.  So with zero-copy we keep software checksums.
 * The log says which one runs (one line per queue).  --no-offloads makes
 * the question moot: without VIRTIO_NET_F_CSUM no packet asks for one.
 */

/* What include/uapi/linux/if_xdp.h has since 6.8/6.11; the build's own
 * headers may be older (Debian 12's are 6.1). */
#ifndef XDP_TX_METADATA
#define XDP_TX_METADATA          (1 << 1)      /* xdp_desc.options: metadata precedes the packet */
#endif
#define VX_UMEM_TX_METADATA_LEN  (1 << 2)      /* XDP_UMEM_TX_METADATA_LEN: tx_metadata_len is meant */
#define VX_TXMD_FLAGS_CHECKSUM   (1 << 1)      /* XDP_TXMD_FLAGS_CHECKSUM */
struct vx_umem_reg {                           /* struct xdp_umem_reg as of 6.8 */
    uint64_t addr, len;
    uint32_t chunk_size, headroom, flags, tx_metadata_len;
};
struct vx_tx_metadata {                        /* union xsk_tx_metadata, the request half */
    uint64_t flags;
    uint16_t csum_start, csum_offset;
    uint32_t pad;                              /* the union's other half is 8 bytes */
};
_Static_assert(sizeof(struct vx_umem_reg) == 32, "xdp_umem_reg as of Linux 6.8");
_Static_assert(sizeof(struct vx_tx_metadata) == 16, "xsk_tx_metadata: 16 bytes");

/* Register the UMEM as create_socket_and_umem() would, plus room for the
 * metadata.  0: registered, TX packets start tx_headroom into their frames;
 * -1: refused (an older kernel), nothing changed: register it plainly. */
static int umem_reg_tx_metadata(struct nic_port *p, struct xdp_umem_reg *reg)
{
    struct vx_umem_reg r = { .addr = reg->addr, .len = reg->len, .chunk_size = reg->chunk_size,
                             .headroom = reg->headroom, .flags = reg->flags | VX_UMEM_TX_METADATA_LEN,
                             .tx_metadata_len = sizeof(struct vx_tx_metadata) };
    if (setsockopt(p->xsk_fd, SOL_XDP, XDP_UMEM_REG, &r, sizeof r) < 0)
        return -1;
    p->tx_headroom = sizeof(struct vx_tx_metadata);
    return 0;
}

/* After bind: the kernel completes checksums in copy mode only (see above). */
static void tx_csum_decide(struct nic_port *p)
{
    p->tx_csum = p->tx_headroom && !p->zerocopy;
    if (p->tx_csum)
        vx_log("%s queue %u: TX checksums: completed by the kernel (AF_XDP TX metadata, copy mode)", p->ifname,
               p->queue);
    else
        vx_log("%s queue %u: TX checksums: completed in software by vhost-xdp (%s)", p->ifname, p->queue,
               p->tx_headroom ? "zero-copy: the driver might ignore the request"
                              : "this kernel has no AF_XDP TX metadata; Linux 6.11 has");
}

/* For pmd_loop.c: may offload.c leave this port's checksums partial? */
bool nic_tx_csum(const struct nic_port *p)
{
    return p->tx_csum;
}

/* The metadata of one packet that needs its checksum completed: offload.c
 * checked that csum_start + csum_offset + 2 lies inside the packet (the
 * kernel checks it again, and refuses the packet otherwise).  Returns the
 * descriptor's options. */
static uint32_t tx_metadata_csum(const struct vx_pkt *pkt)
{
    struct vx_tx_metadata *m = (struct vx_tx_metadata *)(pkt->data - sizeof *m);
    *m = (struct vx_tx_metadata){ .flags = VX_TXMD_FLAGS_CHECKSUM, .csum_start = pkt->hdr.csum_start,
                                  .csum_offset = pkt->hdr.csum_offset };
    return XDP_TX_METADATA;
}

/* === Instruments: the counters main.c reads, the kernel's own drops =======
 *
 * Two views of loss.  Ours (struct nic_stats, written by the poll thread
 * with vx_counter_add: see vhost_xdp.h, "Threads, atomics and counters"):
 * what the poll thread itself sees, such as a burst after which the kernel
 * held every frame we had offered it (rx_fill_empty: the next packet has
 * nowhere to go) or a poll with no free TX frame (tx_ring_full); main.c
 * prints them with --stats and at exit.  The kernel's (XDP_STATISTICS): packets it
 * dropped before we could see them, printed once at close if any.
 */

/* struct nic_port is this file's own: main.c reads the counters, the
 * mode's name and the queue id through these three. */
const struct nic_stats *nic_stats(const struct nic_port *p)
{
    return &p->stats;
}

uint32_t nic_queue(const struct nic_port *p)
{
    return p->queue;
}

const char *nic_mode_name(const struct nic_port *p)
{
    return p->mode_name;
}

/* The kernel's own drop counters, once, if anything was lost: drops that
 * happen in the kernel (RX ring full, no fill frame) never pass through
 * our code, so only XDP_STATISTICS can tell. */
static void log_kernel_drops(const struct nic_port *p)
{
    /* Zeroed: a kernel before 5.9 fills in only the first three counters. */
    struct xdp_statistics st = { 0 };
    socklen_t optlen = sizeof st;
    if (getsockopt(p->xsk_fd, SOL_XDP, XDP_STATISTICS, &st, &optlen) < 0)
        return;
    if (st.rx_dropped || st.rx_invalid_descs || st.tx_invalid_descs || st.rx_ring_full ||
        st.rx_fill_ring_empty_descs)
        vx_log("%s queue %u: the kernel dropped: rx %llu, rx ring full %llu, fill ring empty %llu, "
               "invalid descriptors rx %llu tx %llu", p->ifname, p->queue, (unsigned long long)st.rx_dropped,
               (unsigned long long)st.rx_ring_full, (unsigned long long)st.rx_fill_ring_empty_descs,
               (unsigned long long)st.rx_invalid_descs, (unsigned long long)st.tx_invalid_descs);
}

/* === Interrupt mode: what a sleeping poll thread needs from the port ===== */

/*
 * --pmd-mode adaptive (pmd_loop.c, "When there is nothing to do"): a poll
 * thread with nothing to do sleeps in poll() on its rings' kick eventfds and
 * on the AF_XDP socket of each NIC queue it owns.  An AF_XDP socket is
 * readable (POLLIN) when its RX ring holds a frame (the kernel's xsk_poll);
 * in zero-copy mode poll() is also how the kernel is told to refill from
 * the fill ring when it set NEED_WAKEUP (af_xdp.rst, "XDP_USE_NEED_WAKEUP":
 * "call poll()"), which veth in copy mode, all our tests have, never needs.
 */
int nic_poll_fd(const struct nic_port *p)
{
    return p->xsk_fd;
}

/* TX descriptors the kernel has not taken yet (an earlier kick hit EAGAIN,
 * or its 32-per-call limit): kicked once more here, and if some are still
 * there the thread must not sleep, or they would wait for the next packet.
 * (Copy mode sends within the kick, so this is nearly always false.) */
bool nic_tx_pending(struct nic_port *p)
{
    if (p->tx.cached_prod == __atomic_load_n(p->tx.consumer, __ATOMIC_ACQUIRE))
        return false;
    tx_kick(p);
    return p->tx.cached_prod != __atomic_load_n(p->tx.consumer, __ATOMIC_ACQUIRE);
}
