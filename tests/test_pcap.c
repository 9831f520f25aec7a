/*
 * tests/test_pcap.c - --pcap FILE and --pcap-limit, checked by reading the file.
 *
 * Runs vhost-xdp --loopback --pcap FILE, connects as QEMU 7.2 would
 * (tests/frontend.c), and sends frames through the loopback: first a dozen
 * made here, of 0 to 3000 bytes, one at a time (the 3000-byte one is too big
 * for the guest's RX buffers, so it is forwarded from the guest but never
 * given to it), then 300 of the frontend's own numbered frames.  After
 * SIGTERM it parses the file: file header (magic, version, snaplen, link
 * type LINUX_SLL), and for each record incl_len, orig_len and the SLL header
 * (direction, source MAC, ethertype), and checks that the "Out" records are
 * exactly the frames the guest sent and the "In" records exactly the frames
 * it received, in order, and that the counts agree with vhost-xdp's exit
 * lines.  Then: a small --pcap-limit (the file stays under it and the log
 * says capture stopped), an unwritable path (one line, exit status 1), bad
 * option values (exit status 2), and, if tcpdump is installed, `tcpdump -r`.
 *
 *   tests/test_pcap [path/to/vhost-xdp]     TAP output
 */
#include "frontend.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NBULK      300
#define SLL_OUT    4            /* PACKET_OUTGOING: the guest sent it */
#define SLL_IN     0            /* PACKET_HOST: given to the guest */
#define TOO_BIG    3000         /* more than the 1526-byte RX buffers hold without MRG_RXBUF */

static const uint32_t crafted_len[] = { 0, 1, 13, 14, 15, 60, 61, 200, 1000, 1514, TOO_BIG, 64 };
#define NCRAFTED (int)(sizeof crafted_len / sizeof crafted_len[0])

static char pcap_path[2][160];  /* the two runs' files, removed at exit */

static void remove_pcaps(void)
{
    for (int i = 0; i < 2; i++)
        if (pcap_path[i][0])
            unlink(pcap_path[i]);
}

/* === Frames made here ===================================================== */

/* Frame k: to 02:00:00:00:00:01 from 02:aa:bb:cc:dd:k, ethertype 0x88b6,
 * then bytes unique to (k, position); frames under 14 bytes are all pattern. */
static void crafted_fill(uint8_t *p, int k, uint32_t len)
{
    static const uint8_t eth[14] = { 2, 0, 0, 0, 0, 1, 2, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0x88, 0xb6 };
    for (uint32_t i = 0; i < len; i++)
        p[i] = len >= 14 && i < 14 ? (i == 11 ? (uint8_t)k : eth[i]) : (uint8_t)(i * 7 + k * 31 + 1);
}

/* Each crafted frame alone: sent, its TX descriptor back, and (but for the
 * one too big) received byte for byte. */
static bool crafted_traffic(struct conn *c, struct pair *q)
{
    uint8_t want[4096], got[MAX_FRAME];
    for (int k = 0; k < NCRAFTED; k++) {
        crafted_fill(want, k, crafted_len[k]);
        if (!frame_send(c, q, want, crafted_len[k]) || !tx_wait_done(c, q))
            return false;
        if (crafted_len[k] == TOO_BIG)
            continue;       /* dropped on RX: the next frame received must be k + 1 */
        int n = frame_recv(c, q, got, sizeof got);
        if (n < 0)
            return false;
        if ((uint32_t)n != crafted_len[k] || memcmp(got, want, (size_t)n) != 0)
            return fail(c, "crafted frame %d: sent %u bytes, received %d different ones", k, crafted_len[k], n);
    }
    return true;
}

/* === The pcap file ======================================================== */

struct pcap_file {
    uint8_t *bytes;
    size_t size;
};

static bool read_file(const char *path, struct pcap_file *f)
{
    FILE *in = fopen(path, "rb");
    struct stat st;
    f->bytes = NULL;
    if (!in || fstat(fileno(in), &st) != 0) {
        if (in)
            fclose(in);
        return false;
    }
    f->size = (size_t)st.st_size;
    f->bytes = malloc(f->size + 1);
    bool ok = f->bytes && fread(f->bytes, 1, f->size, in) == f->size;
    fclose(in);
    return ok;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);       /* host byte order: the magic said so */
    return v;
}

