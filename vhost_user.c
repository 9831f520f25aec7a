/*
 * vhost_user.c - the control plane: the vhost-user protocol, backend side.
 *
 * Where it sits: before any packet moves, the frontend (QEMU for a VM, or
 * DPDK's virtio_user) connects to a unix socket and tells us, in messages,
 * everything the virtio device in the guest has agreed: features, where
 * guest memory is (as fds we mmap), where each ring is, and which eventfds
 * to use for kicks and interrupts.  When a ring is complete we hand it to a
 * poll-mode thread (pmd_loop.c) and from then on the data path runs without
 * us.  This file runs only on the main thread.
 *
 * Spec: QEMU docs/interop/vhost-user.rst ("Message Specification", "Ring
 * states", "Front-end message types").  What real frontends send, message by
 * message, as vhost-xdp --trace printed it: labs/traces/qemu-7.2.trace (a
 * Linux guest, boot to shutdown) and labs/traces/dpdk-22.11.trace (testpmd's
 * virtio_user, start to quit).  Reading one of them beside this file is the
 * quickest way in.
 *
 * FIRST READING, in this order (what a QEMU or DPDK guest needs on a split
 * ring with one queue pair):
 *   1. the wire format: header, payloads, fds;
 *   2. the message table: the index of the whole protocol, every message
 *      with its handler, wherever that handler lives;
 *   3. taking rings away from the poll threads and handing them back (the
 *      epoch hand-over: the one hard concurrency problem of the file);
 *   4. one handler per message, named after it;
 *   5. one message: check it, dispatch it, reply;
 *   6. the socket: server and client mode, disconnect.
 *
 * SECOND READING, after the line "Second reading", each under its banner:
 *   - the packed ring's position in GET/SET_VRING_BASE;
 *   - a frontend that comes back and resumes its session without SET_OWNER;
 *   - multiqueue: GET_QUEUE_NUM;
 *   - NET_SET_MTU, SEND_RARP, SET/GET_STATUS;
 *   - live migration: the dirty log (SET_LOG_BASE, SET_LOG_FD, LOG_ALL);
 *   - --trace: decoding each message into one line;
 *   - what no frontend may do to us (hang the control thread on a message
 *     it sends slowly or a reply it never reads, give us an fd that blocks,
 *     shrink guest memory under us), and how each is refused: the reading
 *     of the socket itself lives there, since it is all about not waiting.
 * The first reading calls into these through one named function each.
 */
#include "vhost_xdp.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

/* === 1. The wire format ================================================== */

/* Every message: a 12-byte header, then `size` bytes of payload.  Any fds
 * ride as SCM_RIGHTS ancillary data with the header.  Host byte order: both
 * ends are on the same machine (vhost-user.rst "Message Specification"). */
struct vu_header {
    uint32_t request;           /* the message's number: its row in vu_requests[] */
    uint32_t flags;             /* version, REPLY, NEED_REPLY (below) */
    uint32_t size;              /* payload bytes after the header, 0 if none */
};
/* A reply must carry flags = VERSION|REPLY (0x5) exactly: QEMU checks the
 * whole word and otherwise fails with "Failed to read msg header. Flags
 * 0x... instead of 0x5.".  NEED_REPLY is the frontend asking for a REPLY_ACK
 * (section 5, vu_dispatch_one). */
#define VHOST_USER_VERSION        0x1       /* flags bits 0-1 */
#define VHOST_USER_REPLY_MASK     (1u << 2)
#define VHOST_USER_NEED_REPLY     (1u << 3)
/* The most fds one message may carry: SET_MEM_TABLE's one per region, at
 * most VX_MAX_REGIONS (the spec's VHOST_MEMORY_BASELINE_NREGIONS, 8). */
#define VHOST_USER_MAX_FDS        8

/* SET_VRING_KICK/CALL/ERR payload: ring index in bits 0-7, bit 8 = no fd. */
#define VHOST_USER_VRING_IDX_MASK 0xffu
#define VHOST_USER_VRING_NOFD     (1u << 8)

/* Protocol features (GET/SET_PROTOCOL_FEATURES) we offer, by their bit
 * numbers in vhost-user.rst "Protocol features".  Each one allows a message
 * (or, for REPLY_ACK, a reply) that the frontend may not send without it. */
#define VHOST_USER_PROTOCOL_F_MQ        0
#define VHOST_USER_PROTOCOL_F_LOG_SHMFD 1   /* live migration's log as an fd (second reading) */
#define VHOST_USER_PROTOCOL_F_RARP      2
#define VHOST_USER_PROTOCOL_F_REPLY_ACK 3
#define VHOST_USER_PROTOCOL_F_NET_MTU   4
#define VHOST_USER_PROTOCOL_F_STATUS    16

struct vu_vring_state {         /* SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE */
    uint32_t index;             /* the ring: 2k = RX of pair k, 2k+1 = TX */
    uint32_t num;               /* the ring size (NUM), where to start (BASE), 0/1 (ENABLE) */
};

/* The spec's order is desc, used, avail ("Vring address description"), not
 * the order the areas have in memory: read the fields by name. */
struct vu_vring_addr {          /* SET_VRING_ADDR: frontend virtual addresses */
    uint32_t index;
    uint32_t flags;             /* bit 0, VHOST_VRING_F_LOG: log used ring writes (migration) */
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
};

struct vu_memory_region {       /* one region of SET_MEM_TABLE (vx_mem_region says more) */
    uint64_t guest_phys_addr;   /* where the guest sees it */
    uint64_t memory_size;
    uint64_t userspace_addr;    /* where the frontend process has it mapped */
    uint64_t mmap_offset;       /* where in the region's fd it starts */
};

struct vu_memory {              /* SET_MEM_TABLE */
    uint32_t nregions;
    uint32_t padding;           /* in the spec's layout: keeps the regions 8-byte aligned */
    struct vu_memory_region regions[VX_MAX_REGIONS];
};

struct vu_log {                 /* SET_LOG_BASE, with the log's fd (second reading) */
    uint64_t mmap_size;         /* bytes of log */
    uint64_t mmap_offset;       /* where in the fd it starts */
};

/* Every payload we accept, in one buffer as large as the largest of them
 * (SET_MEM_TABLE with 8 regions: 8 + 8 * 32 = 264 bytes).  A message that
 * says it is larger is refused before its payload is read (vu_io_receive). */
union vu_payload {
    uint64_t u64;
    struct vu_vring_state state;
    struct vu_vring_addr addr;
    struct vu_memory memory;
    struct vu_log log;
};

/* One message as read, with the fds that came with it.  The fds are ours
 * to close until a handler moves one into a ring (and sets nfds to 0). */
struct vu_msg {
    struct vu_header hdr;
    union vu_payload payload;
    int fds[VHOST_USER_MAX_FDS];
    int nfds;
    /* The ring a SET_VRING_* or GET_VRING_BASE names, found and checked by
     * the dispatcher (vu_ring) before its handler runs; NULL for the others. */
    struct vx_vring *ring;
};

/* === 2. The message table ================================================ */

/* What a payload holds: decides its size, its fds and how --trace prints it. */
enum vu_payload_kind {
    P_NONE,         /* no payload */
    P_U64,          /* a number */
    P_FEATURES,     /* u64 virtio feature bits */
    P_PROTOCOL,     /* u64 protocol feature bits */
    P_STATE,        /* struct vu_vring_state */
    P_ADDR,         /* struct vu_vring_addr */
    P_MEM,          /* struct vu_memory, one fd per region */
    P_RING_FD,      /* u64 index | NOFD, one fd unless NOFD */
    P_ACK,          /* u64 REPLY_ACK status, in replies only: 0 = success */
    P_MAC,          /* u64 whose first 6 bytes are a MAC address (SEND_RARP) */
    P_LOG,          /* struct vu_log and one fd (SET_LOG_BASE) */
    P_FD,           /* no payload, one fd (SET_LOG_FD) */
};

/* What a handler returns: done; done, send the reply it wrote; refused, reset
 * the connection (a frontend that broke the protocol); or refused, but the
 * connection goes on (a well-formed request for a value we cannot do, such
 * as an MTU too large: REPLY_ACK says 1 and the frontend decides). */
enum { VU_OK, VU_REPLY, VU_FAIL, VU_NACK };

struct vu_request {
    const char *name;
    int (*handler)(struct vx_dev *dev, struct vu_msg *msg);
    enum vu_payload_kind payload;   /* what the frontend sends */
    enum vu_payload_kind reply;     /* what we answer (P_NONE: nothing, except REPLY_ACK) */
    bool needs_owner;               /* the owner's: before SET_OWNER, makes the sender the owner */
    bool changes_rings;             /* take the rings from the PMDs first (section 3) */
};

/* One handler per message, named after it.  The ones a split ring with one
 * queue pair needs are defined in section 4, in table order: */
static int vu_get_features(struct vx_dev *, struct vu_msg *);
static int vu_set_features(struct vx_dev *, struct vu_msg *);
static int vu_set_owner(struct vx_dev *, struct vu_msg *);
static int vu_reset_owner(struct vx_dev *, struct vu_msg *);
static int vu_set_mem_table(struct vx_dev *, struct vu_msg *);
static int vu_set_vring_num(struct vx_dev *, struct vu_msg *);
static int vu_set_vring_addr(struct vx_dev *, struct vu_msg *);
static int vu_set_vring_base(struct vx_dev *, struct vu_msg *);
static int vu_get_vring_base(struct vx_dev *, struct vu_msg *);
static int vu_set_vring_kick(struct vx_dev *, struct vu_msg *);
static int vu_set_vring_call(struct vx_dev *, struct vu_msg *);
static int vu_set_vring_err(struct vx_dev *, struct vu_msg *);
static int vu_get_protocol_features(struct vx_dev *, struct vu_msg *);
static int vu_set_protocol_features(struct vx_dev *, struct vu_msg *);
static int vu_set_vring_enable(struct vx_dev *, struct vu_msg *);
/* The others are second reading, each under its banner after the marker:
 * "Multiqueue", "NET_SET_MTU, SEND_RARP, SET/GET_STATUS" and "Live
 * migration: dirty-page logging". */
static int vu_get_queue_num(struct vx_dev *, struct vu_msg *);
static int vu_send_rarp(struct vx_dev *, struct vu_msg *);
static int vu_net_set_mtu(struct vx_dev *, struct vu_msg *);
static int vu_set_status(struct vx_dev *, struct vu_msg *);
static int vu_get_status(struct vx_dev *, struct vu_msg *);
static int vu_set_log_base(struct vx_dev *, struct vu_msg *);
static int vu_set_log_fd(struct vx_dev *, struct vu_msg *);

/*
 * The protocol at a glance, indexed by request number: every front-end
 * message of vhost-user.rst ("Front-end message types"), named as the spec
 * names it without the VHOST_USER_ prefix.  A request with no handler here
 * is refused and the connection reset: we do not offer the features
 * (protocol CONFIG, BACKEND_REQ, ...) under which a frontend would send
 * it.  It is listed all the same, so that --trace and the refusal name it.
 *
 * The "owner" column is false for the messages QEMU sends *before*
 * SET_OWNER: at start-up it asks GET_FEATURES, GET/SET_PROTOCOL_FEATURES and
 * GET_QUEUE_NUM first (the first lines of labs/traces/qemu-7.2.trace).  One
 * marked "owner" that comes before SET_OWNER is not refused: DPDK's
 * virtio_user resumes its session so when it reconnects, and the message
 * makes it the owner (second reading, "A frontend that comes back").  The
 * "rings" column is true for every message that changes something a PMD
 * thread reads while it runs a ring: the memory table, the features (they
 * fix the ring layout and the header length), a ring's size, addresses,
 * base, eventfds or enabled bit.  SET_VRING_ERR is not among them: no PMD
 * ever writes the error fd.
 *
 * A QEMU 7.2 session in outline (labs/traces/qemu-7.2.trace has every line):
 *   connect:   GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
 *              SET_OWNER, GET_FEATURES, SET_VRING_CALL and SET_VRING_ERR
 *              per ring, SET_VRING_ENABLE 1 (the rings do not exist yet);
 *   DRIVER_OK: SET_FEATURES, SET_STATUS 8, SET_MEM_TABLE, then per ring
 *              NUM, BASE, ADDR, KICK (the ring starts), a new CALL;
 *              SET_STATUS 15;
 *   stop:      SET_STATUS 0, GET_VRING_BASE per ring (the ring stops).
 * DPDK 22.11's virtio_user (labs/traces/dpdk-22.11.trace) begins with
 * SET_OWNER, sends the call fds before SET_FEATURES, starts each ring on
 * SET_VRING_ENABLE 1 after its KICK, and stops with SET_VRING_ENABLE 0 and
 * then GET_VRING_BASE.  The same handlers serve both orders: a ring runs
 * once it has everything it needs (vu_ring_can_run), whatever came last.
 */
