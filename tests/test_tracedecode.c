/*
 * tests/test_tracedecode.c - the --trace decoder of vhost_user.c, checked
 * against the spec and the kernel's headers, with no socket file and no
 * vhost-xdp process.
 *
 * Where it sits: linked with vhost_user.c and the data-path files (as the
 * fuzz target is), it drives the real control plane through its own API:
 * vu_init() in client mode (opens nothing), a socketpair whose far end is
 * handed to the device as its connection, and vu_handle_event() for each
 * message, exactly as main.c's loop calls it.  The trace lines vx_log()
 * writes to stderr go to a temporary file (fd 2 is redirected) and are read
 * back after each message.
 *
 * What it asserts, each against ITS OWN list (never the product's tables):
 *   - every front-end request number of vhost-user.rst ("Front-end message
 *     types", 1..43) is named in its "<-" line; numbers outside it print
 *     UNKNOWN; each message gives exactly one line;
 *   - every feature bit macro of <linux/virtio_net.h>, <linux/virtio_config.h>
 *     and <linux/virtio_ring.h> (the header's value, so a wrong bit number
 *     fails) decodes to exactly its name, and so do VHOST_F_LOG_ALL, bit 30
 *     (VHOST_USER_F_PROTOCOL_FEATURES) and the bits virtio 1.3 added;
 *   - every protocol feature bit of vhost-user.rst ("Protocol features");
 *   - bits without a name print as bitN; header flags decode (REPLY,
 *     NEED_REPLY, anything else shown as unknown); fds received are listed;
 *   - our replies are decoded too: offered features and protocol features
 *     as names, GET_QUEUE_NUM, GET_VRING_BASE, REPLY_ACK success/failure;
 *   - no fd is left open afterwards.
 *
 *   tests/test_tracedecode            TAP output; VX_SHOW_LOG=1 prints the trace
 */
#include <linux/vhost_types.h>  /* VHOST_F_LOG_ALL */
#include <linux/virtio_config.h>
#include <linux/virtio_net.h>
#include <linux/virtio_ring.h>

#include "vhost_xdp.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* === TAP ================================================================== */

static int tap_n, tap_failed;

static bool check(bool ok, const char *what)
{
    printf("%sok %d - %s\n", ok ? "" : "not ", ++tap_n, what);
    tap_failed += !ok;
    return ok;
}

/* === The spec, typed here from its text =================================== */

struct named_bit {
    uint32_t number;
    const char *name;
};

/* vhost-user.rst, "Front-end message types": VHOST_USER_<name>, :id: number. */
static const struct named_bit spec_requests[] = {
    { 1, "GET_FEATURES" },           { 2, "SET_FEATURES" },          { 3, "SET_OWNER" },
    { 4, "RESET_OWNER" },            { 5, "SET_MEM_TABLE" },         { 6, "SET_LOG_BASE" },
    { 7, "SET_LOG_FD" },             { 8, "SET_VRING_NUM" },         { 9, "SET_VRING_ADDR" },
    { 10, "SET_VRING_BASE" },        { 11, "GET_VRING_BASE" },       { 12, "SET_VRING_KICK" },
    { 13, "SET_VRING_CALL" },        { 14, "SET_VRING_ERR" },        { 15, "GET_PROTOCOL_FEATURES" },
    { 16, "SET_PROTOCOL_FEATURES" }, { 17, "GET_QUEUE_NUM" },        { 18, "SET_VRING_ENABLE" },
    { 19, "SEND_RARP" },             { 20, "NET_SET_MTU" },          { 21, "SET_BACKEND_REQ_FD" },
    { 22, "IOTLB_MSG" },             { 23, "SET_VRING_ENDIAN" },     { 24, "GET_CONFIG" },
    { 25, "SET_CONFIG" },            { 26, "CREATE_CRYPTO_SESSION" }, { 27, "CLOSE_CRYPTO_SESSION" },
    { 28, "POSTCOPY_ADVISE" },       { 29, "POSTCOPY_LISTEN" },      { 30, "POSTCOPY_END" },
    { 31, "GET_INFLIGHT_FD" },       { 32, "SET_INFLIGHT_FD" },      { 33, "GPU_SET_SOCKET" },
    { 34, "RESET_DEVICE" },          { 35, "VRING_KICK" },           { 36, "GET_MAX_MEM_SLOTS" },
    { 37, "ADD_MEM_REG" },           { 38, "REM_MEM_REG" },          { 39, "SET_STATUS" },
    { 40, "GET_STATUS" },            { 41, "GET_SHARED_OBJECT" },    { 42, "SET_DEVICE_STATE_FD" },
    { 43, "CHECK_DEVICE_STATE" },
};

