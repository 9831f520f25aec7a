/*
 * tests/tcpcheck.c - a TCP transfer checked byte for byte.
 *
 *   tcpcheck recv [-t SECS] [-n] PORT BYTES [SEED]        listen (IPv4 and IPv6), accept one
 *                                                         connection, read BYTES and check every one
 *   tcpcheck send [-t SECS] [-n] ADDR PORT BYTES [SEED]   connect to ADDR (IPv4 or IPv6), send them
 *
 * Both ends compute the same pattern: byte i of the stream is byte i % 8 of
 * splitmix64(SEED + i / 8), so a byte lost, doubled, reordered or changed
 * anywhere shows up at its offset.  One line at the end, on stdout:
 *   VXTCP recv ok bytes=N secs=S mbit=M             (or FAIL and what went wrong)
 *   VXTCP send ok bytes=N secs=S mbit=M
 * and exit status 0 only for "ok".  The receiver also says "VXTCP listening
 * port=P" once it listens, so that a test can start the sender then.  The
 * sender retries its connect until the deadline (-t, default 60 s): the
 * receiver may be in a guest still booting.  Every read and write has the
 * same deadline (SO_RCVTIMEO, SO_SNDTIMEO), so a stalled transfer ends with
 * FAIL instead of hanging the test.
 *
 * -n (both ends): no pattern, zeros sent and bytes only counted, as iperf
 * does; for bench/bench_tcp.sh, because in an emulated (TCG) guest making
 * and checking the pattern costs more CPU than the network path measured.
 * The tests always check.
 *
 * Built static for the test guest by tests/build_guest.sh (the initramfs has
 * no C library), and by the Makefile for the host side (the veth peer).
 * libc only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* splitmix64: a good 64-bit mix of a counter, cheap enough for gigabytes. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The pattern's bytes [off, off + len) into buf: a whole 64-bit word at a
 * time where the stream is 8-aligned (little-endian, as byte k of a word is
 * bits 8k..8k+7: the same bytes as the loop at the ends). */
static void pattern(uint8_t *buf, uint64_t off, size_t len, uint64_t seed)
{
    size_t i = 0;
    for (; i < len && (off + i) % 8; i++)
        buf[i] = (uint8_t)(mix(seed + (off + i) / 8) >> (8 * ((off + i) % 8)));
    for (; i + 8 <= len; i += 8) {
        uint64_t w = mix(seed + (off + i) / 8);
        memcpy(buf + i, &w, 8);
    }
    for (; i < len; i++)
        buf[i] = (uint8_t)(mix(seed + (off + i) / 8) >> (8 * ((off + i) % 8)));
}

static int result(const char *role, const char *status, uint64_t bytes, double secs, const char *why)
{
    printf("VXTCP %s %s bytes=%llu secs=%.3f mbit=%.1f%s%s\n", role, status, (unsigned long long)bytes, secs,
           secs > 0 ? bytes * 8 / secs / 1e6 : 0.0, why ? " " : "", why ? why : "");
    fflush(stdout);
    return strcmp(status, "ok") != 0;
}

static void set_timeouts(int fd, int secs)
{
    struct timeval tv = { secs, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static bool unchecked;          /* -n */

static int do_recv(int port, uint64_t bytes, uint64_t seed, int secs)
{
    /* One IPv6 socket takes IPv4 too (v4-mapped addresses), unless the
     * kernel has no IPv6: then a plain IPv4 one. */
    int one = 1, zero = 0, fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port) };
    struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, (struct sockaddr *)&a6, sizeof a6) < 0)
            close(fd), fd = -1;
    }
    if (fd < 0) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a4, sizeof a4) < 0)
            return result("recv", "FAIL", 0, 0, strerror(errno));
    }
    if (listen(fd, 1) < 0)
        return result("recv", "FAIL", 0, 0, strerror(errno));
    printf("VXTCP listening port=%d\n", port);
    fflush(stdout);
    set_timeouts(fd, secs);     /* accept() waits at most that long too */
    int c = accept(fd, NULL, NULL);
    if (c < 0)
        return result("recv", "FAIL", 0, 0, "accept timed out");
    set_timeouts(c, secs);
    static uint8_t got[CHUNK], want[CHUNK];
    uint64_t done = 0;
    double t0 = now();
    while (done < bytes) {
        size_t ask = bytes - done < CHUNK ? (size_t)(bytes - done) : CHUNK;
        ssize_t n = read(c, got, ask);
        if (n <= 0)
            return result("recv", "FAIL", done, now() - t0, n == 0 ? "connection closed early" : strerror(errno));
        if (!unchecked)
            pattern(want, done, (size_t)n, seed);
        bool differ = !unchecked && memcmp(got, want, (size_t)n) != 0;    /* then find where */
        for (ssize_t i = 0; differ && i < n; i++) {
            if (got[i] != want[i]) {
                char why[96];
                snprintf(why, sizeof why, "byte %llu is 0x%02x, want 0x%02x", (unsigned long long)(done + i),
                         got[i], want[i]);
                return result("recv", "FAIL", done + i, now() - t0, why);
            }
        }
        done += (uint64_t)n;
    }
    /* Nothing may follow the last byte: the sender closes after it. */
    ssize_t extra = read(c, got, 1);
    double t = now() - t0;
    close(c);
    close(fd);
    if (extra != 0)
        return result("recv", "FAIL", done, t, extra > 0 ? "more bytes than expected" : strerror(errno));
    return result("recv", "ok", done, t, unchecked ? "(unchecked)" : NULL);
}

