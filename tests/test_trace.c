/*
 * tests/test_trace.c - --trace=rings and the ring view, seen from outside.
 *
 * Runs vhost-xdp --trace=rings, connects as QEMU 7.2 would (tests/frontend.c),
 * sends frames through loopback, then sends SIGUSR1 and disconnects, and
 * checks the log: the ring events (started, enabled, call sent, stopped) and
 * a ring-view block whose numbers agree with what the frontend knows.
 *
 *   tests/test_trace [path/to/vhost-xdp]     TAP output
 */
#include "frontend.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPACKETS 300

int main(int argc, char **argv)
{
    const char *binary = argc > 1 ? argv[1] : "./vhost-xdp";
    static const char *const args[] = { "--trace=rings", NULL };
    char line[600], want[200];

    if (!fe_start("test_trace", 60, binary, args))
        return 1;

    long start = log_size();
    struct conn *c = conn_new("trace conn", false);
    struct fe_opts o = { .style = STYLE_QEMU, .mrg_rxbuf = true, .npairs = 1 };
    struct pair *q = &c->qp[0];
    bool up = c && check(conn_connect(c), "connect") && check(handshake(c, &o), "handshake: %s", c->err);
    if (up) {
        check(log_find(start, "ring 0 started", NULL, 5, line, sizeof line) &&
              log_find(start, "ring 1 started", NULL, 5, line, sizeof line), "--trace=rings: ring 0 and 1 started");
        check(log_find(start, "ring 1 enabled", NULL, 5, line, sizeof line), "--trace=rings: ring 1 enabled");
        check(traffic(c, q, NPACKETS), "%d frames through loopback%s%s", NPACKETS, c->err[0] ? ": " : "", c->err);
        check(log_find(start, "ring 0: call sent", NULL, 5, line, sizeof line),
              "--trace=rings: call sent on the RX ring (guest got %" PRIu64 " calls)", q->rx.calls);
        /* At most a few call lines per ring and second. */
        int calls = log_count(start, "call sent (used->idx");
        check(calls > 0 && calls <= 5 * 2 * 25, "call lines are rate-limited (%d lines for %" PRIu64 " calls)",
              calls, q->rx.calls + q->tx.calls);

        /* The ring view: the frontend's indices, which stand still now. */
        long before = log_size();
        kill(backend_pid, SIGUSR1);
        check(log_find(before, "ring view: 2 rings started", NULL, 5, line, sizeof line), "SIGUSR1: ring view header");
        check(log_find(before, "ring 1 (TX of pair 0): size 256, running", NULL, 5, line, sizeof line),
              "ring view: ring 1 is TX, size 256, running");
        snprintf(want, sizeof want, "avail->idx %5u", q->tx.published_idx);
        check(log_find(before, want, NULL, 5, line, sizeof line), "ring view: TX %s (the frontend published it)", want);
        snprintf(want, sizeof want, "last_avail_idx %u  last_used_idx %u  in flight 0", q->tx.published_idx,
                 q->tx.published_idx);
        check(log_find(before, want, NULL, 5, line, sizeof line), "ring view: TX %s", want);
        snprintf(want, sizeof want, "avail->idx %5u", q->rx.published_idx);
        check(log_find(before, want, NULL, 5, line, sizeof line), "ring view: RX %s", want);
        check(log_find(before, "slots |", NULL, 5, line, sizeof line) &&
              log_find(before, "legend:", NULL, 5, line, sizeof line), "ring view: slot strip and legend");
        if (getenv("VX_SHOW_LOG"))
            print_backend_log(40);

        long closing = log_size();
        conn_close(c);
        check(log_find(closing, "ring 1 stopped (frontend disconnected)", NULL, 5, line, sizeof line),
              "--trace=rings: ring 1 stopped on disconnect");
    }
    conn_free(c);
    stop_backend();
    return fe_finish();
}