/* vhost-user.rst, "Protocol features": VHOST_USER_PROTOCOL_F_<name>. */
static const struct named_bit spec_protocol_features[] = {
    { 0, "MQ" },                     { 1, "LOG_SHMFD" },             { 2, "RARP" },
    { 3, "REPLY_ACK" },              { 4, "NET_MTU" },               { 5, "BACKEND_REQ" },
    { 6, "CROSS_ENDIAN" },           { 7, "CRYPTO_SESSION" },        { 8, "PAGEFAULT" },
    { 9, "CONFIG" },                 { 10, "BACKEND_SEND_FD" },      { 11, "HOST_NOTIFIER" },
    { 12, "INFLIGHT_SHMFD" },        { 13, "RESET_DEVICE" },         { 14, "INBAND_NOTIFICATIONS" },
    { 15, "CONFIGURE_MEM_SLOTS" },   { 16, "STATUS" },               { 17, "XEN_MMAP" },
    { 18, "SHARED_OBJECT" },         { 19, "DEVICE_STATE" },
};

/* Every feature bit macro of the UAPI headers: the value is the header's,
 * the expected name is the macro's name without its prefix. */
#define NET(x)  { VIRTIO_NET_F_##x, #x }
#define VF(x)   { VIRTIO_F_##x, #x }
#define RING(x) { VIRTIO_RING_F_##x, #x }
static const struct named_bit header_features[] = {
    NET(CSUM), NET(GUEST_CSUM), NET(CTRL_GUEST_OFFLOADS), NET(MTU), NET(MAC), NET(GSO), NET(GUEST_TSO4),
    NET(GUEST_TSO6), NET(GUEST_ECN), NET(GUEST_UFO), NET(HOST_TSO4), NET(HOST_TSO6), NET(HOST_ECN),
    NET(HOST_UFO), NET(MRG_RXBUF), NET(STATUS), NET(CTRL_VQ), NET(CTRL_RX), NET(CTRL_VLAN),
    NET(CTRL_RX_EXTRA), NET(GUEST_ANNOUNCE), NET(MQ), NET(CTRL_MAC_ADDR), NET(NOTF_COAL),
    NET(HASH_REPORT), NET(RSS), NET(RSC_EXT), NET(STANDBY), NET(SPEED_DUPLEX),
    VF(NOTIFY_ON_EMPTY), VF(ANY_LAYOUT), VF(VERSION_1), VF(ACCESS_PLATFORM), VF(RING_PACKED),
    VF(IN_ORDER), VF(ORDER_PLATFORM), VF(SR_IOV), VF(RING_RESET),
    { VIRTIO_F_IOMMU_PLATFORM, "ACCESS_PLATFORM" },     /* the header's legacy alias */
    RING(INDIRECT_DESC), RING(EVENT_IDX),
    { VHOST_F_LOG_ALL, "LOG_ALL" },                     /* <linux/vhost_types.h> */
    { 30, "PROTOCOL_FEATURES" },                        /* VHOST_USER_F_PROTOCOL_FEATURES, vhost-user.rst */
    /* virtio 1.3 (§5.1.3, §6), not yet in this machine's 6.1 headers: */
    { 38, "NOTIFICATION_DATA" }, { 39, "NOTIF_CONFIG_DATA" }, { 41, "ADMIN_VQ" }, { 51, "HASH_TUNNEL" },
    { 52, "VQ_NOTF_COAL" }, { 54, "GUEST_USO4" }, { 55, "GUEST_USO6" }, { 56, "HOST_USO" },
    { 59, "GUEST_HDRLEN" },
};
#define N(a) (sizeof a / sizeof a[0])

