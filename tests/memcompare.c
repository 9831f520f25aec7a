/*
 * tests/memcompare.c - compare two dumps of a guest's memory, the bytes a
 * vhost-user backend writes apart from the rest (tests/test_migrate.sh).
 *
 *   memcompare SRC DST RING... [INDEX=TABLE...]
 *
 * SRC and DST are the same guest-physical range (from 0) of the source's and
 * the destination's memory after a live migration, dumped with QEMU's
 * pmemsave.  Each RING is INDEX:LAYOUT:NUM:DESC:DRIVER:DEVICE, LAYOUT split or
 * packed, the three areas' guest-physical addresses in hex (split: descriptor
 * table, avail ring, used ring; packed: descriptor ring, driver and device
 * event suppression areas; virtio 1.2 §2.7, §2.8).  An even INDEX is an RX
 * ring (virtio 1.2 §5.1.2: receiveq1, transmitq1, receiveq2, ...).
 *
 * "Ours", the bytes a backend may write in guest memory (virtio 1.2 §2.7.8,
 * §2.8.21 and the device's RX path):
 *   - a split ring's used ring: flags, idx, ring[NUM], avail_event
 *     (6 + 8 * NUM bytes);
 *   - a packed ring's descriptor ring (the device writes used descriptors
 *     over the available ones) and its device event suppression area (4
 *     bytes); the driver event area is the driver's and is not ours;
 *   - of an RX ring, every buffer a descriptor makes device-writable
 *     (VIRTQ_DESC_F_WRITE): [addr, addr + len), as the descriptor table in
 *     SRC lists it, indirect tables followed one level.  The table is read
 *     from the SOURCE's dump: what the guest had posted when it stopped.
 *     Entries the guest has since taken back and not reused still name
 *     their old buffers; those are counted as ours too (we wrote them once).
 *     A packed ring's used descriptor keeps the buffer's address and says
 *     how much we wrote, with the WRITE flag: the same rule covers it.
 *     INDEX=TABLE: a copy of ring INDEX's descriptor table taken from the
 *     source's memory earlier, during the migration (pmemsave): the buffers
 *     it lists are ours too.  Without them, a buffer we filled in the last
 *     rounds, which the guest has read and replaced with a new one since
 *     (Linux's virtio-net reposts the descriptor with another buffer at
 *     once), is listed nowhere in SRC, and a write to it that was never
 *     logged would count as the guest's.
 * Everything else is "others": the guest's own writes, which QEMU tracks
 * itself.  Under TCG QEMU 7.2 sometimes loses one of those (the test's
 * header says what was seen), so the test judges ours and prints others.
 *
 * Output, one line each (pages named by their guest-physical address, the
 * first 8, ours with the area they lie in):
 *   judged: N bytes in R ranges (used rings or packed rings, event areas, RX buffers)
 *   ours: N differing bytes in M pages (0x... ring 0 RX buffer, ...)
 *   others: N differing bytes in M pages (0x..., ...)
 * Exit status 0 if no byte of ours differs, 1 if one does, 2 on an error
 * (a dump missing or of the wrong size, a bad RING).
 *
 * Little-endian fields read with memcpy: virtio 1.x rings are little-endian,
 * and the test runs on x86.  libc only.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE        4096u
#define DESC_SIZE   16u          /* split and packed descriptors alike */
#define F_WRITE     2u           /* VIRTQ_DESC_F_WRITE */
#define F_INDIRECT  4u           /* VIRTQ_DESC_F_INDIRECT */
#define MAX_LISTED  8

/* A range of ours, with what it is, to name a differing page. */
struct range {
    uint64_t start, end;        /* [start, end), clipped to the dump */
    char what[64];
};

static const uint8_t *src_mem, *dst_mem;
static uint64_t mem_size;
static struct range *ranges;
static size_t nranges, ranges_cap;
static uint8_t *ours;            /* one bit per byte of the dump: 1 = ours */
static unsigned ring_num[65536];  /* NUM of each ring given, 0 if none */
static bool ring_packed[65536];

static void die(const char *what)
{
    fprintf(stderr, "memcompare: %s\n", what);
    exit(2);
}