static const struct vu_request vu_requests[] = {
    /*  #                            name                    handler                   payload     reply       owner  rings */
    [1]  = { "GET_FEATURES",          vu_get_features,          P_NONE,     P_FEATURES, false, false },
    [2]  = { "SET_FEATURES",          vu_set_features,          P_FEATURES, P_NONE,     true,  true  },
    [3]  = { "SET_OWNER",             vu_set_owner,             P_NONE,     P_NONE,     false, false },
    [4]  = { "RESET_OWNER",           vu_reset_owner,           P_NONE,     P_NONE,     false, true  },
    [5]  = { "SET_MEM_TABLE",         vu_set_mem_table,         P_MEM,      P_NONE,     true,  true  },
    [6]  = { "SET_LOG_BASE",          vu_set_log_base,          P_LOG,      P_U64,      true,  true  },
    [7]  = { "SET_LOG_FD",            vu_set_log_fd,            P_FD,       P_NONE,     true,  false },
    [8]  = { "SET_VRING_NUM",         vu_set_vring_num,         P_STATE,    P_NONE,     true,  true  },
    [9]  = { "SET_VRING_ADDR",        vu_set_vring_addr,        P_ADDR,     P_NONE,     true,  true  },
    [10] = { "SET_VRING_BASE",        vu_set_vring_base,        P_STATE,    P_NONE,     true,  true  },
    [11] = { "GET_VRING_BASE",        vu_get_vring_base,        P_STATE,    P_STATE,    true,  true  },
    [12] = { "SET_VRING_KICK",        vu_set_vring_kick,        P_RING_FD,  P_NONE,     true,  true  },
    [13] = { "SET_VRING_CALL",        vu_set_vring_call,        P_RING_FD,  P_NONE,     true,  true  },
    [14] = { "SET_VRING_ERR",         vu_set_vring_err,         P_RING_FD,  P_NONE,     true,  false },
    [15] = { "GET_PROTOCOL_FEATURES", vu_get_protocol_features, P_NONE,     P_PROTOCOL, false, false },
    [16] = { "SET_PROTOCOL_FEATURES", vu_set_protocol_features, P_PROTOCOL, P_NONE,     false, false },
    [17] = { "GET_QUEUE_NUM",         vu_get_queue_num,         P_NONE,     P_U64,      false, false },
    [18] = { "SET_VRING_ENABLE",      vu_set_vring_enable,      P_STATE,    P_NONE,     true,  true  },
    [19] = { "SEND_RARP",             vu_send_rarp,             P_MAC,      P_NONE,     true,  false },
    [20] = { "NET_SET_MTU",           vu_net_set_mtu,           P_U64,      P_NONE,     true,  false },
    [21] = { "SET_BACKEND_REQ_FD",    NULL,                     P_NONE,     P_NONE,     true,  false },
    [22] = { "IOTLB_MSG",             NULL,                     P_NONE,     P_NONE,     true,  false },
    [23] = { "SET_VRING_ENDIAN",      NULL,                     P_NONE,     P_NONE,     true,  false },
    [24] = { "GET_CONFIG",            NULL,                     P_NONE,     P_NONE,     false, false },
    [25] = { "SET_CONFIG",            NULL,                     P_NONE,     P_NONE,     false, false },
    [26] = { "CREATE_CRYPTO_SESSION", NULL,                     P_NONE,     P_NONE,     true,  false },
    [27] = { "CLOSE_CRYPTO_SESSION",  NULL,                     P_NONE,     P_NONE,     true,  false },
    [28] = { "POSTCOPY_ADVISE",       NULL,                     P_NONE,     P_NONE,     true,  false },
    [29] = { "POSTCOPY_LISTEN",       NULL,                     P_NONE,     P_NONE,     true,  false },
    [30] = { "POSTCOPY_END",          NULL,                     P_NONE,     P_NONE,     true,  false },
    [31] = { "GET_INFLIGHT_FD",       NULL,                     P_NONE,     P_NONE,     true,  false },
    [32] = { "SET_INFLIGHT_FD",       NULL,                     P_NONE,     P_NONE,     true,  false },
    [33] = { "GPU_SET_SOCKET",        NULL,                     P_NONE,     P_NONE,     true,  false },
    [34] = { "RESET_DEVICE",          NULL,                     P_NONE,     P_NONE,     false, false },
    [35] = { "VRING_KICK",            NULL,                     P_NONE,     P_NONE,     true,  false },
    [36] = { "GET_MAX_MEM_SLOTS",     NULL,                     P_NONE,     P_NONE,     false, false },
    [37] = { "ADD_MEM_REG",           NULL,                     P_NONE,     P_NONE,     true,  false },
    [38] = { "REM_MEM_REG",           NULL,                     P_NONE,     P_NONE,     true,  false },
    [39] = { "SET_STATUS",            vu_set_status,            P_U64,      P_NONE,     false, false },
    [40] = { "GET_STATUS",            vu_get_status,            P_NONE,     P_U64,      false, false },
    [41] = { "GET_SHARED_OBJECT",     NULL,                     P_NONE,     P_NONE,     true,  false },
    [42] = { "SET_DEVICE_STATE_FD",   NULL,                     P_NONE,     P_NONE,     true,  false },
    [43] = { "CHECK_DEVICE_STATE",    NULL,                     P_NONE,     P_NONE,     true,  false },
};
#define VU_NREQUESTS (sizeof vu_requests / sizeof vu_requests[0])

/* The frontend may send any u32 as a request: past the end of the table,
 * or on a gap in it (such as 0), the name is UNKNOWN. */
static const char *vu_request_name(uint32_t request)
{
    return request < VU_NREQUESTS && vu_requests[request].name ? vu_requests[request].name : "UNKNOWN";
}

/*
 * What we offer.  VERSION_1 and PROTOCOL_FEATURES are what QEMU 7.2 needs
 * (without bit 30 it falls back to userspace virtio); INDIRECT_DESC keeps a
 * Linux guest's bulk TX fast; EVENT_IDX lets it tell us when to interrupt.
 * MRG_RXBUF lets one received packet span several RX buffers (virtio 1.2
 * §5.1.6.3.1); DPDK virtio_user and a Linux guest both take it by default
 * (the num_buffers field of the net header then counts the pieces).  MTU
 * makes the device's `mtu` config field valid, which QEMU fills from
 * host_mtu=N and tells us in NET_SET_MTU.  MQ only when --queues offers
 * more than one pair.
 * IN_ORDER (§2.7.9, §2.8.8) promises what we do anyway, use buffers in the
 * order they came, and lets a TX burst go back in one used entry
 * (virtqueue.c); DPDK virtio_user takes it by default (in_order=1), QEMU 7.2
 * neither offers it to its guest nor passes it on to us.
 *
 * The offloads (offload.c, second reading), unless --no-offloads: CSUM and
 * HOST_TSO4/6 + HOST_ECN let the guest send partial checksums and TCP
 * packets of up to 64 KiB, which we pass on to a guest that negotiated
 * GUEST_CSUM and GUEST_TSO4/6 (+GUEST_ECN), and otherwise complete and cut
 * ourselves, as the NIC always needs.  GUEST_ANNOUNCE (not an offload, so
 * offered either way): after a migration the guest announces itself (virtio
 * 1.2 §5.1.6.5.4) and QEMU then sends no SEND_RARP; QEMU handles the
 * control queue that needs, a backend only offers the bit.  UFO and USO
 * (UDP segmentation) are not offered.
 * LOG_ALL (bit 26, a vhost bit, not a virtio one) lets the guest live-
 * migrate: while it is negotiated we mark every page we write in a log
 * shared with QEMU (second reading, "Live migration: dirty-page logging");
 * without it QEMU refuses to migrate ("vhost lacks VHOST_F_LOG_ALL").
 * Not offered, and why: CTRL_VQ and the rest of the control features are
 * handled inside QEMU and never reach a backend.  ACCESS_PLATFORM (IOMMU_PLATFORM) would turn every
 * address in the rings into an I/O virtual address, translated by tables
 * the frontend sends in IOTLB_MSG and that we would ask it for over a
 * channel of our own (BACKEND_REQ; vhost-user.rst "IOMMU support").
 * It is not needed to forward packets.  PROTOCOL_F_STATUS is offered: see vu_set_status for the
 * QEMU 7.2 bug around it and why it does not bite us.
 */
static uint64_t vu_offered_features(const struct vx_dev *dev)
{
    uint64_t f = (1ull << VIRTIO_F_VERSION_1) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES) |
                 (1ull << VIRTIO_NET_F_MRG_RXBUF) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
                 (1ull << VIRTIO_RING_F_EVENT_IDX) | (1ull << VIRTIO_NET_F_MTU) |
                 (1ull << VIRTIO_F_RING_PACKED) |   /* the §2.8 layout, if the frontend wants it */
                 (1ull << VIRTIO_F_IN_ORDER) | (1ull << VIRTIO_NET_F_GUEST_ANNOUNCE) |
                 (1ull << VHOST_F_LOG_ALL);     /* live migration (second reading) */
    if (dev->queue_pairs > 1)
        f |= 1ull << VIRTIO_NET_F_MQ;
    if (!dev->no_offloads)
        f |= (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_HOST_TSO4) | (1ull << VIRTIO_NET_F_HOST_TSO6) |
             (1ull << VIRTIO_NET_F_HOST_ECN) | (1ull << VIRTIO_NET_F_GUEST_CSUM) |
             (1ull << VIRTIO_NET_F_GUEST_TSO4) | (1ull << VIRTIO_NET_F_GUEST_TSO6) | (1ull << VIRTIO_NET_F_GUEST_ECN);
    return f;
}

static const uint64_t vu_offered_protocol_features =
    (1ull << VHOST_USER_PROTOCOL_F_MQ) | (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |
    (1ull << VHOST_USER_PROTOCOL_F_RARP) | (1ull << VHOST_USER_PROTOCOL_F_NET_MTU) |
    (1ull << VHOST_USER_PROTOCOL_F_STATUS) | (1ull << VHOST_USER_PROTOCOL_F_LOG_SHMFD);

/* Everything this file keeps about a device lives in its struct vx_dev
 * (options, listening socket, connection), none in file statics: main.c
 * may serve two devices (VM-to-VM), each with its own socket. */

/* === 3. Taking rings away ================================================ */

/*
 * The one hard concurrency problem.  A PMD thread reads a ring's fields and
 * guest memory with no lock.  Before the control thread changes a ring, or
 * unmaps the memory a ring lives in, it must be sure no PMD is still inside
 * that ring.  So:
 *
 *   1. clear `ready` on the rings the message changes (seq_cst store);
 *   2. pmd_quiesce(): wait until every PMD thread has finished the loop
 *      iteration it was in; any later iteration sees ready == false;
 *   3. change what the message says to change;
 *   4. vu_rings_resume(): for every ring that is complete, attach it to
 *      guest memory again and set `ready` (a release: all the fields we wrote
 *      are visible to the PMD that sees ready == true).
 *
 * Step 2 is an epoch hand-over.  Each PMD thread counts the loop iterations
 * it has finished (its epoch, pmd_loop.c) and tests a ring's `ready` once per
 * iteration before it touches the ring.  pmd_quiesce() notes every thread's
 * epoch and waits until each has moved on: an iteration that began before
 * step 1 has then ended, and every later one has seen ready == false.  It
 * is the grace period of the kernel's RCU, with the end of an iteration as
 * the quiescent state.  Why not a lock: the PMD would take it for every
 * burst, millions of times a second, to protect against a message that
 * comes a few times per guest boot; this way the data path pays one load of
 * a flag that stays true, and the control thread pays the wait.
 *
 * The dispatcher does 1-2 before, and 4 after, every message whose table
 * entry says changes_rings.  It costs a few microseconds per such message,
 * which only arrive at start, stop and reconfiguration.  A message about one
 * ring (SET_VRING_*, GET_VRING_BASE) stops only that ring: stopping the
 * others too would make their PMD drop the burst it holds for a moment (TX
 * taken, RX not ready), for nothing.  SET_MEM_TABLE, SET_FEATURES and
 * RESET_OWNER concern every ring, and stop them all.
 */
#define VU_ALL_RINGS UINT64_MAX     /* a bit per ring: every ring */

/* Second reading ("What no frontend may do to us", rule 4): vq_attach()
 * guarded against a fault in guest memory; and, while a live migration
 * logs, the ring's log set up first ("Live migration"). */
static int vu_attach_guarded(struct vx_dev *dev, struct vx_vring *vr);
/* Second reading ("--trace"): a line when a ring starts, stops or is
 * enabled, at the --trace level that asks for it; nothing otherwise. */
enum vu_ring_event { VU_RING_STARTED, VU_RING_STOPPED, VU_RING_DROPPED, VU_RING_ENABLE };
static void vu_trace_ring(const struct vx_dev *dev, const struct vx_vring *vr, enum vu_ring_event event);

/* Steps 1 and 2.  The stores are seq_cst, not merely release: each must be
 * visible before pmd_quiesce() reads the PMDs' epochs.  A store followed by
 * a load is the one reordering x86 performs; let the epoch read pass the
 * store and a PMD could begin one more iteration that still sees
 * ready == true after we have already taken its epoch, and then be inside
 * the ring while we change it. */
static bool vu_rings_stop(struct vx_dev *dev, uint64_t rings)
{
    bool any = false;
    for (uint32_t i = 0; i < 2 * dev->queue_pairs; i++) {
        if ((rings & (1ull << i)) && __atomic_load_n(&dev->vrings[i].ready, __ATOMIC_SEQ_CST)) {
            __atomic_store_n(&dev->vrings[i].ready, false, __ATOMIC_SEQ_CST);
            any = true;
        }
    }
    /* pmd_quiesce() fails only while shutting down, with a PMD that did not
     * finish its iteration in time (pmd_loop.c, "Stuck threads"): it may
     * still be inside the rings, so the caller must leave them alone. */
    return !any || pmd_quiesce();
}

/* Ring states (vhost-user.rst "Ring states"): a ring is *started* once it
 * has a kick (SET_VRING_KICK) until GET_VRING_BASE; with PROTOCOL_FEATURES
 * negotiated it also needs SET_VRING_ENABLE(1) to be *enabled*; without, a
 * started ring is enabled. */
/* Concretely: guest memory is mapped (SET_MEM_TABLE), the ring has a size
 * (SET_VRING_NUM) and addresses (SET_VRING_ADDR), it was kicked
 * (SET_VRING_KICK) and, with PROTOCOL_FEATURES, enabled.  SET_VRING_BASE is
 * not waited for: its absence means "start at 0". */
static bool vu_ring_can_run(const struct vx_dev *dev, const struct vx_vring *vr)
{
    bool need_enable = dev->features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES);
    return dev->mem.nregions > 0 && vr->num > 0 && vr->addr_set && vr->kick_received &&
           (vr->enabled || !need_enable);
}

/* Step 4, after every message that changes rings.  Only the rings of the
 * queue pairs we offered are looked at.  A ring whose settings have not
 * changed since it last ran (`attached`) keeps what vq_attach() worked out;
 * every handler that changes a setting clears `attached`, so the ring is
 * translated and checked again.  Returns -1 if a ring that should start
 * cannot (its areas are outside guest memory or misaligned): the message
 * that started it is refused. */
static int vu_rings_resume(struct vx_dev *dev)
{
    int ret = 0;
    for (uint32_t i = 0; i < 2 * dev->queue_pairs; i++) {
        struct vx_vring *vr = &dev->vrings[i];
        if (!vu_ring_can_run(dev, vr))
            continue;
        if (!vr->attached) {
            /* vq_attach reads and writes the ring: guarded against a guest
             * memory fault (second reading). */
            if (vu_attach_guarded(dev, vr) < 0) {
                ret = -1;   /* logged; the ring stays stopped */
                continue;
            }
            vr->attached = true;
            vu_trace_ring(dev, vr, VU_RING_STARTED);
        }
        /* Release: the PMD that loads ready == true sees every field above. */
        __atomic_store_n(&vr->ready, true, __ATOMIC_RELEASE);
    }
    pmd_wake_sleepers();    /* --pmd-mode adaptive: a thread asleep must see the new rings */
    return ret;
}

/* === 4. The handlers ===================================================== */

/*
 * What a handler may count on when it runs (the dispatcher, section 5, has
 * seen to it): the message is well formed for its request (size, fds,
 * version); the connection has an owner where the table says so; msg->ring
 * is the ring it names, checked; and if the table says "rings", that ring
 * (or every ring) has been taken away from the poll threads.  So a handler only says
 * what the message means.  It returns VU_OK, VU_REPLY after writing its
 * reply into msg->payload, VU_FAIL (logged) to reset the connection, or
 * VU_NACK.  First the helpers they share; then the handlers in table order.
 */

/* Second-reading helpers that the handlers below call. */
static int vu_take_eventfd(struct vu_msg *msg, const char *what, int *slot);   /* "What no frontend ...", rule 3 */
static void vu_set_packed_base(struct vx_vring *vr, uint32_t base);             /* "The packed ring" */
static uint32_t vu_packed_base(const struct vx_vring *vr);                      /* "The packed ring" */
static void vu_log_unmap(struct vx_dev *dev);                                   /* "Live migration" */
static int vu_log_ring_addr(struct vx_vring *vr, const struct vu_vring_addr *a); /* "Live migration" */
static void vu_log_say_toggled(const struct vx_dev *dev, uint64_t features);   /* "Live migration" */