/* The message header (vhost-user.rst "Header"), typed here too. */
#define REQ_GET_FEATURES          1
#define REQ_SET_FEATURES          2
#define REQ_SET_OWNER             3
#define REQ_SET_MEM_TABLE         5
#define REQ_SET_LOG_FD            7
#define REQ_SET_BACKEND_REQ_FD    21
#define REQ_SET_VRING_NUM         8
#define REQ_SET_VRING_ADDR        9
#define REQ_GET_VRING_BASE        11
#define REQ_SET_VRING_KICK        12
#define REQ_SET_VRING_CALL        13
#define REQ_GET_PROTOCOL_FEATURES 15
#define REQ_SET_PROTOCOL_FEATURES 16
#define REQ_GET_QUEUE_NUM         17
#define F_V1          0x1u
#define F_REPLY       0x4u
#define F_NEED_REPLY  0x8u
#define PROTO_MQ        (1ull << 0)
#define PROTO_REPLY_ACK (1ull << 3)

/* === The back-end, in this process ======================================== */

static struct vx_dev dev;
static int fe = -1;             /* the frontend's end of the connection */
static int log_fd = -1;         /* fd 2 points at this file */
static off_t log_read;          /* how much of it we have looked at */
static bool show_log;

/* A new connection, as if the frontend had just connected. */
static void session_open(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("socketpair");
        exit(1);
    }
    /* Like vu_connected(): a message we cut short must not hang us. */
    struct timeval tv = { .tv_sec = 2 };
    setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    fe = sv[0];
    dev.conn_fd = sv[1];
}

/* Hang up; if the back-end did not reset the connection itself, let it
 * forget the device as at exit. */
static void session_close(void)
{
    if (dev.conn_fd >= 0)
        vu_cleanup(&dev);
    close(fe);
    fe = -1;
}

/* Print what the back-end logged as TAP comment lines. */
static void show(const char *log)
{
    for (const char *p = log; *p;) {
        const char *end = strchr(p, '\n');
        int len = end ? (int)(end - p) : (int)strlen(p);
        printf("#     %.*s\n", len, p);
        p += len + (end != NULL);
    }
}

/* What the back-end logged since the last call (a static buffer). */
static const char *new_log(void)
{
    static char text[64 * 1024];
    ssize_t n = pread(log_fd, text, sizeof text - 1, log_read);
    n = n < 0 ? 0 : n;
    text[n] = '\0';
    log_read += n;
    if (show_log)
        show(text);
    return text;
}

/* Send one message (header, payload and fds in one sendmsg, as QEMU does),
 * let the back-end handle it, throw away its reply bytes, and return the
 * log lines it wrote. */
static const char *exchange(uint32_t request, uint32_t flags, const void *payload, uint32_t size, const int *fds,
                            int nfds)
{
    struct { uint32_t request, flags, size; } hdr = { request, flags, size };
    struct iovec iov[2] = { { &hdr, sizeof hdr }, { (void *)payload, size } };
    char control[CMSG_SPACE(8 * sizeof(int))] = { 0 };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = size ? 2 : 1 };
    if (nfds > 0) {
        mh.msg_control = control;
        mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    if (dev.conn_fd < 0 || sendmsg(fe, &mh, MSG_NOSIGNAL) != (ssize_t)(sizeof hdr + size))
        return "(not sent: connection already reset)";
    vu_handle_event(&dev);
    char sink[256];
    while (recv(fe, sink, sizeof sink, MSG_DONTWAIT) > 0)
        ;
    return new_log();
}

static const char *exchange_u64(uint32_t request, uint32_t flags, uint64_t value)
{
    return exchange(request, flags, &value, sizeof value, NULL, 0);
}