static uint16_t get16be(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* One record, as the test sees it: direction and the frame rebuilt (the
 * SLL header gives the source MAC and ethertype; the destination MAC is not
 * in the file, so it comes back as zeros). */
struct record {
    int dir;
    uint32_t len;           /* frame length */
    uint8_t frame[MAX_FRAME + 4096];
    uint32_t ts_sec, ts_usec;
};

/* Parse the record at *off, checking its headers.  Returns false with a
 * reason in why (at the end of the file: why empty). */
static bool next_record(const struct pcap_file *f, size_t *off, struct record *r, char *why, size_t wlen)
{
    why[0] = 0;
    if (*off == f->size)
        return false;
    if (f->size - *off < 16 + 16) {
        snprintf(why, wlen, "record at byte %zu: %zu bytes left, less than its headers", *off, f->size - *off);
        return false;
    }
    const uint8_t *p = f->bytes + *off;
    uint32_t incl = get32(p + 8), orig = get32(p + 12);
    if (incl != orig || incl < 16 || incl > f->size - *off - 16) {
        snprintf(why, wlen, "record at byte %zu: incl_len %u orig_len %u (file has %zu bytes after the header)", *off,
                 incl, orig, f->size - *off - 16);
        return false;
    }
    const uint8_t *sll = p + 16, *data = p + 32;
    uint16_t pkttype = get16be(sll), hatype = get16be(sll + 2), halen = get16be(sll + 4);
    uint32_t data_len = incl - 16;
    r->dir = pkttype;
    r->ts_sec = get32(p);
    r->ts_usec = get32(p + 4);
    if ((pkttype != SLL_OUT && pkttype != SLL_IN) || hatype != 1 || (halen != 6 && halen != 0) ||
        (halen == 0 && (get16be(sll + 14) != 0 || memcmp(sll + 6, "\0\0\0\0\0\0\0\0", 8) != 0)) ||
        (halen == 6 && (sll[12] || sll[13])) || r->ts_usec >= 1000000) {
        snprintf(why, wlen, "record at byte %zu: SLL packet type %u, hardware type %u, address length %u, usec %u",
                 *off, pkttype, hatype, halen, r->ts_usec);
        return false;
    }
    if (halen == 6) {       /* Ethernet header rebuilt: zero destination, source, ethertype */
        memset(r->frame, 0, 6);
        memcpy(r->frame + 6, sll + 6, 6);
        memcpy(r->frame + 12, sll + 14, 2);
        memcpy(r->frame + 14, data, data_len);
        r->len = 14 + data_len;
    } else {                /* a frame shorter than an Ethernet header, recorded whole */
        memcpy(r->frame, data, data_len);
        r->len = data_len;
    }
    *off += 16 + incl;
    return true;
}

/* The file header; *off is set past it. */
static bool check_file_header(const struct pcap_file *f, size_t *off)
{
    const uint8_t *p = f->bytes;
    bool ok = f->size >= 24;
    ok = check(ok && get32(p) == 0xa1b2c3d4, "pcap: magic 0xa1b2c3d4 (classic pcap, microseconds, our byte order)");
    ok = check(ok && p[4] == 2 && p[5] == 0 && p[6] == 4 && p[7] == 0, "pcap: version 2.4") && ok;
    ok = check(ok && get32(p + 8) == 0 && get32(p + 12) == 0, "pcap: thiszone and sigfigs 0") && ok;
    ok = check(ok && get32(p + 16) >= 65550, "pcap: snaplen %u holds any frame vhost-xdp carries",
               f->size >= 24 ? get32(p + 16) : 0) && ok;
    ok = check(ok && get32(p + 20) == 113, "pcap: link type 113 (LINUX_SLL)") && ok;
    *off = 24;
    return ok;
}

/* What the records should be, per direction, in order. */
struct expect {
    int n_out, n_in;
    uint32_t salt;          /* the bulk frames' salt (pair 0) */
};

/* Is the record the one expected as the i-th of its direction?  The
 * crafted frames come first, then the bulk ones numbered 0..NBULK-1. */
static bool record_matches(const struct record *r, int i, const struct expect *e, char *why, size_t wlen)
{
    uint8_t want[4096];
    uint32_t len;
    int ncrafted = r->dir == SLL_OUT ? NCRAFTED : NCRAFTED - 1;
    if (i < ncrafted) {
        int k = r->dir == SLL_OUT || i < NCRAFTED - 2 ? i : i + 1;     /* "In" skips the TOO_BIG one */
        len = crafted_len[k];
        crafted_fill(want, k, len);
        if (len >= 14)
            memset(want, 0, 6);                 /* the destination MAC is not in the file */
        if (r->len == len && memcmp(r->frame, want, len) == 0)
            return true;
        snprintf(why, wlen, "crafted frame %d (%u bytes): the record has %u bytes%s", k, len, r->len,
                 r->len == len ? ", different ones" : "");
        return false;
    }
    /* A bulk frame (tests/frontend.c's frame_fill): source 02:00:00:00:00:02,
     * ethertype 0x88b5, then seq (4 bytes), length (2), salt (2 bytes, LE). */
    uint32_t seq = (uint32_t)(i - ncrafted);
    const uint8_t *f = r->frame;
    uint32_t got_seq = r->len >= 22 ? (uint32_t)f[14] << 24 | (uint32_t)f[15] << 16 | (uint32_t)f[16] << 8 | f[17] : ~0u;
    static const uint8_t src[6] = { 2, 0, 0, 0, 0, 2 };
    if (r->len >= 22 && memcmp(f + 6, src, 6) == 0 && f[12] == 0x88 && f[13] == 0xb5 && got_seq == seq &&
        (uint32_t)(f[18] << 8 | f[19]) == r->len && f[20] == (uint8_t)e->salt && f[21] == (uint8_t)(e->salt >> 8))
        return true;
    snprintf(why, wlen, "bulk frame %u: the record has %u bytes, seq %u", seq, r->len, got_seq);
    return false;
}

/* Every record of the first run, against what was sent.  The "In" record
 * of a frame must also be byte for byte its "Out" record: in loopback the
 * guest receives what it sent. */
static void check_records(const struct pcap_file *f, const struct expect *e, long t0, long t1, int *nrec)
{
    size_t off;
    char why[300] = "";
    *nrec = 0;
    if (!check_file_header(f, &off))
        return;
    static struct record r, outs[NCRAFTED + NBULK];
    int n[2] = { 0, 0 }, bad = 0, ts_bad = 0, in_ne_out = 0;
    char first_bad[400] = "";
    while (next_record(f, &off, &r, why, sizeof why)) {
        int d = r.dir == SLL_OUT;
        if ((long)r.ts_sec < t0 || (long)r.ts_sec > t1)
            ts_bad++;
        char w[200];
        if (!record_matches(&r, n[d], e, w, sizeof w) && bad++ == 0)
            snprintf(first_bad, sizeof first_bad, "%s record %d: %s", d ? "Out" : "In", n[d], w);
        if (d && n[1] < NCRAFTED + NBULK)
            outs[n[1]] = r;
        if (!d) {
            /* In #i is Out #i, but for the crafted frame that never came back. */
            int o = n[0] < NCRAFTED - 2 ? n[0] : n[0] + 1;
            if (o >= n[1] || outs[o].len != r.len || memcmp(outs[o].frame, r.frame, r.len) != 0)
                in_ne_out++;
        }
        n[d]++;
        (*nrec)++;
    }
    check(!why[0], "pcap: every record parses (incl_len == orig_len, SLL header)%s%s", why[0] ? ": " : "", why);
    check(n[1] == e->n_out && n[0] == e->n_in, "pcap: %d Out and %d In records (want %d and %d)", n[1], n[0],
          e->n_out, e->n_in);
    check(bad == 0, "pcap: each record is the frame sent/received, in order, with its direction%s%s",
          bad ? ": " : "", first_bad);
    check(in_ne_out == 0, "pcap: each In record equals the Out record of the same frame (%d differ)", in_ne_out);
    check(ts_bad == 0, "pcap: timestamps are the wall-clock time of the run (%d outside it)", ts_bad);
}

/* === Running vhost-xdp outside tests/frontend.c =========================== */

/* Run a shell command, its stderr and stdout into out; returns the exit status. */
static int run(const char *cmd, char *out, size_t len)
{
    char full[1200];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    size_t n = 0;
    out[0] = 0;
    if (!p)
        return -1;
    while (n + 1 < len && fgets(out + n, (int)(len - n), p))
        n += strlen(out + n);
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void bad_usage(const char *binary, const char *opts, int want_status, const char *want_text)
{
    char cmd[600], out[2000];
    snprintf(cmd, sizeof cmd, "'%s' --socket %s --loopback %s", binary, sock_path, opts);
    int st = run(cmd, out, sizeof out);
    char *nl = strchr(out, '\n');
    bool one_line = nl && nl[1] == 0;
    if (nl)
        *nl = 0;
    check(st == want_status && one_line && strstr(out, want_text), "%s: exit status %d (want %d), one line: %s",
          opts, st, want_status, out);
}

/* Read a number after `key` in the line. */
static unsigned long long number_after(const char *line, const char *key)
{
    const char *p = strstr(line, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : ~0ull;
}

/* === The test ============================================================= */

static bool connect_and_handshake(struct conn **out, const char *tag)
{
    struct conn *c = conn_new(tag, false);
    struct fe_opts o = { .style = STYLE_QEMU, .mrg_rxbuf = false, .npairs = 1 };
    *out = c;
    return c && check(conn_connect(c), "%s: connect", tag) && check(handshake(c, &o), "%s: handshake%s%s", tag,
                                                                    c->err[0] ? ": " : "", c->err);
}

int main(int argc, char **argv)
{
    const char *binary = argc > 1 ? argv[1] : "./vhost-xdp";
    char line[600], dir[120];

    if (!fe_setup("test_pcap", 120)) {
        printf("1..%d\n", tap_n);
        return 1;
    }
    snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(sock_path, '/') - sock_path), sock_path);
    snprintf(pcap_path[0], sizeof pcap_path[0], "%s/all.pcap", dir);
    snprintf(pcap_path[1], sizeof pcap_path[1], "%s/limited.pcap", dir);
    atexit(remove_pcaps);   /* runs before frontend.c's cleanup removes the directory */

    /* 1. Everything forwarded, both ways. */
    const char *args[] = { "--pcap", pcap_path[0], NULL };
    long t0 = (long)time(NULL);
    if (!start_backend(binary, args) || !check(wait_for_socket(20), "back-end creates its socket")) {
        print_backend_log(30);
        printf("1..%d\n", tap_n);
        return 1;
    }
    struct conn *c;
    struct expect e = { 0 };
    if (connect_and_handshake(&c, "pcap conn")) {
        struct pair *q = &c->qp[0];
        e.salt = q->salt;
        while (rx_post(c, q))
            ;
        ring_flush(&q->rx, c->event_idx);
        if (check(crafted_traffic(c, q), "%d frames of 0..%d bytes, one at a time (the %d-byte one dropped on RX)%s%s",
                  NCRAFTED, TOO_BIG, TOO_BIG, c->err[0] ? ": " : "", c->err)) {
            e.n_out = NCRAFTED;
            e.n_in = NCRAFTED - 1;
        }
        if (check(traffic(c, q, NBULK), "%d frames of 60..1514 bytes through loopback%s%s", NBULK,
                  c->err[0] ? ": " : "", c->err)) {
            e.n_out += NBULK;
            e.n_in += NBULK;
        }
        conn_close(c);
    }
    conn_free(c);
    stop_backend();
    long t1 = (long)time(NULL);

    struct pcap_file f = { 0 };
    int nrec = 0;
    if (check(read_file(pcap_path[0], &f), "--pcap %s: the file exists", pcap_path[0]))
        check_records(&f, &e, t0, t1, &nrec);
    bool exit_line = log_find(0, "exit: pcap:", NULL, 1, line, sizeof line);
    check(exit_line && number_after(line, "pcap: ") == (unsigned long long)nrec &&
          number_after(line, " (") == f.size && strstr(line, " 0 not captured (writer behind), 0 after --pcap-limit"),
          "exit line counts the %d records and %zu bytes: %s", nrec, f.size, exit_line ? line : "(none)");
    bool fwd_line = log_find(0, "exit: from guest", NULL, 1, line, sizeof line);
    check(fwd_line && number_after(line, "from guest ") == (unsigned long long)e.n_out &&
          number_after(line, "to guest ") == (unsigned long long)e.n_in,
          "vhost-xdp forwarded %d from and %d to the guest, as captured: %s", e.n_out, e.n_in,
          fwd_line ? line : "(none)");

    /* tcpdump reads it too: a second, independent reader of the format.
     * It prints one line per packet (then, for an ethertype it does not
     * know, hex dump lines that start with a tab); -e because without it
     * tcpdump leaves out the direction of a frame with no ethertype. */
    char cmd[600];
    if (access("/usr/bin/tcpdump", X_OK) == 0 || access("/usr/sbin/tcpdump", X_OK) == 0) {
        snprintf(cmd, sizeof cmd, "tcpdump -e -nn -r '%s' 2>&1", pcap_path[0]);
        FILE *p = popen(cmd, "r");
        int outs = 0, ins = 0, other = 0;
        char l[2000], odd[200] = "";
        while (p && fgets(l, sizeof l, p)) {
            if (l[0] == '\t' || strncmp(l, "reading from file", 17) == 0)
                continue;
            outs += strstr(l, " Out ") != NULL;
            ins += strstr(l, " In ") != NULL;
            if (!strstr(l, " Out ") && !strstr(l, " In ") && other++ == 0)
                snprintf(odd, sizeof odd, "%.150s", l);
        }
        int st = p ? pclose(p) : -1;
        check(st == 0 && outs == e.n_out && ins == e.n_in && other == 0,
              "tcpdump -e -r reads it: exit status %d, %d Out and %d In packets, %d other lines%s%s",
              WIFEXITED(st) ? WEXITSTATUS(st) : -1, outs, ins, other, odd[0] ? ": " : "", odd);
    } else {
        skip("tcpdump is not installed", "tcpdump -e -r reads the file");
    }
    free(f.bytes);
    if (tap_failed)
        print_backend_log(30);

    /* 2. A small --pcap-limit: the file stops on a whole record below it. */
    const uint64_t limit = 20000;
    const char *largs[] = { "--pcap", pcap_path[1], "--pcap-limit", "20000", NULL };
    long from2 = log_size();        /* the second back-end's lines follow the first's in the log */
    if (start_backend(binary, largs) && check(wait_for_socket(20), "--pcap-limit run: back-end creates its socket")) {
        if (connect_and_handshake(&c, "limit conn")) {
            check(traffic(c, &c->qp[0], NBULK), "%d frames through loopback%s%s", NBULK, c->err[0] ? ": " : "",
                  c->err);
            conn_close(c);
        }
        conn_free(c);
        stop_backend();
        check(log_find(from2, "reached --pcap-limit (20000 bytes)", "capture stopped", 1, line, sizeof line),
              "log says the capture stopped at the limit: %s", line);
        struct pcap_file g = { 0 };
        if (check(read_file(pcap_path[1], &g), "--pcap-limit: the file exists")) {
            size_t off = 24;
            char why[300] = "";
            int n = 0;
            static struct record r;
            while (g.size >= 24 && next_record(&g, &off, &r, why, sizeof why))
                n++;
            check(g.size <= limit && g.size > 24 && !why[0], "--pcap-limit 20000: file of %zu bytes, %d whole records%s%s",
                  g.size, n, why[0] ? ": " : "", why);
            bool got = log_find(from2, "exit: pcap:", NULL, 1, line, sizeof line);
            unsigned long long after = got ? number_after(line, "behind), ") : 0;
            check(got && number_after(line, "pcap: ") == (unsigned long long)n &&
                  (unsigned long long)n + after == 2 * NBULK,
                  "exit line: %d captured + %llu after the limit = the %d packets forwarded: %s", n, after, 2 * NBULK,
                  got ? line : "(none)");
        }
        free(g.bytes);
        if (tap_failed)
            print_backend_log(20);
    }

    /* 3. Mistakes a user makes: one line each, before anything starts. */
    snprintf(cmd, sizeof cmd, "--pcap %s/no-such-dir/x.pcap", dir);
    bad_usage(binary, cmd, 1, "cannot create the file: No such file or directory");
    snprintf(cmd, sizeof cmd, "--pcap %s", dir);
    bad_usage(binary, cmd, 1, "cannot create the file: Is a directory");
    bad_usage(binary, "--pcap /dev/null --pcap-limit 10", 2, "--pcap-limit 10: want a size of at least 24 bytes");
    bad_usage(binary, "--pcap /dev/null --pcap-limit 5X", 2, "--pcap-limit 5X: want a size");
    bad_usage(binary, "--pmd-sleep 10001", 2, "--pmd-sleep 10001: want microseconds from 0 to 10000");
    bad_usage(binary, "--pmd-sleep -1", 2, "--pmd-sleep -1: want microseconds");

    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}
