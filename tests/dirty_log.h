/*
 * tests/dirty_log.h - the dirty-log checks the two ring unit tests share
 * (test_virtqueue.c for split rings, test_packed.c for packed ones).
 *
 * While a live migration logs (VHOST_F_LOG_ALL), every guest page the
 * backend writes must be marked in the log, one bit per VX_LOG_PAGE (4 KiB)
 * page of guest-physical address, and no other page: virtqueue.c, "Live
 * migration: dirty-page logging".  vhost_user.c sets vring.log when the ring
 * starts; a test sets it with log_start().  The bitmap is the last bytes of
 * a page followed by a PROT_NONE guard page (log_map()), so a mark past its
 * end is a SIGSEGV, which unit.h reports as "not ok".
 *
 * Included after vhost_xdp.h (struct vx_vring, VX_LOG_PAGE) and unit.h
 * (CHECK, map_guarded, page_size) by one .c file each: everything is static.
 */
#ifndef VX_TESTS_DIRTY_LOG_H
#define VX_TESTS_DIRTY_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define LOG_MAX 128                      /* bytes: pages up to 1023, past both tests' guest memory */
#define PAGE_OF(gpa) ((gpa) / VX_LOG_PAGE)

static uint8_t *log_end;                 /* one past the guarded bitmap's last byte */
static struct vx_dirty_log dlog;

/* The bitmap's page, once per test program: LOG_MAX and fewer bytes end at the guard page. */
static void log_map(void)
{
    log_end = map_guarded((size_t)page_size, (size_t)page_size) + page_size;
}

/* The log on for `r`: the last `bytes` of the bitmap, all clear, and no
 * marks counted yet.  (A split ring also says where its used ring is
 * logged: the caller sets log_used and log_guest_addr.) */
static void log_start(struct vx_vring *r, uint64_t bytes)
{
    dlog = (struct vx_dirty_log){ .bits = log_end - bytes, .size = bytes };
    memset(dlog.bits, 0, bytes);
    r->log = &dlog;
    r->log_marks = 0;
}

/* The pages marked must be exactly want[0..n-1], and r's log_marks (the
 * bits it turned from 0 to 1) must equal the bits set. */
static void check_marked(const struct vx_vring *r, const uint64_t *want, int n)
{
    char got[256] = "";
    int ngot = 0;
    bool same = true;
    for (uint64_t page = 0; page < 8 * dlog.size; page++) {
        bool marked = dlog.bits[page / 8] & (1u << (page % 8)), wanted = false;
        for (int i = 0; i < n; i++)
            wanted |= want[i] == page;
        same &= marked == wanted;
        if (marked && ngot++ < 12)
            snprintf(got + strlen(got), sizeof got - strlen(got), " 0x%llx", (unsigned long long)page);
    }
    CHECK(same, "pages marked:%s (%d), want %d pages starting 0x%llx", got, ngot, n,
          n ? (unsigned long long)want[0] : 0ull);
    CHECK(r->log_marks == (uint64_t)ngot, "log_marks %llu, %d bits set", (unsigned long long)r->log_marks, ngot);
}

#endif