/* How many times `needle` occurs in `hay`. */
static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* check() that `log` contains `want`, showing the log when it does not. */
static bool check_has(const char *log, const char *want, const char *what)
{
    bool ok = strstr(log, want) != NULL;
    check(ok, what);
    if (!ok) {
        printf("#   wanted \"%s\" in:\n", want);
        show(log);
    }
    return ok;
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* === The checks =========================================================== */

/* Each request number on a fresh connection with an empty payload: whatever
 * the back-end then does with it (answer, or refuse and reset), its one
 * "<-" line must name it. */
static void check_request_names(void)
{
    int bad = 0;
    char want[96], what[160];
    for (size_t i = 0; i < N(spec_requests); i++) {
        session_open();
        const char *log = exchange(spec_requests[i].number, F_V1, NULL, 0, NULL, 0);
        snprintf(want, sizeof want, "trace: <- %s (%u) flags=0x1[v1] size=0", spec_requests[i].name,
                 spec_requests[i].number);
        if (!strstr(log, want) || count(log, "trace: <-") != 1) {
            printf("#   request %u: wanted one line with \"%s\", got:\n", spec_requests[i].number, want);
            show(log);
            bad++;
        }
        session_close();
    }
    snprintf(what, sizeof what, "every front-end request of vhost-user.rst (%zu, 1..43) named in one trace line",
             N(spec_requests));
    check(bad == 0, what);

    static const uint32_t unknown[] = { 0, 45, 1000, 0xffffffff };
    bad = 0;
    for (size_t i = 0; i < N(unknown); i++) {
        session_open();
        const char *log = exchange(unknown[i], F_V1, NULL, 0, NULL, 0);
        snprintf(want, sizeof want, "trace: <- UNKNOWN (%u)", unknown[i]);
        if (!strstr(log, want)) {
            printf("#   wanted \"%s\", got:\n", want);
            show(log);
            bad++;
        }
        session_close();
    }
    check(bad == 0, "request numbers outside the spec (0, 45, 1000, 0xffffffff) print UNKNOWN (n)");
}

/* SET_FEATURES (or SET_PROTOCOL_FEATURES) with one bit set: the line must
 * end in exactly "0x<value> (<name>)".  Bits we never offered get the
 * connection reset, after the line. */
static int check_one_bit(uint32_t request, uint32_t bit, const char *name)
{
    char want[128];
    uint64_t value = 1ull << bit;
    session_open();
    const char *log = exchange_u64(request, F_V1, value);
    snprintf(want, sizeof want, "size=8 0x%" PRIx64 " (%s)\n", value, name);
    bool ok = strstr(log, want) != NULL;
    if (!ok) {
        printf("#   bit %u: wanted \"size=8 0x%" PRIx64 " (%s)\", got:\n", bit, value, name);
        show(log);
    }
    session_close();
    return !ok;
}

static void check_feature_names(void)
{
    int bad = 0;
    char what[160];
    for (size_t i = 0; i < N(header_features); i++)
        bad += check_one_bit(REQ_SET_FEATURES, header_features[i].number, header_features[i].name);
    snprintf(what, sizeof what, "SET_FEATURES: every UAPI feature macro (virtio_net.h, virtio_config.h, "
             "virtio_ring.h), LOG_ALL, PROTOCOL_FEATURES and virtio 1.3 bits by name (%zu)", N(header_features));
    check(bad == 0, what);

    bad = check_one_bit(REQ_SET_FEATURES, 4, "bit4") + check_one_bit(REQ_SET_FEATURES, 58, "bit58") +
          check_one_bit(REQ_SET_FEATURES, 31, "bit31");
    check(bad == 0, "feature bits without a name (4, 31, 58) print as bitN");

    session_open();
    uint64_t mix = 1ull << 4 | 1ull << VIRTIO_NET_F_MRG_RXBUF | 1ull << VIRTIO_F_VERSION_1 | 1ull << 58;
    const char *log = exchange_u64(REQ_SET_FEATURES, F_V1, mix);
    check_has(log, "0x400000100008010 (bit4|MRG_RXBUF|VERSION_1|bit58)", "several bits: in bit order, |-separated");
    session_close();

    bad = 0;
    for (size_t i = 0; i < N(spec_protocol_features); i++)
        bad += check_one_bit(REQ_SET_PROTOCOL_FEATURES, spec_protocol_features[i].number,
                             spec_protocol_features[i].name);
    snprintf(what, sizeof what, "SET_PROTOCOL_FEATURES: every protocol feature of vhost-user.rst by name (%zu, 0..22)",
             N(spec_protocol_features));
    check(bad == 0, what);
    bad = check_one_bit(REQ_SET_PROTOCOL_FEATURES, 23, "bit23") + check_one_bit(REQ_SET_PROTOCOL_FEATURES, 63, "bit63");
    check(bad == 0, "protocol feature bits without a name (23, 63) print as bitN");
}

static void check_flags(void)
{
    static const struct { uint32_t flags; const char *want, *what; } cases[] = {
        { F_V1, "flags=0x1[v1] size=0", "flags: version 1 alone" },
        { F_V1 | F_NEED_REPLY, "flags=0x9[v1,NEED_REPLY]", "flags: NEED_REPLY decoded" },
        { F_V1 | F_REPLY, "flags=0x5[v1,REPLY]", "flags: REPLY decoded (on a message we received)" },
        { F_V1 | 0x30, "flags=0x31[v1,unknown 0x30]", "flags: bits the spec does not define are shown as unknown" },
        { 0x2, "flags=0x2[v2]", "flags: a wrong version is shown as it is" },
    };
    for (size_t i = 0; i < N(cases); i++) {
        session_open();
        check_has(exchange(REQ_GET_FEATURES, cases[i].flags, NULL, 0, NULL, 0), cases[i].want, cases[i].what);
        session_close();
    }
}

/* The fd numbers listed after "fds:" (-1 if there is no such list). */
static int listed_fds(const char *line, int *out, int max)
{
    const char *p = strstr(line, " fds:");
    if (!p)
        return -1;
    p += 5;
    int n = 0;
    while (*p == ' ' && n < max) {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1)
            break;
        out[n++] = (int)v;
        p = end;
    }
    return n;
}

