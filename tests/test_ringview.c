/*
 * tests/test_ringview.c - vq_ring_view(), the picture --ring-view and
 * SIGUSR1 print, checked against rings with known indices.
 *
 * Each case lays out a split ring in plain memory (no memory table: the view
 * reads only vr->avail and vr->used), sets the guest's indices and ours,
 * prints the view into a memstream and checks the numbers and the strip of
 * slots it shows.  TAP output, one line per check.
 */
#include "vhost_xdp.h"

#include <stdlib.h>
#include <string.h>

static int tap_n, tap_failed;

static void check(bool ok, const char *what, const char *text)
{
    printf("%sok %d - %s\n", ok ? "" : "not ", ++tap_n, what);
    if (!ok) {
        tap_failed++;
        printf("# the view was:\n");
        for (const char *p = text; *p;) {
            const char *nl = strchr(p, '\n');
            int l = nl ? (int)(nl - p) : (int)strlen(p);
            printf("#   %.*s\n", l, p);
            p += l + (nl ? 1 : 0);
        }
    }
}

/* Room for a ring of up to 1024 entries, with used_event and avail_event. */
static union { struct vring_avail a; uint8_t b[4 + 2 * 1024 + 2]; } avail_mem;
static union { struct vring_used u; uint8_t b[4 + 8 * 1024 + 2]; } used_mem;

static struct vx_vring ring(uint32_t index, uint16_t num, uint16_t avail_idx, uint16_t used_idx,
                            uint16_t last_avail, bool event_idx)
{
    memset(&avail_mem, 0, sizeof avail_mem);
    memset(&used_mem, 0, sizeof used_mem);
    struct vx_vring vr = { .index = index, .num = num, .avail = &avail_mem.a, .used = &used_mem.u,
                           .event_idx = event_idx, .last_avail_idx = last_avail, .last_used_idx = used_idx };
    vr.avail->idx = avail_idx;
    vr.used->idx = used_idx;
    __atomic_store_n(&vr.ready, true, __ATOMIC_SEQ_CST);
    return vr;
}

static char *view(const struct vx_vring *vr)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out)
        abort();
    vq_ring_view(vr, out);
    fclose(out);
    return text;
}

/* The line that starts (after its indentation) with `prefix`, or "". */
static const char *line_of(const char *text, const char *prefix, char *buf, size_t size)
{
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        const char *q = p;
        while (*q == ' ')
            q++;
        if (!strncmp(q, prefix, strlen(prefix)) && (size_t)(q - p) < l) {
            snprintf(buf, size, "%.*s", (int)(l - (q - p)), q);
            return buf;
        }
        p += l + (nl ? 1 : 0);
    }
    buf[0] = '\0';
    return buf;
}

/* Does the view hold "name value" (as a whole number)? */
static bool has_number(const char *text, const char *name, unsigned value)
{
    char want[64];
    int n = snprintf(want, sizeof want, "%s %u", name, value);
    for (const char *p = strstr(text, want); p; p = strstr(p + 1, want))
        if (p[n] < '0' || p[n] > '9')
            return true;
    /* Also accept the aligned form "name   value". */
    for (const char *p = strstr(text, name); p; p = strstr(p + 1, name)) {
        const char *q = p + strlen(name);
        while (*q == ' ')
            q++;
        char *end;
        if (q > p + strlen(name) && strtoul(q, &end, 10) == value && end > q)
            return true;
    }
    return false;
}

