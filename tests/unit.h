/*
 * tests/unit.h - what the two ring unit tests share (test_virtqueue.c for
 * split rings, test_packed.c for packed ones): TAP cases, the fatal-signal
 * report, and guest memory between guard pages.
 *
 * A case is begin("name") ... CHECK(cond, fmt, ...) ... end(): one TAP line
 * per case, with every failed CHECK as a comment above it.  begin() arms a
 * 10 s alarm, so a ring walk that never ends fails its case instead of
 * hanging the run.  Guest memory is mmap'ed with PROT_NONE guard pages on
 * both sides (map_guarded): a backend that reads or writes past what the
 * guest gave it dies of SIGSEGV here, and the handler turns that into a
 * "not ok" naming the case and the address, then bails out.
 *
 * Included by one .c file each: everything is static.
 */
#ifndef VX_TESTS_UNIT_H
#define VX_TESTS_UNIT_H

#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static int tap_n, tap_failed, case_failures;
static const char *case_name = "(startup)";
static long page_size;

static inline void begin(const char *name)
{
    case_name = name;
    case_failures = 0;
    alarm(10);      /* an endless ring walk ends the test instead of hanging it */
}

static inline void end(void)
{
    alarm(0);
    tap_n++;
    if (case_failures)
        tap_failed++;
    printf("%s %d - %s\n", case_failures ? "not ok" : "ok", tap_n, case_name);
}

static void fail_at(int line, const char *cond, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_at(int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    case_failures++;
    printf("#   line %d: ", line);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("  [%s]\n", cond);
}

#define CHECK(cond, ...) do { if (!(cond)) fail_at(__LINE__, #cond, __VA_ARGS__); } while (0)

/* The signal handler may only call async-signal-safe functions (write, not
 * printf): these two build its line by hand. */
static size_t put_str(char *b, size_t n, const char *s)
{
    while (*s && n < 500)
        b[n++] = *s++;
    return n;
}

static size_t put_num(char *b, size_t n, uint64_t v, unsigned base)
{
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (i > 0 && n < 500)
        b[n++] = tmp[--i];
    return n;
}

/* A fatal signal inside a case is that case's failure: say which, then stop. */
static void on_fatal_signal(int sig, siginfo_t *si, void *uc)
{
    char b[512];
    size_t n = 0;
    (void)uc;
    n = put_str(b, n, "not ok ");
    n = put_num(b, n, (uint64_t)tap_n + 1, 10);
    n = put_str(b, n, " - ");
    n = put_str(b, n, case_name);
    if (sig == SIGALRM) {
        n = put_str(b, n, ": timed out after 10 s (endless ring walk?)\n");
    } else {
        n = put_str(b, n, sig == SIGSEGV ? ": SIGSEGV at 0x" : ": SIGBUS at 0x");
        n = put_num(b, n, (uint64_t)(uintptr_t)si->si_addr, 16);
        n = put_str(b, n, " (access outside guest memory or a packet buffer)\n");
    }
    n = put_str(b, n, "Bail out! fatal signal in a test\n");
    if (write(STDOUT_FILENO, b, n) < 0)
        _exit(2);
    _exit(1);
}

/* Line-buffered TAP (a crash loses nothing printed), the page size, and the
 * handler for SIGSEGV, SIGBUS and begin()'s alarm. */
static inline void unit_init(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    page_size = sysconf(_SC_PAGESIZE);
    struct sigaction sa = { .sa_sigaction = on_fatal_signal, .sa_flags = SA_SIGINFO };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
}

/* [guard][size bytes RW][guard]: returns the first RW byte. */
static inline uint8_t *map_guarded(size_t size, size_t guard)
{
    uint8_t *p = mmap(NULL, size + 2 * guard, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p + guard, size, PROT_READ | PROT_WRITE)) {
        perror("mmap/mprotect");
        exit(2);
    }
    return p + guard;
}

#endif