/* One connection through a QEMU-like start, every reply decoded. */
static void check_handshake_and_replies(void)
{
    char want[256];
    int guest = memfd_create("tracedecode-guest", MFD_CLOEXEC);
    int call = eventfd(0, EFD_CLOEXEC);
    if (guest < 0 || call < 0 || ftruncate(guest, 1 << 20) < 0) {
        check(false, "memfd and eventfd for the handshake");
        return;
    }
    session_open();

    /* The offloads first (issue 13), then what every device offers;
     * --no-offloads (dev.no_offloads) takes the eight offload bits away. */
    uint64_t base = 1ull << VIRTIO_NET_F_MTU | 1ull << VIRTIO_NET_F_MRG_RXBUF | 1ull << VIRTIO_NET_F_GUEST_ANNOUNCE |
                    1ull << VIRTIO_RING_F_INDIRECT_DESC | 1ull << VIRTIO_RING_F_EVENT_IDX | 1ull << 30 |
                    1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_F_RING_PACKED | 1ull << VIRTIO_F_IN_ORDER | 1ull << VHOST_F_LOG_ALL;
    uint64_t offloads = 1ull << VIRTIO_NET_F_CSUM | 1ull << VIRTIO_NET_F_GUEST_CSUM | 1ull << VIRTIO_NET_F_GUEST_TSO4 |
                        1ull << VIRTIO_NET_F_GUEST_TSO6 | 1ull << VIRTIO_NET_F_GUEST_ECN |
                        1ull << VIRTIO_NET_F_HOST_TSO4 | 1ull << VIRTIO_NET_F_HOST_TSO6 | 1ull << VIRTIO_NET_F_HOST_ECN;
    dev.no_offloads = true;
    const char *log = exchange(REQ_GET_FEATURES, F_V1, NULL, 0, NULL, 0);
    snprintf(want, sizeof want, "trace: -> GET_FEATURES (1) flags=0x5[v1,REPLY] size=8 0x%" PRIx64
             " (MTU|MRG_RXBUF|GUEST_ANNOUNCE|LOG_ALL|INDIRECT_DESC|EVENT_IDX|PROTOCOL_FEATURES|VERSION_1|RING_PACKED|IN_ORDER)",
             base);
    check_has(log, want, "reply to GET_FEATURES with --no-offloads: no offload bit, by name");
    dev.no_offloads = false;
    log = exchange(REQ_GET_FEATURES, F_V1, NULL, 0, NULL, 0);
    snprintf(want, sizeof want, "trace: -> GET_FEATURES (1) flags=0x5[v1,REPLY] size=8 0x%" PRIx64
             " (CSUM|GUEST_CSUM|MTU|GUEST_TSO4|GUEST_TSO6|GUEST_ECN|HOST_TSO4|HOST_TSO6|HOST_ECN|MRG_RXBUF|"
             "GUEST_ANNOUNCE|LOG_ALL|INDIRECT_DESC|EVENT_IDX|PROTOCOL_FEATURES|VERSION_1|RING_PACKED|IN_ORDER)",
             base | offloads);
    check_has(log, want, "reply to GET_FEATURES: the features we offer (the offloads too), by name");
    check(strstr(log, "trace: <- GET_FEATURES") && strstr(log, "trace: <- GET_FEATURES") < strstr(log, "trace: ->"),
          "the request's line comes before our reply's");

    log = exchange(REQ_GET_PROTOCOL_FEATURES, F_V1, NULL, 0, NULL, 0);
    check_has(log, "trace: -> GET_PROTOCOL_FEATURES (15) flags=0x5[v1,REPLY] size=8 0x1001f "
              "(MQ|LOG_SHMFD|RARP|REPLY_ACK|NET_MTU|STATUS)", "reply to GET_PROTOCOL_FEATURES: MQ|LOG_SHMFD|RARP|REPLY_ACK|NET_MTU|STATUS");
    log = exchange_u64(REQ_SET_PROTOCOL_FEATURES, F_V1, PROTO_MQ | PROTO_REPLY_ACK);
    check_has(log, "trace: <- SET_PROTOCOL_FEATURES (16) flags=0x1[v1] size=8 0x9 (MQ|REPLY_ACK)",
              "SET_PROTOCOL_FEATURES decoded");
    log = exchange(REQ_GET_QUEUE_NUM, F_V1, NULL, 0, NULL, 0);
    check_has(log, "trace: -> GET_QUEUE_NUM (17) flags=0x5[v1,REPLY] size=8 u64=1", "reply to GET_QUEUE_NUM: u64=1");
    log = exchange(REQ_SET_OWNER, F_V1 | F_NEED_REPLY, NULL, 0, NULL, 0);
    check_has(log, "trace: -> SET_OWNER (3) flags=0x5[v1,REPLY] size=8 u64=0 (success)",
              "REPLY_ACK to SET_OWNER: u64=0 (success)");

    /* The call eventfd: its fd number in the back-end is listed. */
    uint64_t ring0 = 0;
    log = exchange(REQ_SET_VRING_CALL, F_V1, &ring0, sizeof ring0, &call, 1);
    int fds[8];
    check(strstr(log, "trace: <- SET_VRING_CALL (13) flags=0x1[v1] size=8 index=0 fds: ") &&
          listed_fds(log, fds, 8) == 1 && fds[0] > 2, "SET_VRING_CALL: ring index and the one fd received listed");

    /* Two regions of one memfd, each sent as its own fd. */
    struct {
        uint32_t nregions, padding;
        struct { uint64_t gpa, size, uaddr, offset; } r[2];
    } mem = { 2, 0, { { 0x0, 0x80000, 0x7f0000000000, 0x0 }, { 0x100000, 0x80000, 0x7f0000080000, 0x80000 } } };
    int two[2] = { guest, guest };
    log = exchange(REQ_SET_MEM_TABLE, F_V1 | F_NEED_REPLY, &mem, sizeof mem, two, 2);
    check_has(log, "trace: <- SET_MEM_TABLE (5) flags=0x9[v1,NEED_REPLY] size=72 nregions=2 "
              "{gpa=0x0 size=0x80000 uaddr=0x7f0000000000 mmap_offset=0x0} "
              "{gpa=0x100000 size=0x80000 uaddr=0x7f0000080000 mmap_offset=0x80000} fds: ",
              "SET_MEM_TABLE: NEED_REPLY and each region decoded");
    int n = listed_fds(log, fds, 8);
    check(n == 2 && fds[0] > 2 && fds[1] > 2 && fds[0] != fds[1], "SET_MEM_TABLE: both fds received listed");
    check_has(log, "trace: -> SET_MEM_TABLE (5) flags=0x5[v1,REPLY] size=8 u64=0 (success)",
              "REPLY_ACK to SET_MEM_TABLE: u64=0 (success)");

    struct { uint32_t index, flags; uint64_t desc, used, avail, logaddr; } addr = {
        0, 0, 0x7f0000001000, 0x7f0000003000, 0x7f0000002000, 0 };
    log = exchange(REQ_SET_VRING_ADDR, F_V1, &addr, sizeof addr, NULL, 0);
    check_has(log, "trace: <- SET_VRING_ADDR (9) flags=0x1[v1] size=40 index=0 flags=0x0 desc=0x7f0000001000 "
              "avail=0x7f0000002000 used=0x7f0000003000 log=0x0", "SET_VRING_ADDR: the three ring addresses");
    uint64_t nofd = 1 | 0x100;
    log = exchange(REQ_SET_VRING_KICK, F_V1, &nofd, sizeof nofd, NULL, 0);
    check_has(log, "trace: <- SET_VRING_KICK (12) flags=0x1[v1] size=8 index=1 NOFD (polling)\n",
              "SET_VRING_KICK: NOFD decoded, no fd listed");
    struct { uint32_t index, num; } state = { 1, 0 };
    log = exchange(REQ_GET_VRING_BASE, F_V1, &state, sizeof state, NULL, 0);
    check_has(log, "trace: -> GET_VRING_BASE (11) flags=0x5[v1,REPLY] size=8 index=1 num=0",
              "reply to GET_VRING_BASE: the vring state");

    /* A refused message with NEED_REPLY: the failure is in our reply. */
    state = (typeof(state)){ 0, 3 };
    log = exchange(REQ_SET_VRING_NUM, F_V1 | F_NEED_REPLY, &state, sizeof state, NULL, 0);
    check_has(log, "trace: <- SET_VRING_NUM (8) flags=0x9[v1,NEED_REPLY] size=8 index=0 num=3",
              "SET_VRING_NUM: vring state decoded");
    check_has(log, "trace: -> SET_VRING_NUM (8) flags=0x5[v1,REPLY] size=8 u64=1 (failure)",
              "REPLY_ACK to a refused SET_VRING_NUM: u64=1 (failure)");
    session_close();

    /* Fds are listed on a message we refuse too. */
    session_open();
    log = exchange(REQ_SET_BACKEND_REQ_FD, F_V1, NULL, 0, &call, 1);
    check(strstr(log, "trace: <- SET_BACKEND_REQ_FD (21) flags=0x1[v1] size=0 fds: ") && listed_fds(log, fds, 8) == 1 &&
          strstr(log, "request 21 (SET_BACKEND_REQ_FD) not supported"),
          "a refused SET_BACKEND_REQ_FD: its fd listed, then refused");
    session_close();
    close(guest);
    close(call);
}

int main(void)
{
    show_log = getenv("VX_SHOW_LOG") != NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    char path[] = "/tmp/vx-tracedecode-XXXXXX";
    log_fd = mkstemp(path);
    if (log_fd < 0 || dup2(log_fd, 2) < 0) {
        perror("trace log file");
        return 1;
    }
    unlink(path);
    alarm(60);      /* a hang is a failure, not a stuck CI */

    int fds_before = open_fds();
    static const struct vu_options opt = { .socket_path = "tracedecode", .client = true,
                                           .trace = VX_TRACE_MESSAGES };
    if (!check(vu_init(&dev, &opt) == 0, "vu_init in client mode (opens nothing)")) {
        printf("1..%d\n", tap_n);
        return 1;
    }
    dev.queue_pairs = 1;

    check_request_names();
    check_feature_names();
    check_flags();
    check_handshake_and_replies();

    vu_cleanup(&dev);
    char what[80];
    snprintf(what, sizeof what, "no fd left open (%d before, %d after)", fds_before, open_fds());
    check(open_fds() == fds_before, what);
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}