/* The ring a message names, or NULL (logged) if there is no such ring.
 * The index sits in the payload's first field: vu_vring_state and
 * vu_vring_addr start with it, the eventfd messages carry it in bits 0-7.
 * vrings[] has room for VX_MAX_VRINGS, but a frontend may only name the
 * rings of the queue pairs we offered in GET_QUEUE_NUM (--queues): the PMD
 * threads poll no others, so a ring beyond them would never run.  The
 * dispatcher calls this once for every message about one ring, so each
 * handler gets a ring it may use (msg->ring) and no handler repeats the
 * check.  The rest of vrings[] stays as vu_init() left it, so every loop
 * over a device's rings stops at 2 * queue_pairs too (a reset, which every
 * refused message causes, then costs what the device has, not 16 rings). */
static struct vx_vring *vu_ring(struct vx_dev *dev, const struct vu_request *req, const union vu_payload *p)
{
    uint32_t index = req->payload == P_RING_FD ? (uint32_t)(p->u64 & VHOST_USER_VRING_IDX_MASK)
                   : req->payload == P_STATE ? p->state.index : p->addr.index;
    if (index >= 2 * dev->queue_pairs) {
        vx_log("%s: ring index %u out of range (%u queue pairs = %u rings)", req->name, index,
               dev->queue_pairs, 2 * dev->queue_pairs);
        return NULL;
    }
    return &dev->vrings[index];
}

/* SET_FEATURES and SET_PROTOCOL_FEATURES: may `bits` be accepted?  Not if
 * it has a bit we never offered: the frontend would then run the device in
 * a way we cannot (logged; the caller refuses, and the connection resets). */
static bool vu_only_offered(const char *what, uint64_t bits, uint64_t offered)
{
    uint64_t extra = bits & ~offered;
    if (extra)
        vx_log("%s: 0x%" PRIx64 " has bits we never offered (0x%" PRIx64 ")", what, bits, extra);
    return extra == 0;
}

/* Every fd this file holds (the connection, the listening socket, a ring's
 * kick, call and err eventfds) is -1 when there is none, never 0: fd 0 is
 * stdin (vu_init).  So one helper closes any of them, once. */
static void vu_close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Our mappings go; the guest's memory itself is the frontend's and stays.
 * Callers first take every ring away, since the PMDs read through these. */
static void vu_unmap_memory(struct vx_mem *mem)
{
    for (uint32_t i = 0; i < mem->nregions; i++)
        munmap(mem->regions[i].mmap_addr, mem->regions[i].mmap_size);
    memset(mem, 0, sizeof *mem);
}

/* A ring as no frontend has set it up yet (vu_init, and every reset):
 * no eventfds; both packed wrap counters at 1 (virtio 1.2 §2.8.1:
 * SET_VRING_BASE normally says so, but a frontend that skips it must not
 * find a ring that can never start); position slot 0, wrap 1, checked
 * against the ring like any the frontend sends (packed). */
static void vu_ring_fresh(struct vx_vring *vr, uint32_t index)
{
    vr->index = index;
    vr->kick_fd = vr->call_fd = vr->err_fd = -1;
    vr->avail_wrap_counter = vr->used_wrap_counter = 1;
    vr->base_from_frontend = true;
}

/* Back to the state of a fresh connection: rings forgotten (their counters
 * kept: --stats is for the life of the process), memory unmapped. */
static void vu_reset_device(struct vx_dev *dev)
{
    if (!vu_rings_stop(dev, VU_ALL_RINGS)) {
        /* Shutting down, and a poll thread did not finish its iteration
         * (never scheduled, or stuck in a system call): it may still be in
         * a ring, so the memory and the eventfds stay; the exit takes them. */
        vx_log("%s: rings not taken back from the poll threads in time: guest memory left mapped until exit",
               dev->opt.socket_path);
        return;
    }
    /* The rings are ours now: a fault a poll thread reported is dealt with. */
    __atomic_store_n(&dev->mem_fault, 0, __ATOMIC_SEQ_CST);
    /* Only the rings of the queue pairs we offered: no other was touched (vu_ring). */
    for (uint32_t i = 0; i < 2 * dev->queue_pairs; i++) {
        struct vx_vring *vr = &dev->vrings[i];
        struct vx_ring_stats stats = vr->stats;
        uint32_t calls_dropped = vr->calls_dropped;     /* a counter too, kept like stats */
        uint64_t log_marks = vr->log_marks;             /* and live migration's */
        vu_close_fd(&vr->kick_fd);
        vu_close_fd(&vr->call_fd);
        vu_close_fd(&vr->err_fd);
        memset(vr, 0, sizeof *vr);
        vu_ring_fresh(vr, i);
        vr->stats = stats;
        vr->calls_dropped = calls_dropped;
        vr->log_marks = log_marks;
    }
    vu_unmap_memory(&dev->mem);
    vu_log_unmap(dev);          /* live migration's log, if any (second reading) */
    dev->features = 0;
    dev->protocol_features = 0;
    dev->owner_set = false;
    dev->status = 0;
    __atomic_store_n(&dev->mtu, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&dev->rarp_request, 0, __ATOMIC_SEQ_CST);    /* a RARP for a guest that has gone is not sent */
}

/* GET_FEATURES: the virtio feature bits we can do, plus bit 30
 * (VHOST_USER_F_PROTOCOL_FEATURES), which is not a virtio bit but says we
 * speak the protocol extensions.  QEMU intersects this with what the guest
 * driver accepts; DPDK virtio_user with its devargs.  QEMU asks at
 * connection time, before SET_OWNER, and again after it (and once more per
 * queue pair with multiqueue); DPDK asks once, right after SET_OWNER.
 * Nothing changes here, so asking twice is harmless. */
static int vu_get_features(struct vx_dev *dev, struct vu_msg *msg)
{
    msg->payload.u64 = vu_offered_features(dev);
    return VU_REPLY;
}

/* SET_FEATURES: what the driver accepted.  It decides the ring format and
 * the net header length, so every ring is re-attached before it runs again.
 * QEMU sends it once per start, after the guest's FEATURES_OK, with bit 30
 * set when PROTOCOL_FEATURES is in use (that is how we learn that rings
 * start disabled: vu_ring_can_run).  DPDK virtio_user sends it after it
 * has set every ring's call fd.  A bit we never offered means the frontend
 * would run the rings in a way we cannot: refused, connection reset. */
static int vu_set_features(struct vx_dev *dev, struct vu_msg *msg)
{
    if (!vu_only_offered("SET_FEATURES", msg->payload.u64, vu_offered_features(dev)))
        return VU_FAIL;
    vu_log_say_toggled(dev, msg->payload.u64);     /* live migration: a line when LOG_ALL changes */
    dev->features = msg->payload.u64;
    for (uint32_t i = 0; i < 2 * dev->queue_pairs; i++)
        dev->vrings[i].attached = false;    /* header length may change */
    return VU_OK;
}

/* SET_OWNER: "this connection now owns the device", the spec's "session
 * start" flag.  QEMU sends it after the feature and queue questions; DPDK
 * virtio_user as its very first message (and never again on a connection
 * that resumes its session: second reading, "A frontend that comes back").
 * Nothing to do but remember it. */
static int vu_set_owner(struct vx_dev *dev, struct vu_msg *msg)
{
    (void)msg;
    dev->owner_set = true;
    return VU_OK;
}

/* RESET_OWNER: deprecated in vhost-user.rst.  It once meant "disable all
 * rings"; the spec now recommends that a backend ignore it or do just
 * that, and warns that also discarding the connection's state, as some
 * backends did, leads to bugs.  We do discard it all (rings, memory,
 * features, SET_OWNER), back to a fresh connection.  Neither QEMU 7.2 nor
 * DPDK 22.11 sends it (labs/traces/): both stop rings with GET_VRING_BASE. */
static int vu_reset_owner(struct vx_dev *dev, struct vu_msg *msg)
{
    (void)msg;
    vu_reset_device(dev);
    return VU_OK;
}

/* SET_MEM_TABLE, region i as the frontend describes it: may it be mapped?
 * Its sums must not wrap (a size of 0, or an end past 2^64, would make
 * every bounds check on it meaningless), and it must not overlap one
 * before it: two regions claiming the same guest-physical bytes would make
 * vx_gpa_to_va()'s answer depend on which region it tries first. */
static bool vu_region_valid(const struct vu_memory *m, uint32_t i)
{
    const struct vu_memory_region *r = &m->regions[i];
    if (r->memory_size == 0 || r->mmap_offset > UINT64_MAX - r->memory_size ||
        r->guest_phys_addr > UINT64_MAX - r->memory_size || r->userspace_addr > UINT64_MAX - r->memory_size) {
        vx_log("SET_MEM_TABLE: region %u: size 0x%" PRIx64 " offset 0x%" PRIx64 " invalid or wrapping",
               i, r->memory_size, r->mmap_offset);
        return false;
    }
    for (uint32_t j = 0; j < i; j++) {
        const struct vu_memory_region *o = &m->regions[j];
        if (r->guest_phys_addr < o->guest_phys_addr + o->memory_size &&
            o->guest_phys_addr < r->guest_phys_addr + r->memory_size) {
            vx_log("SET_MEM_TABLE: region %u (gpa 0x%" PRIx64 ") overlaps region %u", i, r->guest_phys_addr, j);
            return false;
        }
    }
    return true;
}

/* Map region i from its fd into *out: 0, or -1 (logged, nothing mapped).
 * We map from offset 0 of the fd and add mmap_offset ourselves: the offset
 * need not be page aligned.  A hugetlbfs fd wants a length that is a whole
 * number of huge pages (its st_blksize). */
static int vu_map_region(const struct vu_memory_region *r, int fd, uint32_t i, struct vx_mem_region *out)
{
    struct stat st;
    uint64_t len = r->mmap_offset + r->memory_size;
    if (fstat(fd, &st) < 0) {
        vx_log("SET_MEM_TABLE: region %u: fstat of its fd failed: %s", i, strerror(errno));
        return -1;
    }
    /* A region that runs past the end of its file would map, and then
     * SIGBUS us at the first access beyond the end: refuse it now. */
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < len) {
        vx_log("SET_MEM_TABLE: region %u: offset 0x%" PRIx64 " + size 0x%" PRIx64 " is beyond the end of its "
               "file (0x%llx bytes)", i, r->mmap_offset, r->memory_size, (unsigned long long)st.st_size);
        return -1;
    }
    if (st.st_blksize > 0)
        len = (len + st.st_blksize - 1) / st.st_blksize * st.st_blksize;
    /* MAP_SHARED: the guest's writes must reach us and ours the guest;
     * a private mapping would be a copy that neither side sees. */
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        vx_log("SET_MEM_TABLE: region %u: mmap of %" PRIu64 " bytes failed: %s", i, len, strerror(errno));
        return -1;
    }
    *out = (struct vx_mem_region){
        .guest_phys_addr = r->guest_phys_addr, .memory_size = r->memory_size,
        .userspace_addr = r->userspace_addr, .mmap_offset = r->mmap_offset,
        .mmap_addr = p, .mmap_size = len, .host = (uint8_t *)p + r->mmap_offset,
    };
    return 0;
}

/*
 * SET_MEM_TABLE: "sets the memory map regions on the back-end so it can
 * translate the vring addresses"; one fd per region rides with the message.
 * QEMU sends one region per RAM block it shares (one for a guest whose RAM
 * is a single `-object memory-backend-memfd,share=on`, as in the labs), at
 * device start, with NEED_REPLY when REPLY_ACK is on so that it waits until
 * we have mapped it.  DPDK virtio_user sends its own memory segments, with
 * guest_phys_addr == userspace_addr (it has no guest: its "physical"
 * addresses are its virtual ones).
 *
 * The frontend may send a new table while rings run (DPDK virtio_user does
 * when its memory grows): the rings were taken away by the dispatcher, so
 * unmapping the old table is safe, and vu_rings_resume() re-attaches them to
 * the new one.  The new table is built apart and replaces the old one only
 * when every region has mapped.
 */
static int vu_set_mem_table(struct vx_dev *dev, struct vu_msg *msg)
{
    const struct vu_memory *m = &msg->payload.memory;
    struct vx_mem mem = { 0 };

    for (uint32_t i = 0; i < m->nregions; i++) {
        if (!vu_region_valid(m, i) || vu_map_region(&m->regions[i], msg->fds[i], i, &mem.regions[i]) < 0) {
            vu_unmap_memory(&mem);      /* the regions mapped so far */
            return VU_FAIL;
        }
        /* Counted as each region maps: vu_unmap_memory unmaps exactly these. */
        mem.nregions = i + 1;
    }
    vu_unmap_memory(&dev->mem);
    dev->mem = mem;
    /* Re-attach every ring to the new mapping, keeping broken rings broken. */
    for (uint32_t i = 0; i < 2 * dev->queue_pairs; i++)
        dev->vrings[i].attached = false;
    return VU_OK;
}

/* SET_VRING_NUM: "set the size of the queue", the first of the messages
 * that set a ring up (NUM, BASE, ADDR, KICK) at every device start, from
 * QEMU and DPDK virtio_user alike.  A split ring's size is a power of two,
 * at most 32768 (virtio 1.2 §2.7); a packed ring's need not be (§2.8),
 * which is why SET_FEATURES must have come first.  QEMU and virtio_user
 * default to 256 (virtio_user's queue_size devarg). */
static int vu_set_vring_num(struct vx_dev *dev, struct vu_msg *msg)
{
    struct vx_vring *vr = msg->ring;
    uint32_t num = msg->payload.state.num;
    bool packed = dev->features & (1ull << VIRTIO_F_RING_PACKED);  /* SET_FEATURES came first */
    if (num == 0 || num > VX_MAX_RING_SIZE || (!packed && (num & (num - 1)))) {
        vx_log("SET_VRING_NUM: ring %u: size %u is not %s in 1..%u", vr->index, num,
               packed ? "a packed ring size" : "a power of two", VX_MAX_RING_SIZE);
        return VU_FAIL;
    }
    vr->num = num;
    vr->attached = false;
    return VU_OK;
}

/* SET_VRING_ADDR: where the descriptor table, avail ring and used ring are,
 * in the *frontend's* address space (QEMU's virtual addresses, not the
 * guest-physical ones the descriptors hold): we translate them through the
 * memory table's userspace_addr (vx_uva_to_va).  For a packed ring (§2.8)
 * the same three fields carry the descriptor ring, the driver area and the
 * device area.  `flags` and `log` are for live migration's dirty log
 * (second reading, "Live migration: dirty-page logging"). */
static int vu_set_vring_addr(struct vx_dev *dev, struct vu_msg *msg)
{
    const struct vu_vring_addr *a = &msg->payload.addr;
    struct vx_vring *vr = msg->ring;
    /* These are frontend virtual addresses: check them now against the
     * memory table's userspace_addr ranges (the whole ring is checked again
     * with its size when it starts). */
    if (!vx_uva_to_va(&dev->mem, a->desc_user_addr, 1) || !vx_uva_to_va(&dev->mem, a->avail_user_addr, 1) ||
        !vx_uva_to_va(&dev->mem, a->used_user_addr, 1)) {
        vx_log("SET_VRING_ADDR: ring %u: desc 0x%" PRIx64 " avail 0x%" PRIx64 " used 0x%" PRIx64
               " not inside the memory table", vr->index, a->desc_user_addr, a->avail_user_addr, a->used_user_addr);
        return VU_FAIL;
    }
    if (vu_log_ring_addr(vr, a) < 0)    /* flags and log_guest_addr: live migration */
        return VU_FAIL;
    vr->desc_user_addr = a->desc_user_addr;
    vr->avail_user_addr = a->avail_user_addr;
    vr->used_user_addr = a->used_user_addr;
    vr->addr_set = true;
    vr->attached = false;
    return VU_OK;
}