/* Add [start, start + len) to ours, the part inside the dump. */
static void add_range(uint64_t start, uint64_t len, const char *what)
{
    if (start >= mem_size || len == 0)
        return;
    uint64_t end = len > mem_size - start ? mem_size : start + len;
    if (nranges == ranges_cap) {
        ranges_cap = ranges_cap ? 2 * ranges_cap : 256;
        ranges = realloc(ranges, ranges_cap * sizeof *ranges);
        if (!ranges)
            die("out of memory");
    }
    struct range *r = &ranges[nranges++];
    r->start = start, r->end = end;
    snprintf(r->what, sizeof r->what, "%s", what);
    uint64_t b = start;
    for (; b < end && b % 8; b++)             /* bit by bit to a whole byte, */
        ours[b / 8] |= (uint8_t)(1u << (b % 8));
    if (end - b >= 8) {                       /* then whole bytes of the bitmap, */
        memset(ours + b / 8, 0xff, (end - b) / 8);
        b += (end - b) / 8 * 8;
    }
    for (; b < end; b++)                      /* then the tail */
        ours[b / 8] |= (uint8_t)(1u << (b % 8));
}

/* Descriptor i of the table at offset `table` of an image `size` bytes
 * long (the source's dump, or an earlier copy of a table): false if it does
 * not fit. */
static bool read_desc(const uint8_t *image, uint64_t size, uint64_t table, uint64_t i, uint64_t *addr, uint32_t *len,
                      uint16_t *flags, bool packed)
{
    uint64_t at = table + i * DESC_SIZE;
    if (table >= size || at > size - DESC_SIZE)
        return false;
    memcpy(addr, image + at, 8);
    memcpy(len, image + at + 8, 4);
    memcpy(flags, image + at + (packed ? 14 : 12), 2);      /* split: flags, next; packed: id, flags */
    return true;
}

/* The device-writable buffers of an indirect table (one level: virtio 1.2
 * §2.7.5.3.1 forbids an indirect descriptor inside one). */
static void add_indirect(unsigned ring, uint64_t table, uint32_t bytes, bool packed, uint64_t slot)
{
    char what[64];
    for (uint64_t j = 0; j < bytes / DESC_SIZE; j++) {
        uint64_t addr;
        uint32_t len;
        uint16_t flags;
        if (!read_desc(src_mem, mem_size, table, j, &addr, &len, &flags, packed))
            return;
        if (flags & F_WRITE) {
            snprintf(what, sizeof what, "ring %u RX buffer (indirect, slot %" PRIu64 ")", ring, slot);
            add_range(addr, len, what);
        }
    }
}

/* An RX ring's buffers: every device-writable descriptor of the table at
 * `table` in `image` (the source's dump, or an earlier copy: `when`). */
static void add_rx_buffers(unsigned ring, const uint8_t *image, uint64_t size, uint64_t table, uint32_t num,
                           bool packed, const char *when)
{
    char what[64];
    snprintf(what, sizeof what, "ring %u RX buffer%s", ring, when);
    for (uint64_t i = 0; i < num; i++) {
        uint64_t addr;
        uint32_t len;
        uint16_t flags;
        if (!read_desc(image, size, table, i, &addr, &len, &flags, packed))
            return;
        if (flags & F_INDIRECT)
            add_indirect(ring, addr, len, packed, i);
        else if (flags & F_WRITE)
            add_range(addr, len, what);
    }
}

/* One RING argument: INDEX:LAYOUT:NUM:DESC:DRIVER:DEVICE. */
static void add_ring(const char *arg)
{
    unsigned index, num;
    char layout[8];
    uint64_t desc, driver, device;
    char what[64];
    if (sscanf(arg, "%u:%7[a-z]:%u:%" SCNx64 ":%" SCNx64 ":%" SCNx64, &index, layout, &num, &desc, &driver,
               &device) != 6 || num == 0 || num > 32768)
        die("a RING is INDEX:split|packed:NUM:DESC:DRIVER:DEVICE (hex addresses)");
    (void)driver;               /* the driver's area (avail ring, driver event area): never ours */
    bool packed = strcmp(layout, "packed") == 0;
    if (!packed && strcmp(layout, "split") != 0)
        die("a RING's layout is split or packed");
    if (packed) {
        snprintf(what, sizeof what, "ring %u descriptor ring", index);
        add_range(desc, (uint64_t)num * DESC_SIZE, what);
        snprintf(what, sizeof what, "ring %u device event area", index);
        add_range(device, 4, what);
    } else {
        snprintf(what, sizeof what, "ring %u used ring", index);
        add_range(device, 6 + 8 * (uint64_t)num, what);
    }
    if (index % 2 == 0)
        add_rx_buffers(index, src_mem, mem_size, desc, num, packed, "");
    if (index < 65536)
        ring_num[index] = num, ring_packed[index] = packed;
}

/* INDEX=TABLE: an earlier copy of an RX ring's descriptor table.  One that
 * cannot be read (the monitor did not write it) is reported and left out:
 * it only narrows what is judged. */