static int do_send(const char *addr, int port, uint64_t bytes, uint64_t seed, int secs)
{
    /* A numeric address (inet_pton: no resolver in a static binary). */
    struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port) };
    bool v6 = strchr(addr, ':') != NULL;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, addr, v6 ? (void *)&a6.sin6_addr : (void *)&a4.sin_addr) != 1)
        return result("send", "FAIL", 0, 0, "not a numeric IPv4 or IPv6 address");
    struct sockaddr *sa = v6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a4;
    socklen_t salen = v6 ? sizeof a6 : sizeof a4;
    double deadline = now() + secs;
    int fd = -1;
    while (fd < 0) {    /* until the receiver listens, or the deadline */
        fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
        set_timeouts(fd, 2);
        if (fd >= 0 && connect(fd, sa, salen) == 0)
            break;
        int err = errno;
        close(fd);
        fd = -1;
        if (now() > deadline)
            return result("send", "FAIL", 0, 0, strerror(err));
        usleep(200 * 1000);
    }
    set_timeouts(fd, secs);
    static uint8_t buf[CHUNK];
    uint64_t done = 0;
    double t0 = now();
    while (done < bytes) {
        size_t len = bytes - done < CHUNK ? (size_t)(bytes - done) : CHUNK;
        if (!unchecked)
            pattern(buf, done, len, seed);
        for (size_t off = 0; off < len;) {
            ssize_t n = write(fd, buf + off, len - off);
            if (n <= 0)
                return result("send", "FAIL", done + off, now() - t0, strerror(errno));
            off += (size_t)n;
        }
        done += len;
    }
    /* Wait for the receiver to close: then every byte has arrived and been
     * acknowledged, and the time measured covers the whole transfer. */
    shutdown(fd, SHUT_WR);
    char c;
    ssize_t n = read(fd, &c, 1);
    double t = now() - t0;
    close(fd);
    if (n != 0)
        return result("send", "FAIL", done, t, n < 0 ? strerror(errno) : "the receiver sent data");
    return result("send", "ok", done, t, unchecked ? "(unchecked)" : NULL);
}

static int usage(void)
{
    fprintf(stderr, "usage: tcpcheck recv [-t SECS] [-n] PORT BYTES [SEED]\n"
                    "       tcpcheck send [-t SECS] [-n] ADDR PORT BYTES [SEED]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *role = argv[1];
    int secs = 60, i = 2;
    for (;;) {
        if (argc > i + 1 && !strcmp(argv[i], "-t")) {
            secs = atoi(argv[i + 1]);
            i += 2;
        } else if (argc > i && !strcmp(argv[i], "-n")) {
            unchecked = true;
            i++;
        } else {
            break;
        }
    }
    int is_recv = !strcmp(role, "recv");
    if (!is_recv && strcmp(role, "send"))
        return usage();
    int need = is_recv ? 2 : 3;
    if (argc - i < need || argc - i > need + 1 || secs <= 0)
        return usage();
    const char *addr = is_recv ? NULL : argv[i++];
    int port = atoi(argv[i++]);
    uint64_t bytes = strtoull(argv[i++], NULL, 0);
    uint64_t seed = i < argc ? strtoull(argv[i], NULL, 0) : 1;
    if (port <= 0 || port > 65535)
        return usage();
    return is_recv ? do_recv(port, bytes, seed, secs) : do_send(addr, port, bytes, seed, secs);
}