/* SET_VRING_BASE: the avail index to start from (last_avail_idx): 0 for a
 * fresh ring, or where a previous backend stopped (GET_VRING_BASE), or, after
 * a backend crash, QEMU's guess: the used index it finds in the ring.  The
 * frontend decides, not us, because it is the one that outlives us: after a
 * reconnect we know nothing, and starting anywhere else would hand the guest
 * a descriptor chain twice or skip one.  A split ring's index is a free-
 * running u16 (virtio 1.2 §2.7.6: it wraps at 65536, not at the ring size),
 * so any value up to 0xffff is a valid place to start. */
static int vu_set_vring_base(struct vx_dev *dev, struct vu_msg *msg)
{
    struct vx_vring *vr = msg->ring;
    uint32_t base = msg->payload.state.num;
    if (dev->features & (1ull << VIRTIO_F_RING_PACKED)) {
        vu_set_packed_base(vr, base);       /* a slot and a wrap counter */
    } else if (base > 0xffff) {
        vx_log("SET_VRING_BASE: ring %u: base %u does not fit a split ring's u16 index", vr->index, base);
        return VU_FAIL;
    } else {
        vr->last_avail_idx = (uint16_t)base;
    }
    /* The packed ring checks a position that came from the frontend against
     * the ring itself when it starts; the split ring has no need to. */
    vr->base_from_frontend = true;
    vr->attached = false;
    return VU_OK;
}

/* GET_VRING_BASE stops the ring ("Ring states": a started ring stops on
 * it) and tells the frontend where to resume: our last_avail_idx (every
 * chain before it has been completed).  QEMU sends it for every ring when
 * the device stops (guest reset or shutdown, migration); DPDK virtio_user
 * after SET_VRING_ENABLE(0).  The dispatcher has already taken the ring
 * from its PMD, so the index is final.  The kick is forgotten: the ring
 * starts again only on a new SET_VRING_KICK. */
static int vu_get_vring_base(struct vx_dev *dev, struct vu_msg *msg)
{
    struct vx_vring *vr = msg->ring;
    vu_trace_ring(dev, vr, VU_RING_STOPPED);
    vr->kick_received = false;
    vr->attached = false;
    vr->broken = false;     /* the frontend restarts it from scratch */
    vu_close_fd(&vr->kick_fd);
    /* The reply reuses the request's payload: same ring index, num = where
     * to resume. */
    msg->payload.state.num = dev->features & (1ull << VIRTIO_F_RING_PACKED) ? vu_packed_base(vr) : vr->last_avail_idx;
    return VU_REPLY;
}

/* The three eventfd messages share a payload (ring index | NOFD flag) and
 * differ only in which of the ring's fds they replace.  The old fd is closed
 * first: QEMU sends a new call fd at every device start, and each one we
 * held on to would leak.  The new fd, if any, moves into the ring (the
 * dispatcher will not close it) once vu_take_eventfd (second reading) has
 * checked that it is an eventfd and made it non-blocking; anything else is
 * refused.
 * With NOFD (bit 8) no fd came and the ring has none of that kind. */

/* SET_VRING_KICK: the eventfd the frontend signals when the guest has made
 * buffers available ("kicks"; with NOFD: none, poll instead).  By "Ring
 * states" it is also what starts a ring.  QEMU and DPDK send it last in a
 * ring's set-up, after SET_VRING_ADDR. */
static int vu_set_vring_kick(struct vx_dev *dev, struct vu_msg *msg)
{
    struct vx_vring *vr = msg->ring;
    (void)dev;
    if (vu_take_eventfd(msg, "SET_VRING_KICK", &vr->kick_fd) != VU_OK)
        return VU_FAIL;
    /* The kick starts the ring.  We poll, so we never wait on this fd (with
     * NOFD there is none), except in --pmd-mode adaptive, where the ring's
     * poll thread sleeps on it: that is why this message stops the ring
     * (table column "rings") before the fd changes. */
    vr->kick_received = true;
    vr->attached = false;
    vr->kickless = false;   /* a new fd, a new chance to sleep on it (pmd_loop.c) */
    return VU_OK;
}

/* SET_VRING_CALL: the eventfd we signal when we have used buffers: the
 * guest's interrupt (QEMU routes it to the guest's MSI or INTx line through
 * KVM's irqfd, or its own handler); virtqueue.c writes it when the guest
 * asks (notification suppression, §2.7.7 and §2.7.10).  QEMU sends one per
 * ring at connection time and another at every device start; DPDK
 * virtio_user sends them before SET_FEATURES though it polls.  It is in the
 * table's "rings" column because a PMD writes this fd: closing it under a
 * running PMD would have the PMD write to a closed fd number, or to
 * whatever file reuses it.  A new fd may fail where the old one did not:
 * its first failure is logged again (virtqueue.c logs one per fd). */
static int vu_set_vring_call(struct vx_dev *dev, struct vu_msg *msg)
{
    (void)dev;
    msg->ring->call_failed_logged = false;
    return vu_take_eventfd(msg, "SET_VRING_CALL", &msg->ring->call_fd);
}

/* SET_VRING_ERR: an eventfd for the backend to signal a ring error.  QEMU
 * sends one per ring at connection time.  We keep it (closed on reset) but
 * never write it: a broken ring is logged and counted in --stats instead.
 * No PMD reads it, so the message does not take rings away. */
static int vu_set_vring_err(struct vx_dev *dev, struct vu_msg *msg)
{
    (void)dev;
    return vu_take_eventfd(msg, "SET_VRING_ERR", &msg->ring->err_fd);
}

/* GET/SET_PROTOCOL_FEATURES: the protocol's own extensions.  We offer five:
 * MQ (GET_QUEUE_NUM, several queue pairs on one connection), REPLY_ACK
 * (the frontend may set NEED_REPLY on any message and wait for our u64
 * status: how QEMU and virtio_user make SET_MEM_TABLE synchronous), NET_MTU
 * (NET_SET_MTU), RARP (SEND_RARP) and STATUS (SET/GET_STATUS, the device
 * status byte).  The spec allows these messages only when GET_FEATURES
 * offered bit 30, and wants them answered even before SET_FEATURES: QEMU
 * asks at connection time, before SET_OWNER, and sets the intersection
 * with what it knows.  DPDK virtio_user 22.11 wants only
 * MQ, REPLY_ACK and STATUS. */
static int vu_get_protocol_features(struct vx_dev *dev, struct vu_msg *msg)
{
    (void)dev;
    msg->payload.u64 = vu_offered_protocol_features;
    return VU_REPLY;
}

static int vu_set_protocol_features(struct vx_dev *dev, struct vu_msg *msg)
{
    if (!vu_only_offered("SET_PROTOCOL_FEATURES", msg->payload.u64, vu_offered_protocol_features))
        return VU_FAIL;
    dev->protocol_features = msg->payload.u64;
    return VU_OK;
}

/* SET_VRING_ENABLE: with PROTOCOL_FEATURES a started ring also has to be
 * enabled before we touch it.  QEMU 7.2 sends enable=1 for rings 0/1 at
 * connection time, long before the rings exist (see vu_ring_can_run), and
 * does not wait for our answer; virtio_user stops with enable=0 first.
 * With multiqueue QEMU keeps the rings of the pairs the guest has not
 * switched on (ethtool -L) at enable=0.  A disabled ring does not run: its
 * PMD leaves it alone, and packets for a disabled RX ring are dropped and
 * counted there. */
static int vu_set_vring_enable(struct vx_dev *dev, struct vu_msg *msg)
{
    struct vx_vring *vr = msg->ring;
    if (msg->payload.state.num > 1) {
        vx_log("SET_VRING_ENABLE: ring %u: value %u is neither 0 nor 1", vr->index, msg->payload.state.num);
        return VU_FAIL;
    }
    vr->enabled = msg->payload.state.num;
    vu_trace_ring(dev, vr, VU_RING_ENABLE);
    return VU_OK;
}

/* === 5. One message: check, dispatch, reply ============================== */

/*
 * A message arrives as its 12-byte header and `size` bytes of payload, with
 * any fds in SCM_RIGHTS beside the header's first byte.  The frontend writes
 * it with one sendmsg(), so one recvmsg() of the header and one of the
 * payload would read it whole; but a hostile frontend may send it a byte at
 * a time, or never finish, and the control thread serves every device.  So
 * the reading is vu_io_receive()'s (second reading, "What no frontend may do
 * to us"): it never waits, and hands over only a whole message, its fds in
 * msg.fds.  From there, this section: check the message against its row of
 * the table, take rings away if the row says so, run the handler, hand the
 * rings back, reply.
 */
static int vu_io_receive(struct vx_dev *dev, struct vu_msg *msg);
/* Second reading ("A frontend that comes back"): a message the table says
 * belongs to the owner came before SET_OWNER; it makes the frontend the owner. */
static void vu_session_resume(struct vx_dev *dev, const char *first);
static int vu_io_send(struct vx_dev *dev, const void *bytes, size_t len);
/* Second reading ("--trace"): one line for a message, `dir` "<-" for one
 * received and "->" for our reply, when --trace is on; nothing otherwise. */
static void vu_trace(const struct vx_dev *dev, const char *dir, const struct vu_msg *msg, enum vu_payload_kind kind);

/* Send a reply: same request, flags = VERSION|REPLY exactly, payload of the
 * size its kind has.  Every reply we send is 8 bytes of payload (a u64, or a
 * vu_vring_state for GET_VRING_BASE) and carries no fd.  It is handed to
 * vu_io_send(), which sends what the socket takes now and keeps the rest for
 * later: a frontend that does not read its replies cannot stop us. */
static int vu_send_reply(struct vx_dev *dev, struct vu_msg *msg, enum vu_payload_kind kind)
{
    _Static_assert(sizeof(struct vu_vring_state) == sizeof(uint64_t), "every reply payload is 8 bytes");
    msg->hdr.flags = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;
    msg->hdr.size = sizeof(uint64_t);
    msg->nfds = 0;
    vu_trace(dev, "->", msg, kind);
    uint8_t bytes[sizeof msg->hdr + sizeof(uint64_t)];
    memcpy(bytes, &msg->hdr, sizeof msg->hdr);
    memcpy(bytes + sizeof msg->hdr, &msg->payload, sizeof(uint64_t));
    return vu_io_send(dev, bytes, sizeof bytes);
}

/* Is this message well formed for its request: version, payload size, fd
 * count?  Returns NULL if so, else what is wrong.  The size must be exact,
 * not merely large enough: a short payload would leave fields the handler
 * reads as zeros, and we refuse rather than guess.  A missing fd would leave
 * a region or ring without the file it names; an extra one means the
 * frontend and we disagree about the message. */
static const char *vu_check_msg(const struct vu_msg *msg, const struct vu_request *req, char *why, size_t size)
{
    uint32_t want_size = 0, want_fds = 0;
    if ((msg->hdr.flags & 3) != VHOST_USER_VERSION) {
        snprintf(why, size, "version %u, expected 1", msg->hdr.flags & 3);
        return why;
    }
    switch (req->payload) {
    case P_NONE:
        break;
    case P_U64: case P_FEATURES: case P_PROTOCOL: case P_ACK: case P_MAC:
        want_size = sizeof(uint64_t);
        break;
    case P_RING_FD:
        want_size = sizeof(uint64_t);
        want_fds = msg->payload.u64 & VHOST_USER_VRING_NOFD ? 0 : 1;
        break;
    case P_STATE:
        want_size = sizeof(struct vu_vring_state);
        break;
    case P_ADDR:
        want_size = sizeof(struct vu_vring_addr);
        break;
    case P_LOG: case P_FD:      /* live migration (second reading) */
        want_size = req->payload == P_LOG ? sizeof(struct vu_log) : 0;
        want_fds = 1;
        break;
    case P_MEM:
        /* The size depends on nregions, so nregions must be there first. */
        if (msg->hdr.size < 8) {
            snprintf(why, size, "payload size %u, expected at least 8 (nregions, padding)", msg->hdr.size);
            return why;
        }
        if (msg->payload.memory.nregions == 0 || msg->payload.memory.nregions > VX_MAX_REGIONS) {
            snprintf(why, size, "nregions %u not in 1..%d", msg->payload.memory.nregions, VX_MAX_REGIONS);
            return why;
        }
        want_fds = msg->payload.memory.nregions;
        want_size = 8 + want_fds * sizeof(struct vu_memory_region);
        break;
    }
    if (msg->hdr.size != want_size) {
        snprintf(why, size, "payload size %u, expected %u", msg->hdr.size, want_size);
        return why;
    }
    if ((uint32_t)msg->nfds != want_fds) {
        snprintf(why, size, "%d fds attached, expected %u", msg->nfds, want_fds);
        return why;
    }
    return NULL;
}

/* Fds a handler did not take are ours to close, whatever happened. */
static void vu_close_fds(struct vu_msg *msg)
{
    for (int i = 0; i < msg->nfds; i++)
        close(msg->fds[i]);
    msg->nfds = 0;
}

/*
 * Act on one message, read whole (vu_io_receive), its fds in msg.fds.
 * Returns -1 when the connection must be reset: the frontend sent something
 * malformed or refused.  We never try to resynchronise with a peer that got
 * the protocol wrong.
 */
static int vu_dispatch_one(struct vx_dev *dev, struct vu_msg *msg)
{
    uint32_t rq = msg->hdr.request;
    const struct vu_request *req = rq < VU_NREQUESTS && vu_requests[rq].name ? &vu_requests[rq] : NULL;
    vu_trace(dev, "<-", msg, req ? req->payload : P_NONE);
    /* A message we refuse before its handler runs (not understood,
     * malformed, or naming no ring of ours) is answered below as a handler
     * that failed: a nack if the frontend waits for one, so that it reports
     * an error rather than hang, then the reset. */
    int r = VU_FAIL;
    if (!req || !req->handler) {
        vx_log("request %u (%s) not supported: we did not offer the feature it belongs to", rq, vu_request_name(rq));
        goto reply;
    }
    char why[120];
    if (vu_check_msg(msg, req, why, sizeof why)) {
        vx_log("%s: malformed: %s", req->name, why);
        goto reply;
    }
    if (req->needs_owner && !dev->owner_set)
        vu_session_resume(dev, req->name);     /* no SET_OWNER: a frontend that came back (second reading) */
    bool names_ring = req->payload == P_STATE || req->payload == P_ADDR || req->payload == P_RING_FD;
    msg->ring = names_ring ? vu_ring(dev, req, &msg->payload) : NULL;
    if (names_ring && !msg->ring)
        goto reply;

    /* Which rings to take away: the one the message names, else all. */
    if (req->changes_rings && !vu_rings_stop(dev, msg->ring ? 1ull << msg->ring->index : VU_ALL_RINGS)) {
        vx_log("%s: not done: the poll threads did not give the rings back (shutting down)", req->name);
        goto reply;
    }
    r = req->handler(dev, msg);
    if (req->changes_rings && vu_rings_resume(dev) < 0)
        r = VU_FAIL;        /* a ring it started cannot run: malformed, reset */

reply:
    /* The fds the handler did not take (SET_MEM_TABLE's, once mapped; all
     * of a refused message's): closed before the reply, which sets nfds = 0. */
    vu_close_fds(msg);
    bool need_reply = msg->hdr.flags & VHOST_USER_NEED_REPLY;
    bool reply_ack = dev->protocol_features & (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK);
    int ret = 0;
    /* A message with a reply of its own (the GET_* ones) answers with it,
     * NEED_REPLY or not; any other message is acknowledged only when the
     * frontend asked (NEED_REPLY) and REPLY_ACK was negotiated. */
    if (r == VU_REPLY) {
        ret = vu_send_reply(dev, msg, req->reply);
    } else if (need_reply && reply_ack) {
        /* REPLY_ACK: a u64, 0 for success (vhost-user.rst "REPLY_ACK"). */
        msg->payload.u64 = r == VU_FAIL || r == VU_NACK;
        ret = vu_send_reply(dev, msg, P_ACK);
    }
    return r == VU_FAIL ? -1 : ret;
}