static void add_table_copy(const char *arg)
{
    unsigned index;
    int at = 0;
    if (sscanf(arg, "%u=%n", &index, &at) != 1 || at == 0 || index >= 65536 || ring_num[index] == 0 || index % 2)
        die("INDEX=TABLE: INDEX must be an RX ring given before");
    FILE *f = fopen(arg + at, "rb");
    uint64_t size = (uint64_t)ring_num[index] * DESC_SIZE;
    uint8_t *copy = malloc(size);
    if (!copy)
        die("out of memory");
    if (!f || fread(copy, 1, size, f) != size) {
        printf("note: %s: not a whole descriptor table, left out\n", arg + at);
    } else {
        add_rx_buffers(index, copy, size, 0, ring_num[index], ring_packed[index], " (an earlier table)");
    }
    if (f)
        fclose(f);
    free(copy);
}

/* What a differing byte at b of ours lies in. */
static const char *what_at(uint64_t b)
{
    for (size_t i = 0; i < nranges; i++)
        if (b >= ranges[i].start && b < ranges[i].end)
            return ranges[i].what;
    return "?";
}

static const uint8_t *map_dump(const char *path, uint64_t *size)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size <= 0) {
        fprintf(stderr, "memcompare: %s: %s\n", path, fd < 0 ? strerror(errno) : "empty");
        exit(2);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        die("mmap of a dump failed");
    *size = (uint64_t)st.st_size;
    return p;
}

/* One class of differing bytes: counts and the first pages, for its line. */
struct tally {
    uint64_t bytes, pages;
    char list[MAX_LISTED * 80];
};

static void tally_page(struct tally *t, uint64_t page, uint64_t bytes, const char *what)
{
    if (bytes == 0)
        return;
    t->bytes += bytes;
    if (t->pages++ < MAX_LISTED) {
        size_t n = strlen(t->list);
        snprintf(t->list + n, sizeof t->list - n, "%s0x%" PRIx64 "%s%s", n ? ", " : "", page * PAGE,
                 what ? " " : "", what ? what : "");
    }
}

static void print_tally(const char *name, const struct tally *t)
{
    printf("%s: %" PRIu64 " differing bytes in %" PRIu64 " pages%s%s%s%s\n", name, t->bytes, t->pages,
           t->pages ? " (" : "", t->list, t->pages > MAX_LISTED ? ", ..." : "", t->pages ? ")" : "");
}

int main(int argc, char **argv)
{
    if (argc < 3)
        die("usage: memcompare SRC DST RING... [INDEX=TABLE...] (RING: INDEX:split|packed:NUM:DESC:DRIVER:DEVICE)");
    uint64_t dst_size;
    src_mem = map_dump(argv[1], &mem_size);
    dst_mem = map_dump(argv[2], &dst_size);
    if (dst_size != mem_size)
        die("the two dumps differ in size");
    ours = calloc(mem_size / 8 + 1, 1);
    if (!ours)
        die("out of memory");
    for (int i = 3; i < argc; i++)             /* the rings first, then the copies of their tables */
        if (!strchr(argv[i], '='))
            add_ring(argv[i]);
    for (int i = 3; i < argc; i++)
        if (strchr(argv[i], '='))
            add_table_copy(argv[i]);
    uint64_t judged = 0;
    for (uint64_t b = 0; b < mem_size; b += 8)     /* the bytes of ours, counted once */
        judged += (uint64_t)__builtin_popcount(ours[b / 8]);
    printf("judged: %" PRIu64 " bytes in %zu ranges (used rings or packed rings, event areas, RX buffers)\n",
           judged, nranges);

    /* Page by page; a page that is equal (nearly all) costs one memcmp. */
    struct tally ours_t = { 0 }, others_t = { 0 };
    for (uint64_t page = 0; page * PAGE < mem_size; page++) {
        uint64_t at = page * PAGE, n = mem_size - at < PAGE ? mem_size - at : PAGE;
        if (memcmp(src_mem + at, dst_mem + at, n) == 0)
            continue;
        uint64_t mine = 0, theirs = 0, first_mine = 0;
        for (uint64_t b = at; b < at + n; b++) {
            if (src_mem[b] == dst_mem[b])
                continue;
            if (ours[b / 8] & (1u << (b % 8))) {
                if (mine++ == 0)
                    first_mine = b;
            } else {
                theirs++;
            }
        }
        tally_page(&ours_t, page, mine, mine ? what_at(first_mine) : NULL);
        tally_page(&others_t, page, theirs, NULL);
    }
    print_tally("ours", &ours_t);
    print_tally("others", &others_t);
    return ours_t.bytes ? 1 : 0;
}
