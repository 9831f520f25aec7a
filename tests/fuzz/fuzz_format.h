/*
 * tests/fuzz/fuzz_format.h - how the two fuzz targets read their input.
 *
 * Shared by the targets (fuzz_vhost_user.c, fuzz_virtqueue.c) and by the
 * seed generator (make_seeds.c), so that a seed means what the target reads.
 * All multi-byte fields are little-endian, as on the machines we run on.
 *
 * Both formats are small scripts: a fixed header, then operations.  A
 * mutated input never "fails to parse": a truncated operation ends the
 * script, an unknown opcode is taken modulo the number of opcodes.
 */
#ifndef VX_FUZZ_FORMAT_H
#define VX_FUZZ_FORMAT_H

#include <stdint.h>

/* === fuzz_vhost_user: a frontend's script ================================= */

/*
 * Header, 4 bytes:
 *   [0] queue pairs - 1 (low 3 bits: 1..8 pairs, what --queues would say)
 *   [1] bit 0: --trace (decode every message on the backend's stderr)
 *   [2..3] reserved
 * Then records, each an opcode byte and its operands:
 *
 *   VUF_OP_MSG   u8 nfds, nfds x u8 fd kind, u16 len, len bytes
 *                Send `len` bytes (normally a 12-byte header and its payload,
 *                but any bytes) in one sendmsg with those fds attached, then
 *                let the backend handle whatever is readable.
 *   VUF_OP_MEM   u32 offset, u16 len, len bytes
 *                The guest writes bytes into guest memory (the memfd that fd
 *                kind VUF_FD_GUEST passes), at offset modulo its size.
 *   VUF_OP_BURST u8 n, u16 len
 *                One poll loop iteration over every ready ring, as pmd_loop.c
 *                does in loopback mode (TX 2k+1 -> RX 2k), then n % 33 more
 *                packets of `len` bytes into every ready RX ring.
 *   VUF_OP_CLOSE The frontend shuts its end (the backend sees EOF); the
 *                target then connects again, as QEMU with reconnect=1 does.
 */
#define VUF_HEADER_SIZE   4
#define VUF_MAX_FDS       12      /* > 8 so that "too many fds" is reachable */
#define VUF_MAX_MSG       4096
#define VUF_GUEST_SIZE    (2u << 20)   /* the guest memfd: 2 MiB */
#define VUF_SMALL_SIZE    8192         /* a memfd smaller than the regions it is sent for */

enum { VUF_OP_MSG, VUF_OP_MEM, VUF_OP_BURST, VUF_OP_CLOSE, VUF_NOPS };

enum {                         /* what an attached fd is */
    VUF_FD_GUEST,              /* the guest memfd, read-write */
    VUF_FD_EVENT,              /* an eventfd (kick, call, err) */
    VUF_FD_SMALL,              /* an 8 KiB memfd: regions larger than their file */
    VUF_FD_PIPE,               /* a pipe: mmap fails (ENODEV) */
    VUF_FD_RDONLY,             /* the guest memfd opened read-only: mmap fails (EACCES) */
    VUF_NFDKINDS
};

/* === fuzz_virtqueue: a guest's ring and the backend's bursts ============== */

/*
 * Guest memory: one or two regions of VQF_REGION bytes each, with guard
 * pages around each.  Region 0 is at guest-physical VQF_GPA0 and frontend
 * virtual VQF_UVA0; region 1 follows it in frontend virtual space, and in
 * guest-physical space too unless layout bit 0 puts it far away.
 *
 * Input: header (struct vqf_header), then header.nops % (VQF_MAX_OPS + 1)
 * operations of 8 bytes (struct vqf_op), then the initial contents of guest
 * memory: region 0 from its first byte, then region 1 (the rest is zero).
 */
#define VQF_REGION   (64u * 1024)
#define VQF_GPA0     0x10000ull            /* guest-physical 0 is not guest memory */
#define VQF_GPA1_FAR 0x100000ull
#define VQF_UVA0     0x7f0000000000ull
#define VQF_MAX_OPS  16

struct vqf_header {
    uint8_t  features;      /* bit 0 MRG_RXBUF, 1 INDIRECT_DESC, 2 EVENT_IDX, 3 VERSION_1,
                               4 RING_PACKED (fuzz_virtqueue: ring size 1 + size_log2),
                               5 CSUM + HOST_TSO4/6 + HOST_ECN (fuzz_virtqueue: headers copied) */
    uint8_t  size_log2;     /* ring size 1 << (size_log2 % 9): 1..256 */
    uint16_t last_avail;    /* SET_VRING_BASE */
    uint32_t desc_off;      /* ring areas: offsets from VQF_UVA0, modulo 2 regions */
    uint32_t avail_off;
    uint32_t used_off;
    uint8_t  layout;        /* bit 0: region 1 far in guest-physical space;
                               bit 1: one region only; bit 2: a call eventfd */
    uint8_t  nops;
    uint8_t  reserved[6];
} __attribute__((packed));

struct vqf_op {
    uint8_t  kind;          /* enum below, modulo VQF_NOPS */
    uint8_t  n;
    uint16_t a;
    uint32_t b;
} __attribute__((packed));

enum {
    VQF_DEQUEUE,    /* vq_dequeue_burst(n % 33 packets, each of room a); b bit 0: vq_dequeue_burst_big
                       and offload.c's ofl_to_nic (fuzz_virtqueue) */
    VQF_ENQUEUE,    /* vq_enqueue_burst(n % 33 packets, lengths a + i * (b & 0xffff), modulo VX_PKT_MAX + 1) */
    VQF_POKE,       /* the guest writes u32 b at offset (n << 16 | a) of guest memory (frontend virtual order) */
    VQF_AVAIL_IDX,  /* the guest sets avail->idx = a */
    VQF_AVAIL_ENTRY,/* the guest sets avail->ring[n % size] = a */
    VQF_REATTACH,   /* the control thread attaches the ring again (as after a new memory table) */
    VQF_NOPS
};

/* === fuzz_offload ========================================================= *
 *
 * Input: struct ofz_header, then one frame (the rest of the input, at most
 * 65535 bytes).  The frame goes, with the header, `copies` times in one
 * burst, through one of offload.c's three directions; the TX and RX rings'
 * offload features come from the two bit masks.
 */
struct ofz_header {
    uint8_t  entry;         /* % 3: 0 guest -> NIC (ofl_to_nic), 1 guest -> guest (ofl_to_guest),
                               2 NIC -> guest (ofl_from_nic) */
    uint8_t  tx_bits;       /* the sender: bit 0 CSUM, 1 HOST_TSO4, 2 HOST_TSO6, 3 HOST_ECN */
    uint8_t  rx_bits;       /* the receiver: bit 0 GUEST_CSUM, 1 GUEST_TSO4, 2 GUEST_TSO6, 3 GUEST_ECN */
    uint8_t  copies;        /* the burst holds the frame (copies % 4) + 1 times */
    uint16_t room;          /* NIC frames of 128 + room % 3969 bytes (128..4096) */
    uint8_t  hdr[10];       /* struct vx_net_hdr, as the guest wrote it */
} __attribute__((packed));

#endif