/* === 6. The socket ======================================================= */

/*
 * Server mode (the default): we listen on --socket and the frontend
 * connects: QEMU with `-chardev socket,path=...,reconnect=1`, DPDK with
 * net_virtio_user's path=.  Client mode (--client): the frontend listens
 * (QEMU's server=on, virtio_user's server=1) and we connect, retrying every
 * second.  Either way we serve one connection at a time, and everything the
 * frontend told us lives and dies with it.
 *
 * Read vu_init() first, then the two functions main.c's loop calls,
 * vu_poll_fd() and vu_handle_event(), then connect and disconnect.
 */

/* The frontend has gone (QEMU quit or was killed, the virtio_user port
 * closed), or we reset the connection over a message we refused.  All it
 * gave us is dropped, as for a fresh connection; the counters stay.  A
 * frontend that comes back starts again from the beginning and tells each
 * ring where to resume (SET_VRING_BASE). */
static void vu_io_forget(struct vx_dev *dev);   /* second reading, rule 1 */

static void vu_disconnect(struct vx_dev *dev)
{
    vu_rings_stop(dev, VU_ALL_RINGS);     /* first, so the indices traced below hold still */
    for (uint32_t i = 0; i < 2 * dev->queue_pairs; i++)
        vu_trace_ring(dev, &dev->vrings[i], VU_RING_DROPPED);
    vu_reset_device(dev);
    vu_io_forget(dev);
    vu_close_fd(&dev->conn_fd);
    vx_log("frontend disconnected%s%s; %s", dev->opt.name_socket ? " from " : "",
           dev->opt.name_socket ? dev->opt.socket_path : "",
           dev->opt.client ? "reconnecting every second" : "waiting for the next one");
    dev->waiting_logged = dev->opt.client;
}

/* The connection is non-blocking (SOCK_NONBLOCK), and every read and write
 * on it says MSG_DONTWAIT as well: the control thread serves every device,
 * the signals and --stats, so it never waits for one frontend (second
 * reading, "What no frontend may do to us", rule 1). */
static void vu_connected(struct vx_dev *dev, int fd)
{
    dev->conn_fd = fd;
    dev->waiting_logged = false;
    vx_log("frontend connected on %s", dev->opt.socket_path);
}

/* sun_path holds 108 bytes with the NUL: a longer path cannot name a unix
 * socket at all, so it is refused rather than cut short. */
static int vu_make_addr(struct sockaddr_un *sa, const char *path)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa->sun_path) {
        vx_log("socket path %s is longer than %zu bytes", path, sizeof sa->sun_path - 1);
        return -1;
    }
    strcpy(sa->sun_path, path);
    return 0;
}

/* Client mode: one attempt; main.c calls us again a second later.  The
 * wait is logged once, not every second: a frontend that starts later is
 * the normal case (QEMU started after vhost-xdp). */
static void vu_try_connect(struct vx_dev *dev)
{
    struct sockaddr_un sa;
    if (vu_make_addr(&sa, dev->opt.socket_path) < 0)
        return;
    /* Non-blocking: a frontend whose listen backlog is full makes connect()
     * fail with EAGAIN (a unix socket never connects half way), where a
     * blocking one would wait until it accepts. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        vu_connected(dev, fd);
        return;
    }
    if (!dev->waiting_logged)
        vx_log("waiting for a frontend to listen on %s (%s)", dev->opt.socket_path, strerror(errno));
    dev->waiting_logged = true;
    close(fd);
}

/* Before any connection: the rings' fds are -1, not the 0 of a static
 * struct (fd 0 is stdin, and vu_close_fd would close it).  In server mode,
 * the listening socket. */
int vu_init(struct vx_dev *dev, const struct vu_options *opt)
{
    dev->opt = *opt;
    dev->listen_fd = -1;
    dev->conn_fd = -1;
    for (uint32_t i = 0; i < VX_MAX_VRINGS; i++)
        vu_ring_fresh(&dev->vrings[i], i);
    /* The path first, in both modes: one that cannot fit a sockaddr_un is a
     * clear error now, not a client retrying every second for ever. */
    struct sockaddr_un sa;
    if (vu_make_addr(&sa, opt->socket_path) < 0)
        return -1;
    if (opt->client)
        return 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        vx_log("socket: %s", strerror(errno));
        return -1;
    }
    /* A socket file left by a crashed run is removed; one that somebody is
     * listening on is not ours to take. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        vx_log("%s: another process is listening on it", opt->socket_path);
        close(fd);
        return -1;
    }
    close(fd);
    struct stat st;
    if (lstat(opt->socket_path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(opt->socket_path);
    /* Backlog 1: we serve one frontend at a time, and main.c does not poll
     * the listening socket while one is connected; a second one waits. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 1) < 0) {
        vx_log("%s: cannot listen: %s", opt->socket_path, strerror(errno));
        vu_close_fd(&fd);
        return -1;
    }
    dev->listen_fd = fd;
    vx_log("listening on %s", opt->socket_path);
    return 0;
}

/* What main.c's loop sleeps on: the connection when there is one, else
 * the listening socket (server mode) or -1 (client mode: nothing to wait
 * on, the loop calls vu_handle_event() every second instead). */
int vu_poll_fd(struct vx_dev *dev)
{
    return dev->conn_fd >= 0 ? dev->conn_fd : dev->listen_fd;
}

/* One step: what has come of the next message read, and the message acted
 * on once it is whole; a connection accepted; or one connect attempt.  At
 * most one message per call, so that main.c's loop sees a signal between
 * any two.  vu_io_receive() also finishes a reply the socket could not take
 * at once, enforces the deadlines and acts on a fault a poll thread found
 * in this device's memory (second reading): any of them may reset the
 * connection. */
void vu_handle_event(struct vx_dev *dev)
{
    if (dev->conn_fd >= 0) {
        struct vu_msg msg;
        int r = vu_io_receive(dev, &msg);
        if (r > 0)
            r = vu_dispatch_one(dev, &msg);
        if (r < 0)
            vu_disconnect(dev);
    } else if (!dev->opt.client) {
        int fd = accept4(dev->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0)
            vu_connected(dev, fd);
    } else {
        vu_try_connect(dev);
    }
}

/* At exit: as a disconnect (rings taken away, memory unmapped), then the
 * listening socket and its file, so that nothing is left that a frontend
 * could connect to and hang on. */
void vu_cleanup(struct vx_dev *dev)
{
    vu_reset_device(dev);
    vu_io_forget(dev);
    vu_close_fd(&dev->conn_fd);
    if (dev->listen_fd >= 0)
        unlink(dev->opt.socket_path);
    vu_close_fd(&dev->listen_fd);
}

/* === Second reading: packed ring, multiqueue, MTU/RARP/STATUS, live migration, --trace, hardening === */

/*
 * Everything below serves a frontend beyond the first reading's split ring
 * with one queue pair, or watches and defends the protocol rather than
 * speaking it.  Each part is reached from the first reading by one named
 * call (or, for the handlers, by its row in vu_requests[]), so it can be
 * read in any order:
 *   - the packed ring: what a ring's position looks like in GET/SET_VRING_BASE;
 *   - a frontend that comes back: DPDK's virtio_user resumes without SET_OWNER;
 *   - multiqueue: GET_QUEUE_NUM, and what else changes with several pairs;
 *   - NET_SET_MTU, SEND_RARP, SET/GET_STATUS: three protocol features that
 *     hand the device a value;
 *   - live migration: the dirty log QEMU shares with us, and when to mark it;
 *   - --trace: one decoded line per message and per ring event;
 *   - what no frontend may do to us: reading and writing the socket without
 *     ever waiting, deadlines, the fds we accept, faults in guest memory.
 */

/* === The packed ring: where a ring resumes ================================ */

/*
 * A split ring's position is one free-running u16 (the avail index), and
 * the used side is in guest memory for anyone to read.  A packed ring (virtio
 * 1.2 §2.8) has neither: a position is a slot, 0..num-1, plus a wrap counter
 * that flips each time the slot passes the end of the ring (§2.8.1: both
 * counters start at 1), and nothing in guest memory says where the device
 * stopped.  So vhost-user.rst ("Vring descriptor indices for packed
 * virtqueues") packs both sides into the 32-bit `num` of SET/GET_VRING_BASE:
 *
 *   bits 0-14  the next avail slot      bit 15  the avail wrap counter
 *   bits 16-30 the next used slot       bit 31  the used wrap counter
 *
 * QEMU 7.2 with packed=on starts a fresh ring with 0x80008000: slot 0 on
 * both sides, both counters 1.
 */

/* SET_VRING_BASE, packed: we read the avail half only.  We use every chain
 * within the burst that took it, in ring order, so whenever a ring stops its
 * used position equals its avail position; the used half can only say the
 * same or be wrong.  The position may be stale all the same (after a backend
 * crash QEMU resends the last one it had): vq_attach() checks it against the
 * descriptors' flags (virtqueue.c, vq_packed_find_position). */
static void vu_set_packed_base(struct vx_vring *vr, uint32_t base)
{
    vr->last_avail_idx = base & 0x7fff;
    vr->avail_wrap_counter = base & 0x8000;
    vr->last_used_idx = vr->last_avail_idx;
    vr->used_wrap_counter = vr->avail_wrap_counter;
}

/* GET_VRING_BASE, packed: both halves, as the frontend will send them back
 * in SET_VRING_BASE when the ring starts again. */
static uint32_t vu_packed_base(const struct vx_vring *vr)
{
    return vr->last_avail_idx | (uint32_t)vr->avail_wrap_counter << 15 | (uint32_t)vr->last_used_idx << 16 |
           (uint32_t)vr->used_wrap_counter << 31;
}

/* === A frontend that comes back: no SET_OWNER ============================== */

/*
 * vhost-user.rst, VHOST_USER_SET_OWNER: "Issued when a new connection is
 * established. It marks the sender as the frontend that owns the session.
 * This can be used on the backend as a 'session start' flag."  QEMU sends it
 * on every connection, after its first questions (GET_FEATURES, the
 * protocol features, GET_QUEUE_NUM).  The spec does not say what a backend
 * should do with a message that comes before it, and the two backends most
 * frontends meet refuse nothing: DPDK's vhost library and QEMU's
 * libvhost-user both take SET_OWNER as a no-op.
 *
 * One frontend depends on that.  DPDK 22.11's virtio_user with server=1
 * listens, and we connect (--client).  When we are killed and started
 * again, it accepts our new connection and carries on with the session it
 * had (virtio_user_dev_server_reconnect, in DPDK's drivers/net/virtio): it
 * stops the device it had running (SET_VRING_ENABLE 0, then GET_VRING_BASE,
 * for each ring: we answer where a fresh ring stands, and it does not use
 * the answer), asks the features again (GET_FEATURES, GET/SET_PROTOCOL_
 * FEATURES) and starts its rings again: a packed ring from slot 0 wrap 1,
 * since it resets its packed rings and drops what was in flight ("Packets on
 * the fly will be dropped"), a split ring with base 0 although it goes on
 * where it was (virtqueue.c resumes it at used->idx, "Hardening: ring
 * recovery").  It never sends SET_OWNER again: it did once, when the port
 * was created, and the session, to its mind, is the same one.
 *
 * So the "owner" column of vu_requests[] says which messages belong to the
 * owner of a session, and when one arrives before SET_OWNER the dispatcher
 * calls vu_session_resume(): the frontend becomes the owner, as SET_OWNER
 * would have made it, and we say so once per connection.  A frontend gains
 * nothing by this that it could not have had by sending SET_OWNER first;
 * every message is still checked as before (size, fds, ring index, feature
 * bits we never offered, eventfds, protocol features not negotiated): only
 * the order is forgiven.  From labs/traces/dpdk-22.11-reconnect.trace:
 *
 *   <- SET_VRING_ENABLE (18) flags=0x1[v1] size=8 index=0 num=0
 *   SET_VRING_ENABLE before SET_OWNER: taking it as the owner, as DPDK's
 *     virtio_user does on reconnect (a session resumed)
 */
static void vu_session_resume(struct vx_dev *dev, const char *first)
{
    dev->owner_set = true;      /* so this is said once: reset with the connection (vu_reset_device) */
    vx_log("%s before SET_OWNER: taking it as the owner, as DPDK's virtio_user does on reconnect (a session resumed)",
           first);
}

/* === Multiqueue: GET_QUEUE_NUM ============================================= */

/*
 * With --queues N (N > 1) we offer VIRTIO_NET_F_MQ, and the frontend may
 * run N queue pairs on one connection: rings 2k (RX) and 2k+1 (TX) for pair
 * k.  Little else changes in this file, which is why multiqueue needs no
 * more than this banner:
 *   - vu_ring() refuses a ring index beyond the pairs we offered, so every
 *     handler's ring is one a poll thread polls;
 *   - QEMU keeps one vhost device per queue pair on the same socket, so the
 *     connection-time questions (GET_FEATURES, SET_PROTOCOL_FEATURES, the
 *     call and err fds) and SET_FEATURES come once per pair: asking or
 *     setting the same thing again is harmless;
 *   - QEMU leaves the rings of the pairs the guest has not switched on
 *     (ethtool -L) at SET_VRING_ENABLE 0, and vu_ring_can_run() leaves them
 *     stopped;
 *   - which poll thread serves pair k is pmd_loop.c's business (k mod the
 *     number of threads).
 */

/* GET_QUEUE_NUM (with PROTOCOL_F_MQ): how many queue pairs we can serve;
 * the frontend uses at most that many (--queues, default 1).  QEMU asks
 * only when MQ was negotiated, and refuses a device with more pairs
 * (-netdev queues=N) than this: "The maximum number of queues supported by
 * the backend is N".  DPDK virtio_user's queues=N devarg meets the same
 * limit. */
static int vu_get_queue_num(struct vx_dev *dev, struct vu_msg *msg)
{
    msg->payload.u64 = dev->queue_pairs;
    return VU_REPLY;
}

/* === NET_SET_MTU, SEND_RARP, SET/GET_STATUS ================================= */

/*
 * Three protocol features, each of which hands the device one value: the
 * guest's MTU, a MAC to announce after a migration, the virtio status byte.
 * None changes a ring, so none takes rings away: the two values a poll
 * thread reads (the MTU, the RARP request) go to it through one atomic word
 * each.  Each message exists only under its feature, which we check first.
 */

/* Some messages exist only under a protocol feature: vhost-user.rst says,
 * in each one's description, that the frontend sends it only once that
 * feature is negotiated.  One sent without it is a frontend that broke the
 * protocol: logged here; the caller refuses it and the connection resets. */
static bool vu_negotiated(const struct vx_dev *dev, int bit, const char *what, const char *feature)
{
    if (dev->protocol_features & (1ull << bit))
        return true;
    vx_log("%s: sent without %s negotiated", what, feature);
    return false;
}

/*
 * NET_SET_MTU (with PROTOCOL_F_NET_MTU): the MTU the frontend is about to
 * show the guest in the virtio-net config field `mtu` (virtio 1.2 §5.1.4,
 * VIRTIO_NET_F_MTU).  QEMU sends it when the device has host_mtu=N, at each
 * start, with NEED_REPLY; a non-zero REPLY_ACK makes QEMU report "N Bytes MTU
 * not supported by the backend" and not start the device.  So we accept
 * exactly what the port can carry: 68 (the spec's minimum) to --mtu.
 *
 * What the data path does with it (virtio 1.2 §5.1.4.1, once the guest has
 * VIRTIO_NET_F_MTU): the device "MUST forward transmitted packets of up to
 * mtu (plus low level ethernet header length)": that is why nothing above
 * --mtu is accepted, --mtu being at most what the port carries.  And it
 * "MUST NOT pass received packets that exceed mtu" plus that header: the
 * PMD drops, and counts on the RX ring, frames to the guest longer than
 * mtu + 14 (+ 4 with a VLAN tag) (pmd_loop.c, pmd_mtu_filter).  Frames from
 * the guest are not checked: the driver "MUST NOT transmit" larger ones.
 */
static int vu_net_set_mtu(struct vx_dev *dev, struct vu_msg *msg)
{
    uint64_t mtu = msg->payload.u64;
    if (!vu_negotiated(dev, VHOST_USER_PROTOCOL_F_NET_MTU, "NET_SET_MTU", "PROTOCOL_F_NET_MTU"))
        return VU_FAIL;
    if (mtu < VX_MTU_MIN || mtu > dev->mtu_max) {
        vx_log("NET_SET_MTU %" PRIu64 " refused: not in %d..%u (--mtu: the largest MTU this port carries)", mtu,
               VX_MTU_MIN, dev->mtu_max);
        return VU_NACK;     /* QEMU then reports it and leaves the device stopped */
    }
    __atomic_store_n(&dev->mtu, (uint32_t)mtu, __ATOMIC_SEQ_CST);
    vx_log("NET_SET_MTU %" PRIu64 " accepted (largest %u)", mtu, dev->mtu_max);
    return VU_OK;
}

/*
 * SEND_RARP (with PROTOCOL_F_RARP): after live migration QEMU asks us, on
 * the destination, to announce that the guest's MAC now lives here, for a
 * guest whose driver cannot announce itself (no VIRTIO_NET_F_GUEST_ANNOUNCE).
 * The switches between the two hosts learn a MAC from the frames it sends,
 * so the RARP must leave *as if the guest had sent it*: into the guest-TX
 * direction, towards the NIC (in --loopback that path leads back to the
 * guest's own RX).  Only the PMD thread touches the rings, so we just leave
 * the MAC in dev->rarp_request; the PMD of queue pair 0 builds and sends the
 * frame at its next burst (pmd_loop.c, pmd_rarp_take).
 */
static int vu_send_rarp(struct vx_dev *dev, struct vu_msg *msg)
{
    uint8_t mac[8];
    memcpy(mac, &msg->payload.u64, sizeof mac);     /* the first 6 bytes, as on the wire */
    if (!vu_negotiated(dev, VHOST_USER_PROTOCOL_F_RARP, "SEND_RARP", "PROTOCOL_F_RARP"))
        return VU_FAIL;
    /* A frame's source address is one station's: never a group address
     * (bit 0 of the first byte) and never all zeros. */
    if ((mac[0] & 1) || !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5])) {
        vx_log("SEND_RARP: %02x:%02x:%02x:%02x:%02x:%02x is not a station's MAC address (multicast or zero)",
               mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
        return VU_NACK;
    }
    uint64_t request = VX_RARP_PENDING;
    for (int i = 0; i < 6; i++)
        request |= (uint64_t)mac[i] << (8 * i);
    __atomic_store_n(&dev->rarp_request, request, __ATOMIC_SEQ_CST);
    vx_log("SEND_RARP: a RARP from %02x:%02x:%02x:%02x:%02x:%02x will go out on queue pair 0, as if the guest sent it",
           mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    pmd_wake_sleepers();    /* --pmd-mode adaptive: not at the guest's next kick, now */
    return VU_OK;
}

/*
 * SET_STATUS / GET_STATUS (with PROTOCOL_F_STATUS): the virtio device status
 * byte (virtio 1.2 §2.1: ACKNOWLEDGE 1, DRIVER 2, DRIVER_OK 4, FEATURES_OK 8,
 * DEVICE_NEEDS_RESET 64, FAILED 128) as the driver sets it.  QEMU 7.2 reads
 * it back before each bit it adds (FEATURES_OK after SET_FEATURES,
 * DRIVER_OK when the device starts); DPDK virtio_user fails its port if
 * FEATURES_OK is not in what GET_STATUS answers.  So we keep the byte and
 * answer it as it was set; FEATURES_OK stays, because SET_FEATURES has
 * already refused any bit we never offered.
 *
 * Status 0 is a device reset (§2.1.2), yet it does NOT reset our rings:
 * QEMU 7.2 sends SET_STATUS 0 *before* the GET_VRING_BASE that stops each
 * ring (the last lines of labs/traces/qemu-7.2.trace; QEMU later swapped
 * the two, "vhost-user: send SET_STATUS 0 after GET_VRING_BASE"), and needs
 * the real last_avail_idx from those replies to restart the guest's rings.  The
 * rings stop, as before, on GET_VRING_BASE.  FAILED: the driver gave up;
 * we say so, nothing else changes.
 */
static int vu_set_status(struct vx_dev *dev, struct vu_msg *msg)
{
    if (!vu_negotiated(dev, VHOST_USER_PROTOCOL_F_STATUS, "SET_STATUS", "PROTOCOL_F_STATUS"))
        return VU_FAIL;
    if (msg->payload.u64 > 0xff) {
        vx_log("SET_STATUS 0x%" PRIx64 ": not a device status (one byte, virtio 1.2 §2.1)", msg->payload.u64);
        return VU_FAIL;
    }
    if ((msg->payload.u64 & 128) && !(dev->status & 128))
        vx_log("SET_STATUS 0x%" PRIx64 ": the driver set FAILED", msg->payload.u64);
    dev->status = (uint8_t)msg->payload.u64;
    return VU_OK;
}

static int vu_get_status(struct vx_dev *dev, struct vu_msg *msg)
{
    if (!vu_negotiated(dev, VHOST_USER_PROTOCOL_F_STATUS, "GET_STATUS", "PROTOCOL_F_STATUS"))
        return VU_FAIL;
    msg->payload.u64 = dev->status;
    return VU_REPLY;
}

/* === Live migration: dirty-page logging ==================================== */

/*
 * vhost-user.rst, "Migration".  While QEMU moves a running guest to another
 * host it copies guest memory in rounds, each time the pages written since
 * the last; it sees the guest's writes, not ours.  So a backend that offers
 * VHOST_F_LOG_ALL promises to mark, in a bitmap QEMU shares, every page it
 * writes: one bit per 4 KiB page of guest-physical address (virtqueue.c,
 * "Live migration: dirty-page logging", does the marking).  A migration,
 * as QEMU 7.2 runs it against us (tests/test_migrate.sh):
 *
 *   SET_LOG_BASE     the bitmap: an fd (a sealed memfd), its size and offset;
 *                    with PROTOCOL_F_LOG_SHMFD QEMU waits for a reply (a u64,
 *                    0) before it goes on: the log must be mapped first;
 *   SET_FEATURES     the same features plus LOG_ALL: logging on;
 *   SET_VRING_ADDR   per ring, the same addresses with VHOST_VRING_F_LOG in
 *                    flags and log_guest_addr = the used ring's guest-
 *                    physical address, where its writes are logged;
 *   ...              rounds of copying, the guest running, packets flowing;
 *   GET_VRING_BASE   the guest stopped: the rings stop; QEMU reads the log a
 *                    last time and the destination's backend takes over.
 *
 * A migration cancelled half way sends SET_FEATURES without LOG_ALL (and
 * SET_VRING_ADDR without the flag): logging off, the rings run on.  Each of
 * these messages stops the rings it changes (the table's "rings" column),
 * so a ring's `log` pointer changes only while no poll thread is in it; it
 * is set again when the ring is re-attached (vu_log_attach), NULL unless
 * LOG_ALL is negotiated and a log is mapped.
 *
 * What is checked, since the log is one more region we write into on the
 * frontend's word: the offset and size do not wrap; the log covers the
 * whole memory table (the spec: "large enough to cover all known guest
 * addresses"); the fd is a file at least offset + size long, sealed against
 * shrinking (F_SEAL_SHRINK, as QEMU's memfd is), since a log cut short
 * under a poll thread would SIGBUS it outside guest memory; a used ring
 * logged at log_guest_addr lies inside the log.  Anything else: refused,
 * the connection reset.  The data path also stops at the log's end, so
 * nothing is ever written outside it.
 */

/* The log's bytes needed for the memory table: a bit for every page from
 * guest-physical 0 up to the last byte of the highest region. */
static uint64_t vu_log_bytes_needed(const struct vx_mem *mem)
{
    uint64_t top = 0;
    for (uint32_t i = 0; i < mem->nregions; i++) {
        const struct vx_mem_region *r = &mem->regions[i];
        uint64_t last = r->guest_phys_addr + r->memory_size - 1;   /* no wrap: vu_region_valid */
        top = last > top ? last : top;
    }
    return mem->nregions ? top / VX_LOG_PAGE / 8 + 1 : 0;
}

/* Our mapping goes (the rings were taken away first: a poll thread may be
 * marking it); the log itself is the frontend's. */
static void vu_log_unmap(struct vx_dev *dev)
{
    if (dev->log.mmap_addr)
        munmap(dev->log.mmap_addr, dev->log.mmap_size);
    memset(&dev->log, 0, sizeof dev->log);
    for (uint32_t i = 0; i < 2 * dev->queue_pairs; i++)
        dev->vrings[i].log = NULL;
}

/* Is fd a file we may map for [0, end) and keep: a regular file (memfd)
 * that long, which cannot shrink under us?  NULL if so, else why not. */
static const char *vu_log_fd_refused(int fd, uint64_t end, char *why, size_t size)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, size, "the log's fd is not a regular file (a memfd)");
        return why;
    }
    if ((uint64_t)st.st_size < end) {
        snprintf(why, size, "offset + size 0x%" PRIx64 " is beyond the end of the log's file (0x%llx bytes)",
                 end, (unsigned long long)st.st_size);
        return why;
    }
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
        snprintf(why, size, "the log's file is not sealed against shrinking (F_SEAL_SHRINK): cut short, it "
                 "would crash the poll thread marking it");
        return why;
    }
    return NULL;
}