int main(void)
{
    char buf[200], what[200];

    /* 1. RX, 256 slots, no event idx: the guest offered 64 buffers at
     * 100..163; we used 100 so far.  Slots 100..163 are offered: with 4
     * slots per character that is characters 25..40 (slot 100 = char 25
     * exactly, 163 = the end of char 40). */
    {
        struct vx_vring vr = ring(0, 256, 164, 100, 100, false);
        vr.used->flags = VRING_USED_F_NO_NOTIFY;
        char *t = view(&vr);
        check(strstr(t, "ring 0 (RX of pair 0): size 256, running") != NULL, "case 1: title line", t);
        check(has_number(t, "avail->idx", 164), "case 1: avail->idx 164", t);
        check(has_number(t, "used->idx", 100), "case 1: used->idx 100", t);
        check(has_number(t, "last_avail_idx", 100) && has_number(t, "last_used_idx", 100),
              "case 1: last_avail_idx 100, last_used_idx 100", t);
        check(has_number(t, "in flight", 64), "case 1: in flight 64", t);
        check(strstr(t, "NO_NOTIFY") && !strstr(t, "NO_INTERRUPT"), "case 1: used->flags NO_NOTIFY shown", t);
        check(!strstr(t, "used_event") && !strstr(t, "avail_event"), "case 1: no event idx values", t);
        char strip[65];
        memset(strip, '.', 64);
        memset(strip + 25, 'A', 16);
        strip[64] = '\0';
        snprintf(what, sizeof what, "slots |%s|", strip);
        check(!strcmp(line_of(t, "slots |", buf, sizeof buf), what) ||
              !strncmp(buf, what, strlen(what)), "case 1: strip has A at characters 25..40 only", t);
        /* The marks: ^ under char 25 (last_avail_idx 100), g under char 41 (avail->idx 164). */
        const char *s = strstr(t, "slots |"), *nl = strchr(s, '\n');
        const char *marks = nl + 1;
        size_t col = strlen("    slots |");
        check(strlen(marks) > col + 41 && marks[col + 25] == '^' && marks[col + 41] == 'g',
              "case 1: ^ under last_avail_idx's slot, g under avail->idx's slot", t);
        free(t);
    }

    /* 2. TX, 16 slots (one character each), event idx, indices across the
     * u16 wrap: last_avail_idx 65530, avail->idx 3, so 9 in flight
     * (65530..65535 and 0..2), in slots 10..15 and 0..2 (65530 & 15 = 10). */
    {
        struct vx_vring vr = ring(3, 16, 3, 65530, 65530, true);
        vr.avail->flags = VRING_AVAIL_F_NO_INTERRUPT;
        vr.avail->ring[16] = 65533;                     /* used_event */
        { uint16_t ev = 7; memcpy(&vr.used->ring[16], &ev, sizeof ev); }   /* avail_event */
        char *t = view(&vr);
        check(strstr(t, "ring 3 (TX of pair 1): size 16, running, event idx") != NULL, "case 2: title line", t);
        check(has_number(t, "avail->idx", 3) && has_number(t, "used->idx", 65530),
              "case 2: avail->idx 3, used->idx 65530", t);
        check(has_number(t, "in flight", 9), "case 2: in flight 9 across the u16 wrap", t);
        check(has_number(t, "used_event", 65533) && has_number(t, "avail_event", 7),
              "case 2: used_event 65533, avail_event 7", t);
        check(strstr(t, "NO_INTERRUPT") != NULL, "case 2: avail->flags NO_INTERRUPT shown", t);
        check(!strncmp(line_of(t, "slots |", buf, sizeof buf), "slots |AAA.......AAAAAA|", 24),
              "case 2: strip is AAA.......AAAAAA (slots 10..15 and 0..2)", t);
        free(t);
    }

    /* 3. 256 slots, 2 offered at 5..6: a character of 4 slots partly
     * offered is 'a'; ring stopped and broken says so. */
    {
        struct vx_vring vr = ring(2, 256, 7, 5, 5, false);
        __atomic_store_n(&vr.ready, false, __ATOMIC_SEQ_CST);
        vr.broken = true;
        char *t = view(&vr);
        check(strstr(t, "size 256, broken") != NULL, "case 3: broken ring says so", t);
        check(!strncmp(line_of(t, "slots |", buf, sizeof buf), "slots |.a..", 11), "case 3: partly offered = a", t);
        free(t);
    }

    /* 4. Empty ring: nothing offered, ^ and g in the same place: #. */
    {
        struct vx_vring vr = ring(0, 256, 40, 40, 40, false);
        char *t = view(&vr);
        check(has_number(t, "in flight", 0), "case 4: in flight 0", t);
        const char *s = strstr(t, "slots |"), *nl = s ? strchr(s, '\n') : NULL;
        check(nl && strlen(nl + 1) > 11 + 10 && nl[1 + 11 + 10] == '#', "case 4: # under slot 40 (char 10)", t);
        free(t);
    }

    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}