/* Map the log SET_LOG_BASE describes into *out: 0, or -1 (logged). */
static int vu_log_map(const struct vx_dev *dev, const struct vu_log *l, int fd, struct vx_dirty_log *out)
{
    char why[200];
    uint64_t need = vu_log_bytes_needed(&dev->mem);
    if (l->mmap_size == 0 || l->mmap_offset > UINT64_MAX - l->mmap_size) {
        vx_log("SET_LOG_BASE: size 0x%" PRIx64 " offset 0x%" PRIx64 " invalid or wrapping", l->mmap_size,
               l->mmap_offset);
        return -1;
    }
    if (l->mmap_size < need) {
        vx_log("SET_LOG_BASE: a log of %" PRIu64 " bytes does not cover guest memory, which needs %" PRIu64
               " (a bit per 4 KiB page up to the highest region's end)", l->mmap_size, need);
        return -1;
    }
    if (vu_log_fd_refused(fd, l->mmap_offset + l->mmap_size, why, sizeof why)) {
        vx_log("SET_LOG_BASE: %s", why);
        return -1;
    }
    uint64_t len = l->mmap_offset + l->mmap_size;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        vx_log("SET_LOG_BASE: mmap of %" PRIu64 " bytes failed: %s", len, strerror(errno));
        return -1;
    }
    *out = (struct vx_dirty_log){ .bits = (uint8_t *)p + l->mmap_offset, .size = l->mmap_size,
                                  .mmap_addr = p, .mmap_size = len };
    return 0;
}

/* SET_LOG_BASE: the log, mapped and checked; the old one (QEMU sends a
 * larger one when guest memory grows) unmapped.  Every ring was taken away
 * (table: "rings") and is re-attached with the new log.  With
 * PROTOCOL_F_LOG_SHMFD the frontend waits for a reply: a u64, 0.  Without
 * it the old form (a u64 address in the frontend's own memory, no fd) is
 * all a frontend could send, and we cannot use it: refused. */
static int vu_set_log_base(struct vx_dev *dev, struct vu_msg *msg)
{
    struct vx_dirty_log log;
    if (!(dev->protocol_features & (1ull << VHOST_USER_PROTOCOL_F_LOG_SHMFD))) {
        vx_log("SET_LOG_BASE: PROTOCOL_F_LOG_SHMFD was not negotiated");
        return VU_FAIL;
    }
    if (vu_log_map(dev, &msg->payload.log, msg->fds[0], &log) < 0)
        return VU_FAIL;
    vu_log_unmap(dev);
    dev->log = log;
    for (uint32_t i = 0; i < 2 * dev->queue_pairs; i++)
        dev->vrings[i].attached = false;
    vx_log("%s: dirty log mapped: %" PRIu64 " bytes, guest-physical pages 0..%" PRIu64 "%s", dev->opt.socket_path,
           log.size, log.size * 8 - 1, dev->features & (1ull << VHOST_F_LOG_ALL) ? "" : " (logging from LOG_ALL on)");
    msg->payload.u64 = 0;
    return VU_REPLY;
}

/* SET_FEATURES turning LOG_ALL on (a migration starts copying) or off (it
 * ended or was cancelled: migrate_cancel in QEMU's monitor): one line, the
 * moment a student looks for in the log.  The marks themselves are counted
 * in --stats ("dirty log: N pages marked"). */
static void vu_log_say_toggled(const struct vx_dev *dev, uint64_t features)
{
    bool was = dev->features & (1ull << VHOST_F_LOG_ALL), now = features & (1ull << VHOST_F_LOG_ALL);
    if (was != now)
        vx_log("%s: dirty logging %s", dev->opt.socket_path,
               now ? "on (LOG_ALL): every guest page we write is marked in the log" : "off (LOG_ALL cleared)");
}

/* SET_LOG_FD: an eventfd "to inform the front-end that the log has been
 * modified".  Nothing needs it: QEMU reads the log when it syncs (and 7.2
 * never sends this message).  Accepted, and the fd closed (the dispatcher
 * closes every fd a handler leaves). */
static int vu_set_log_fd(struct vx_dev *dev, struct vu_msg *msg)
{
    (void)dev;
    (void)msg;
    return VU_OK;
}

/* SET_VRING_ADDR's two logging fields: flags bit 0 (VHOST_VRING_F_LOG, the
 * only flag defined) asks for the used ring's writes to be logged, at
 * log_guest_addr.  That address need not be in the memory table (the
 * spec), but the used ring logged there must lie inside the log: checked
 * when the ring starts with a log (vu_log_attach). */
static int vu_log_ring_addr(struct vx_vring *vr, const struct vu_vring_addr *a)
{
    if (a->flags & ~1u) {
        vx_log("SET_VRING_ADDR: ring %u: flags 0x%x: only bit 0 (VHOST_VRING_F_LOG) is defined", vr->index, a->flags);
        return -1;
    }
    vr->log_used = a->flags & 1;
    vr->log_guest_addr = a->log_guest_addr;
    return 0;
}

/* Before vq_attach: the ring logs if LOG_ALL is negotiated and a log is
 * mapped.  Its used ring (split: flags, idx, ring[num], avail_event; packed:
 * the device event area) logged at log_guest_addr must fit in the log, its
 * sum not wrapping: -1 (logged) refuses the start, and so the message. */
static int vu_log_attach(struct vx_dev *dev, struct vx_vring *vr)
{
    bool on = (dev->features & (1ull << VHOST_F_LOG_ALL)) && dev->log.bits;
    vr->log = on ? &dev->log : NULL;
    if (!on || !vr->log_used)
        return 0;
    uint64_t used_len = dev->features & (1ull << VIRTIO_F_RING_PACKED) ? 4 : 6 + 8ull * vr->num;
    uint64_t a = vr->log_guest_addr;
    if (a > UINT64_MAX - used_len || (a + used_len - 1) / VX_LOG_PAGE / 8 >= dev->log.size) {
        vx_log("ring %u: used ring logged at log_guest_addr 0x%" PRIx64 " (+%" PRIu64 " bytes) lies outside the "
               "log's %" PRIu64 " bytes (guest-physical 0..0x%" PRIx64 ")", vr->index, a, used_len, dev->log.size,
               dev->log.size * 8 * VX_LOG_PAGE - 1);
        vr->log = NULL;
        return -1;
    }
    return 0;
}

/* === --trace: one line per message, one per ring event ==================== */

/*
 * --trace prints every message as the spec describes it, and our reply;
 * --trace=rings adds a line when a ring starts, stops or is enabled.  The
 * first reading calls in at one place each: vu_trace() from the dispatcher
 * for a message received and from vu_send_reply() for a reply, and
 * vu_trace_ring() where a ring changes state.  Both return at once without
 * --trace.  Sample output: labs/traces/qemu-7.2.trace and
 * labs/traces/dpdk-22.11.trace.  The lines are built here and nowhere else;
 * tests/test_tracedecode.c checks each kind of payload.
 */

/*
 * Names of the virtio feature bits (GET/SET_FEATURES), as the spec names
 * them without their prefix: VIRTIO_NET_F_* (virtio 1.2 §5.1.3, and the
 * bits virtio 1.3 added), VIRTIO_F_* and VIRTIO_RING_F_* (§6 "Reserved
 * Feature Bits"), VHOST_F_LOG_ALL and VHOST_USER_F_PROTOCOL_FEATURES
 * (vhost-user.rst).  Bits 0-23 and 50-63 belong to the device type (here
 * virtio-net), 24-41 to the transport.  A bit without a name prints as bitN.
 */
static const char *const feature_names[64] = {
    [0] = "CSUM", [1] = "GUEST_CSUM", [2] = "CTRL_GUEST_OFFLOADS", [3] = "MTU", [5] = "MAC",
    [6] = "GSO" /* legacy */, [7] = "GUEST_TSO4", [8] = "GUEST_TSO6", [9] = "GUEST_ECN", [10] = "GUEST_UFO",
    [11] = "HOST_TSO4", [12] = "HOST_TSO6", [13] = "HOST_ECN", [14] = "HOST_UFO", [15] = "MRG_RXBUF",
    [16] = "STATUS", [17] = "CTRL_VQ", [18] = "CTRL_RX", [19] = "CTRL_VLAN", [20] = "CTRL_RX_EXTRA",
    [21] = "GUEST_ANNOUNCE", [22] = "MQ", [23] = "CTRL_MAC_ADDR",
    [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "INDIRECT_DESC",
    [29] = "EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM",
    [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV",
    [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ",
    [51] = "HASH_TUNNEL", [52] = "VQ_NOTF_COAL", [53] = "NOTF_COAL", [54] = "GUEST_USO4",
    [55] = "GUEST_USO6", [56] = "HOST_USO", [57] = "HASH_REPORT", [59] = "GUEST_HDRLEN", [60] = "RSS",
    [61] = "RSC_EXT", [62] = "STANDBY", [63] = "SPEED_DUPLEX",
};

/* VHOST_USER_PROTOCOL_F_* (vhost-user.rst "Protocol features"). */
static const char *const protocol_feature_names[64] = {
    [0] = "MQ", [1] = "LOG_SHMFD", [2] = "RARP", [3] = "REPLY_ACK", [4] = "NET_MTU", [5] = "BACKEND_REQ",
    [6] = "CROSS_ENDIAN", [7] = "CRYPTO_SESSION", [8] = "PAGEFAULT", [9] = "CONFIG",
    [10] = "BACKEND_SEND_FD", [11] = "HOST_NOTIFIER", [12] = "INFLIGHT_SHMFD", [13] = "RESET_DEVICE",
    [14] = "INBAND_NOTIFICATIONS", [15] = "CONFIGURE_MEM_SLOTS", [16] = "STATUS", [17] = "XEN_MMAP",
    [18] = "SHARED_OBJECT", [19] = "DEVICE_STATE",
};

/*
 * The trace line is built in one buffer by appending; vu_append() never
 * writes past its end (a hostile message cannot make the line overflow, it
 * is cut short instead).
 */
struct vu_line {
    char text[1024];
    size_t len;
};

static void vu_append(struct vu_line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vu_append(struct vu_line *l, const char *fmt, ...)
{
    if (l->len >= sizeof l->text - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->text + l->len, sizeof l->text - l->len, fmt, ap);
    va_end(ap);
    /* vsnprintf returns what it *would* have written: when that did not
     * fit, the line is full up to its last byte, the terminating NUL. */
    if (n > 0)
        l->len += (size_t)n < sizeof l->text - l->len ? (size_t)n : sizeof l->text - 1 - l->len;
}

/* "0x170008000 (MRG_RXBUF|INDIRECT_DESC|EVENT_IDX|PROTOCOL_FEATURES|VERSION_1)" */
static void vu_append_bits(struct vu_line *l, uint64_t bits, const char *const names[64])
{
    const char *sep = "";
    vu_append(l, " 0x%" PRIx64 " (", bits);
    for (int b = 0; b < 64; b++) {
        if (!(bits & (1ull << b)))
            continue;
        if (names[b])
            vu_append(l, "%s%s", sep, names[b]);
        else
            vu_append(l, "%sbit%d", sep, b);
        sep = "|";
    }
    vu_append(l, ")");
}

/* Header flags: bits 0-1 the version, bit 2 REPLY, bit 3 NEED_REPLY; any
 * other bit is not in the spec and is shown as it is. */
static void vu_append_flags(struct vu_line *l, uint32_t f)
{
    vu_append(l, " flags=0x%x[v%u%s%s", f, f & 3, f & VHOST_USER_REPLY_MASK ? ",REPLY" : "",
              f & VHOST_USER_NEED_REPLY ? ",NEED_REPLY" : "");
    if (f & ~0xfu)
        vu_append(l, ",unknown 0x%x", f & ~0xfu);
    vu_append(l, "]");
}

static void vu_append_payload(struct vu_line *l, const union vu_payload *p, enum vu_payload_kind kind)
{
    switch (kind) {
    case P_NONE:
        break;
    case P_U64:
        vu_append(l, " u64=%" PRIu64, p->u64);
        break;
    case P_ACK:
        vu_append(l, " u64=%" PRIu64 " (%s)", p->u64, p->u64 ? "failure" : "success");
        break;
    case P_MAC: {
        uint8_t m[8];
        memcpy(m, &p->u64, sizeof m);   /* the bytes as they came on the wire */
        vu_append(l, " mac=%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
        break;
    }
    case P_FEATURES:
        vu_append_bits(l, p->u64, feature_names);
        break;
    case P_PROTOCOL:
        vu_append_bits(l, p->u64, protocol_feature_names);
        break;
    case P_STATE:
        vu_append(l, " index=%u num=%u", p->state.index, p->state.num);
        break;
    case P_ADDR:
        vu_append(l, " index=%u flags=0x%x desc=0x%" PRIx64 " avail=0x%" PRIx64 " used=0x%" PRIx64 " log=0x%" PRIx64,
                  p->addr.index, p->addr.flags, p->addr.desc_user_addr, p->addr.avail_user_addr,
                  p->addr.used_user_addr, p->addr.log_guest_addr);
        break;
    case P_RING_FD:
        vu_append(l, " index=%u%s", (unsigned)(p->u64 & VHOST_USER_VRING_IDX_MASK),
                  p->u64 & VHOST_USER_VRING_NOFD ? " NOFD (polling)" : "");
        break;
    case P_LOG:
        vu_append(l, " mmap_size=0x%" PRIx64 " mmap_offset=0x%" PRIx64, p->log.mmap_size, p->log.mmap_offset);
        break;
    case P_FD:
        break;
    case P_MEM:
        vu_append(l, " nregions=%u", p->memory.nregions);
        for (uint32_t i = 0; i < p->memory.nregions && i < VX_MAX_REGIONS; i++) {
            const struct vu_memory_region *r = &p->memory.regions[i];
            vu_append(l, " {gpa=0x%" PRIx64 " size=0x%" PRIx64 " uaddr=0x%" PRIx64 " mmap_offset=0x%" PRIx64 "}",
                      r->guest_phys_addr, r->memory_size, r->userspace_addr, r->mmap_offset);
        }
        break;
    }
}

/*
 * --trace: one line per message, decoded the way the spec describes it:
 *   "<-" what the frontend sent, "->" our reply; the request's name and
 *   number, the header flags, the size, the payload of `kind`, the fds that
 *   came with it (their numbers in this process).
 */
static void vu_trace(const struct vx_dev *dev, const char *dir, const struct vu_msg *msg, enum vu_payload_kind kind)
{
    if (!dev->opt.trace)
        return;
    struct vu_line l = { .len = 0 };
    vu_append(&l, "%s %s (%u)", dir, vu_request_name(msg->hdr.request), msg->hdr.request);
    vu_append_flags(&l, msg->hdr.flags);
    vu_append(&l, " size=%u", msg->hdr.size);
    vu_append_payload(&l, &msg->payload, kind);
    if (msg->nfds > 0) {
        vu_append(&l, " fds:");
        for (int i = 0; i < msg->nfds; i++)
            vu_append(&l, " %d", msg->fds[i]);
    }
    vx_log("trace: %s", l.text);
}

/*
 * A ring changes state.  A start is shown at every --trace level: it is
 * where the handshake ends and packets begin, and its line says what the
 * ring will do (layout, header length, mergeable buffers, event idx).
 * Stops and the enabled bit only at --trace=rings, and a stop only for a
 * ring that had started.  VU_RING_STOPPED is GET_VRING_BASE, VU_RING_DROPPED
 * a frontend that went away with the ring running.
 */
static void vu_trace_ring(const struct vx_dev *dev, const struct vx_vring *vr, enum vu_ring_event event)
{
    switch (event) {
    case VU_RING_STARTED:
        if (dev->opt.trace)
            vx_log("trace: ring %u started: size %u%s, last_avail_idx %u, used idx %u, %u-byte header%s%s",
                   vr->index, vr->num, vr->packed ? " packed" : "", vr->last_avail_idx, vr->last_used_idx,
                   vr->hdr_len, vr->mrg_rxbuf ? ", mergeable RX buffers" : "", vr->event_idx ? ", event idx" : "");
        break;
    case VU_RING_STOPPED:
        if (dev->opt.trace >= VX_TRACE_RINGS && vr->attached)
            vx_log("trace: ring %u stopped (GET_VRING_BASE): last_avail_idx %u, used idx %u%s", vr->index,
                   vr->last_avail_idx, vr->last_used_idx, vr->broken ? ", was broken" : "");
        break;
    case VU_RING_DROPPED:
        if (dev->opt.trace >= VX_TRACE_RINGS && vr->attached)
            vx_log("trace: ring %u stopped (frontend disconnected): last_avail_idx %u, used idx %u", vr->index,
                   vr->last_avail_idx, vr->last_used_idx);
        break;
    case VU_RING_ENABLE:
        if (dev->opt.trace >= VX_TRACE_RINGS)
            vx_log("trace: ring %u %s", vr->index, vr->enabled ? "enabled" : "disabled");
        break;
    }
}

/* === What no frontend may do to us ========================================= */

/*
 * The frontend is hostile until proven otherwise (it may be a compromised
 * QEMU, or a program written to hurt us), and it holds several levers on this
 * process that the first reading does not show.  The rules, and where
 * each is enforced:
 *
 *   1. No frontend holds the control thread.  That thread serves every
 *      device, the signals and --stats.  So it never waits on a frontend:
 *      the connection is read and written without blocking (MSG_DONTWAIT),
 *      a message that arrives in pieces is kept here between wake-ups until
 *      it is whole, and a reply the socket cannot take now is kept and sent
 *      when main.c's poll() says the socket is writable.  A frontend that
 *      sends one byte a second, or never reads its replies, costs us a
 *      buffer, not a thread: vu_io_receive, vu_io_send.
 *   2. Deadlines, per message and per reply (VU_IO_DEADLINE): a message must
 *      be whole, and a reply taken, within that time from its first byte,
 *      or the connection is reset with a line saying which.  A real frontend
 *      writes a message with one sendmsg() and reads each reply at once;
 *      only a broken or hostile one comes near: vu_io_overdue.
 *   3. No fd a frontend gives us can block one of our threads.  The kick,
 *      call and err fds must be eventfds (vhost-user.rst: "the file
 *      descriptor ... is an eventfd"), and anything else is refused; they are
 *      made non-blocking, so that a call write can never wait (a full pipe
 *      would block it, and so does an eventfd whose counter the frontend
 *      has pushed near 2^64 - 1): vu_take_eventfd.  What a poll thread does
 *      when a call cannot be written is in virtqueue.c (vq_call), and how
 *      a thread that blocks all the same is freed, in pmd_loop.c ("Stuck
 *      threads").
 *   4. A fault in guest memory (the frontend shrank the file behind a
 *      region: SIGBUS) is caught, and resets this device's connection only
 *      (fault.c explains the mechanism): in the control thread around
 *      vq_attach (vu_attach_guarded), in the poll threads by pmd_loop.c,
 *      which leaves the faulting address in dev->mem_fault for us to find
 *      at the control loop's next wake-up (vu_deadline).
 */
#define VU_IO_DEADLINE 2.0      /* seconds; see rule 2 */

static int vu_io_overdue(struct vx_dev *dev);           /* rule 2 */
static bool vu_mem_fault_pending(struct vx_dev *dev);   /* rule 4 */

/* --- Rule 1: I/O that never waits ----------------------------------------- */

/* Drop the connection's unfinished business: the fds of a message read in
 * part are ours to close; a reply not yet sent is given up. */
static void vu_io_forget(struct vx_dev *dev)
{
    for (int i = 0; i < dev->io.in_nfds; i++)
        close(dev->io.in_fds[i]);
    dev->io.in_nfds = 0;
    dev->io.in_len = 0;
    dev->io.out_len = dev->io.out_sent = 0;
}

/* The name of the message being read, once its header is in. */
static const char *vu_io_name(const struct vx_dev *dev)
{
    uint32_t request;
    memcpy(&request, dev->io.in, sizeof request);
    return vu_request_name(request);
}

/* Send what the socket takes of the queued reply.  Returns 0 when it has
 * all gone, 1 when some is left (the socket is full: main.c polls for
 * POLLOUT), -1 when the connection failed (logged). */
static int vu_io_flush(struct vx_dev *dev)
{
    struct vu_io *io = &dev->io;
    while (io->out_sent < io->out_len) {
        /* MSG_NOSIGNAL: a frontend that has gone makes this fail with EPIPE
         * instead of raising SIGPIPE. */
        ssize_t n = send(dev->conn_fd, io->out + io->out_sent, io->out_len - io->out_sent,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;
        if (n < 0) {
            uint32_t request;
            memcpy(&request, io->out, sizeof request);
            vx_log("reply to %s: send failed: %s", vu_request_name(request), strerror(errno));
            return -1;
        }
        io->out_sent += (uint32_t)n;
    }
    io->out_len = io->out_sent = 0;
    return 0;
}

/* Queue one reply and send what the socket takes now.  Only one is ever
 * queued: no message is read while a reply waits (vu_io_receive), so a
 * frontend that does not read its replies is not answered again, and the
 * buffer never grows.  Returns 0, or -1 when the connection failed. */
static int vu_io_send(struct vx_dev *dev, const void *bytes, size_t len)
{
    struct vu_io *io = &dev->io;
    if (io->out_len || len > sizeof io->out)
        return -1;      /* cannot happen: see above */
    memcpy(io->out, bytes, len);
    io->out_len = (uint32_t)len;
    io->out_sent = 0;
    io->out_since = vx_now();
    return vu_io_flush(dev) < 0 ? -1 : 0;
}

/* Take the fds that came with one recvmsg.  SCM_RIGHTS data rides with the
 * first byte of what the frontend's sendmsg() wrote, so a message's fds come
 * with its header: those are kept for the message.  Fds that come with
 * payload bytes belong to no header: closed, and the message, missing them,
 * is refused by vu_check_msg. */
static void vu_io_take_fds(struct vx_dev *dev, struct msghdr *mh, bool header)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (header && dev->io.in_nfds < VHOST_USER_MAX_FDS)
                dev->io.in_fds[dev->io.in_nfds++] = fd;
            else
                close(fd);
        }
    }
}

/* One recvmsg of at most `want` bytes of the current message.  Returns the
 * bytes read, 0 when the socket has none now, -1 when the connection must
 * be reset (logged): closed, failed, or more fds than any message carries. */
static ssize_t vu_io_read_some(struct vx_dev *dev, uint32_t want)
{
    struct vu_io *io = &dev->io;
    char control[CMSG_SPACE(VHOST_USER_MAX_FDS * sizeof(int))];
    struct iovec iov = { io->in + io->in_len, want };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control };
    /* MSG_CMSG_CLOEXEC: the guest's memory fds are not inherited by anything
     * this process might ever start. */
    ssize_t r;
    do
        r = recvmsg(dev->conn_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (r < 0) {
        vx_log("connection: recvmsg: %s", strerror(errno));
        return -1;
    }
    vu_io_take_fds(dev, &mh, io->in_len < sizeof(struct vu_header));
    /* More fds than our control buffer holds: the kernel has dropped the
     * ones that did not fit (they never became ours), and no valid message
     * carries that many. */
    if (mh.msg_flags & MSG_CTRUNC) {
        vx_log("message: more than %d fds attached", VHOST_USER_MAX_FDS);
        return -1;
    }
    if (r == 0) {       /* the frontend closed the connection */
        if (io->in_len > 0 && io->in_len < sizeof(struct vu_header))
            vx_log("message: truncated header (%u of %zu bytes): the frontend closed the connection", io->in_len,
                   sizeof(struct vu_header));
        else if (io->in_len > 0)
            vx_log("%s: truncated payload (wanted %u bytes): got %zu, then the frontend closed the connection",
                   vu_io_name(dev), ((const struct vu_header *)io->in)->size, io->in_len - sizeof(struct vu_header));
        return -1;
    }
    if (io->in_len == 0)
        io->in_since = vx_now();
    io->in_len += (uint32_t)r;
    return r;
}

/* The header read so far says how large the payload is; -1 while the
 * header itself is incomplete.  64 bits: the frontend's u32 plus the header
 * must not wrap round (a size of 0xffffffff would, in 32). */
static int64_t vu_io_payload_size(const struct vx_dev *dev)
{
    struct vu_header h;
    if (dev->io.in_len < sizeof h)
        return -1;
    memcpy(&h, dev->io.in, sizeof h);
    return h.size;
}

/*
 * Called from vu_handle_event(), whenever the connection is ready or a
 * deadline has come.  In this order: a fault a poll thread found in this
 * device's guest memory resets the connection; a reply still queued is sent
 * first (until it has gone, nothing more is read); then the socket is read,
 * never past the end of the current message (its fds are the ones that came
 * with its header).  Returns 1 with a whole message in *msg, its fds now
 * owned by the caller; 0 when there is none yet; -1 to reset the connection
 * (logged).
 */
static int vu_io_receive(struct vx_dev *dev, struct vu_msg *msg)
{
    struct vu_io *io = &dev->io;
    if (vu_mem_fault_pending(dev))
        return -1;
    int out = vu_io_flush(dev);
    if (out != 0)
        return out < 0 || vu_io_overdue(dev) ? -1 : 0;
    for (;;) {
        int64_t payload = vu_io_payload_size(dev);
        /* A message that says it is larger than any we accept is refused
         * before its payload is read. */
        if (payload > (int64_t)sizeof(union vu_payload)) {
            vx_log("%s: payload size %lld larger than any message we accept (%zu)", vu_io_name(dev),
                   (long long)payload, sizeof(union vu_payload));
            return -1;
        }
        uint32_t total = (uint32_t)sizeof(struct vu_header) + (payload < 0 ? 0 : (uint32_t)payload);
        if (payload >= 0 && io->in_len == total)
            break;
        ssize_t r = vu_io_read_some(dev, total - io->in_len);
        if (r < 0)
            return -1;
        if (r == 0)
            return vu_io_overdue(dev) ? -1 : 0;
    }
    _Static_assert(sizeof io->in >= sizeof(struct vu_header) + sizeof(union vu_payload), "vu_io.in holds any message");
    /* Whole: into the message, the payload zeroed first (--trace prints it
     * before vu_check_msg() has refused a short one, and must print zeros,
     * not old bytes). */
    memcpy(&msg->hdr, io->in, sizeof msg->hdr);
    memset(&msg->payload, 0, sizeof msg->payload);
    memcpy(&msg->payload, io->in + sizeof msg->hdr, msg->hdr.size);
    memcpy(msg->fds, io->in_fds, sizeof msg->fds);
    msg->nfds = io->in_nfds;
    io->in_nfds = 0;
    io->in_len = 0;
    return 1;
}

/* POLLIN, or POLLOUT while a reply waits for room: we read nothing more
 * until it has gone (a hang-up is reported either way). */
short vu_poll_events(const struct vx_dev *dev)
{
    return dev->io.out_len ? POLLOUT : POLLIN;
}

/* --- Rule 2: deadlines ----------------------------------------------------- */

/* When main.c must call vu_handle_event() even if the socket says nothing:
 * the deadline of a message read in part or of a reply not yet taken, or
 * at once (a time long past) when a poll thread reported a fault (main.c's
 * loop wakes at least once a second to see it).  0: no need. */
double vu_deadline(const struct vx_dev *dev)
{
    if (dev->conn_fd < 0)
        return 0;
    if (__atomic_load_n(&dev->mem_fault, __ATOMIC_RELAXED))
        return 1e-9;
    double t = 0;
    if (dev->io.in_len)
        t = dev->io.in_since + VU_IO_DEADLINE;
    if (dev->io.out_len && (t == 0 || dev->io.out_since + VU_IO_DEADLINE < t))
        t = dev->io.out_since + VU_IO_DEADLINE;
    return t;
}

/* Has the message being read, or the reply being sent, run past its
 * deadline?  Then say which, and the caller resets the connection. */
static int vu_io_overdue(struct vx_dev *dev)
{
    const struct vu_io *io = &dev->io;
    double t = vx_now();
    if (io->out_len && t >= io->out_since + VU_IO_DEADLINE) {
        uint32_t request;
        memcpy(&request, io->out, sizeof request);
        vx_log("reply to %s: %u of %u bytes still unsent after %.1f s: the frontend does not read its replies "
               "(deadline per reply): connection reset", vu_request_name(request), io->out_len - io->out_sent,
               io->out_len, VU_IO_DEADLINE);
        return 1;
    }
    if (io->in_len && t >= io->in_since + VU_IO_DEADLINE) {
        int64_t payload = vu_io_payload_size(dev);
        if (payload < 0)
            vx_log("message: truncated header (%u of %zu bytes): the rest did not come within %.1f s (deadline per "
                   "message): connection reset", io->in_len, sizeof(struct vu_header), VU_IO_DEADLINE);
        else
            vx_log("%s: truncated payload (wanted %lld bytes): got %zu, the rest did not come within %.1f s (deadline "
                   "per message): connection reset", vu_io_name(dev), (long long)payload,
                   io->in_len - sizeof(struct vu_header), VU_IO_DEADLINE);
        return 1;
    }
    return 0;
}

/* --- Rule 3: the fds a frontend gives us ------------------------------------ */

/* Is fd an eventfd?  1: yes; 0: no, and *kind says what it is, for the
 * refusal line; -1: cannot tell.  fstat() names the plain kinds (a pipe, a
 * socket, a device); an eventfd is an anonymous inode, which only its
 * /proc/self/fd link names ("anon_inode:[eventfd]", beside timerfds,
 * epoll fds...), and which some kernels report as a regular file. */
static int vu_is_eventfd(int fd, char *kind, size_t len)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(kind, len, "unusable (%s)", strerror(errno));
        return 0;
    }
    const char *plain = S_ISFIFO(st.st_mode) ? "a pipe" : S_ISSOCK(st.st_mode) ? "a socket"
                      : S_ISCHR(st.st_mode) ? "a character device" : S_ISBLK(st.st_mode) ? "a block device"
                      : S_ISDIR(st.st_mode) ? "a directory" : NULL;
    if (plain) {
        snprintf(kind, len, "%s", plain);
        return 0;
    }
    char path[40], link[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0)
        return -1;      /* no /proc */
    link[n] = '\0';
    if (!strcmp(link, "anon_inode:[eventfd]"))
        return 1;
    snprintf(kind, len, "%s", strncmp(link, "anon_inode:", 11) ? "a regular file" : link);
    return 0;
}

/*
 * SET_VRING_KICK/CALL/ERR: the fd that came, if any, replaces the ring's.
 * It must be an eventfd: a pipe, a socket or /dev/zero in its place would
 * let the frontend block our call writes (a pipe nobody reads is full after
 * 64 KiB) or make the kick always readable.  An anonymous inode we cannot
 * name (no /proc) is tolerated: the O_NONBLOCK below keeps it harmless.
 *
 * O_NONBLOCK: a write to an eventfd blocks while its counter is at
 * 2^64 - 2, which a frontend can arrange with one write of its own; with
 * the flag the write fails with EAGAIN instead (vq_call counts it).  The
 * flag lives in the open file description, which the frontend shares, so
 * we change its copy too.  That is acceptable: the protocol makes us the
 * writer of call fds and the reader of kick fds, and the frontends (QEMU's
 * event notifiers, KVM's irqfd, DPDK's virtio_user) create theirs with
 * EFD_NONBLOCK already.  It is no guarantee either: the frontend can clear
 * the flag again behind our back, and a write may then block after all; for
 * that last case pmd_loop.c's watchdog interrupts the poll thread ("Stuck
 * threads").
 */
static int vu_take_eventfd(struct vu_msg *msg, const char *what, int *slot)
{
    vu_close_fd(slot);
    if (msg->nfds != 1)
        return VU_OK;   /* NOFD */
    int fd = msg->fds[0];
    char kind[64];
    if (vu_is_eventfd(fd, kind, sizeof kind) == 0) {
        vx_log("%s: ring %u: fd is %s, not an eventfd (vhost-user.rst: kick, call and err fds are eventfds)", what,
               msg->ring->index, kind);
        return VU_FAIL;     /* the dispatcher closes it */
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
        vx_log("%s: ring %u: cannot make its fd non-blocking: %s", what, msg->ring->index, strerror(errno));
        return VU_FAIL;
    }
    *slot = fd;
    msg->nfds = 0;
    return VU_OK;
}

/* --- Rule 4: faults in guest memory ----------------------------------------- */

struct vu_attach_args {
    struct vx_vring *vr;
    const struct vx_mem *mem;
    uint64_t features;
};

static int vu_attach_call(void *arg)
{
    struct vu_attach_args *a = arg;
    return vq_attach(a->vr, a->mem, a->features);
}

/* vq_attach() reads the ring (used->idx, the packed descriptors) and writes
 * its flags: in guest memory, so with a guard (fault.c).  A fault fails the
 * attach, and so the message that started the ring: the connection resets. */
static int vu_log_attach(struct vx_dev *dev, struct vx_vring *vr);     /* "Live migration" */

static int vu_attach_guarded(struct vx_dev *dev, struct vx_vring *vr)
{
    struct vu_attach_args a = { vr, &dev->mem, dev->features };
    void *addr = NULL;
    if (vu_log_attach(dev, vr) < 0)
        return -1;
    int r = vx_guarded(vu_attach_call, &a, &addr);
    if (r == 0 && vr->log)
        vq_log_flag_areas(vr);      /* vq_attach wrote the ring's flags: marked */
    if (r == VX_FAULTED) {
        char where[32];
        snprintf(where, sizeof where, "starting ring %u", vr->index);
        if (!vx_fault_log(dev->opt.socket_path, where, &dev->mem, addr)) {
            vx_log("%s: SIGBUS at %p, outside guest memory: aborting", where, addr);   /* a bug of ours */
            abort();
        }
        return -1;
    }
    return r;
}

/* A poll thread left a faulting address in dev->mem_fault (pmd_loop.c, which
 * has stopped the rings it polls and logged the fault): this connection's
 * memory is no longer whole, so it is reset; vu_reset_device clears it. */
static bool vu_mem_fault_pending(struct vx_dev *dev)
{
    if (!__atomic_load_n(&dev->mem_fault, __ATOMIC_SEQ_CST))
        return false;
    vx_log("%s: connection reset after a guest memory fault in a poll thread", dev->opt.socket_path);
    return true;
}
