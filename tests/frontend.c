/*
 * tests/frontend.c - the vhost-user front-end and guest driver shared by the
 * C tests (see frontend.h for what each part offers and the environment it
 * reads).  Read in order: TAP and time; the back-end process and its log;
 * guest memory; one split ring; the frames; one connection.
 */
#include "frontend.h"

#include <linux/virtio_config.h>   /* VIRTIO_CONFIG_S_*: the device status bits */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/virtio_config.h>
#include <linux/virtio_net.h>

const char *request_name(uint32_t req)
{
    static const char *const names[] = {
        [1] = "GET_FEATURES", [2] = "SET_FEATURES", [3] = "SET_OWNER",
        [5] = "SET_MEM_TABLE", [6] = "SET_LOG_BASE", [8] = "SET_VRING_NUM", [9] = "SET_VRING_ADDR",
        [10] = "SET_VRING_BASE", [11] = "GET_VRING_BASE", [12] = "SET_VRING_KICK",
        [13] = "SET_VRING_CALL", [14] = "SET_VRING_ERR", [15] = "GET_PROTOCOL_FEATURES",
        [16] = "SET_PROTOCOL_FEATURES", [17] = "GET_QUEUE_NUM", [18] = "SET_VRING_ENABLE", [19] = "SEND_RARP",
    };
    if (req < sizeof(names) / sizeof(names[0]) && names[req])
        return names[req];
    return "?";
}

/* === TAP ================================================================ */

int tap_n, tap_failed;
double time_scale = 1;

void diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

bool check(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%sok %d - ", ok ? "" : "not ", ++tap_n);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    if (!ok)
        tap_failed++;
    return ok;
}

void skip(const char *why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("ok %d - ", ++tap_n);
    vprintf(fmt, ap);
    printf(" # SKIP %s\n", why);
    va_end(ap);
}

double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* === The back-end process =============================================== */

pid_t backend_pid = -1;             /* also its process group: setpgid in the child */
bool backend_real;
char sock_path[108], log_path[108]; /* 108: sun_path */
char sock_path2[108];               /* a second device's socket (VM-to-VM back-ends) */
static int backend_stdin = -1;      /* write end of the stand-in's stdin pipe */
static int backend_status = -1;     /* wait status once reaped */
static char tmp_dir[80];
static char alarm_msg[128], sig_msg[128];

/* Async-signal-safe: used from the alarm handler too. */
static void remove_tmp_files(void)
{
    if (sock_path[0])
        unlink(sock_path);
    if (sock_path2[0])
        unlink(sock_path2);
    if (log_path[0])
        unlink(log_path);
    if (tmp_dir[0])
        rmdir(tmp_dir);
}

void kill_backend(void)
{
    if (backend_pid > 0) {
        kill(-backend_pid, SIGKILL);
        waitpid(backend_pid, &backend_status, 0);
        backend_pid = -1;
    }
}

static void on_fatal_signal(int sig)
{
    const char *m = sig == SIGALRM ? alarm_msg : sig_msg;
    ssize_t r = write(1, m, strlen(m));
    (void)r;
    if (backend_pid > 0)
        kill(-backend_pid, SIGKILL);
    remove_tmp_files();
    _exit(1);
}

static void at_exit_cleanup(void)
{
    kill_backend();
    remove_tmp_files();
}

static double t_setup;             /* when fe_setup() ran: fe_finish() says the run time */

bool fe_setup(const char *test_name, double alarm_seconds)
{
    t_setup = now();
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *scale = getenv("VX_TIME_SCALE");
    if (scale && atof(scale) >= 1)
        time_scale = atof(scale);
    snprintf(alarm_msg, sizeof(alarm_msg), "not ok - %s: still running after the alarm; back-end killed\n", test_name);
    snprintf(sig_msg, sizeof(sig_msg), "not ok - %s: interrupted; back-end killed\n", test_name);
    struct sigaction sa = { .sa_handler = on_fatal_signal };
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)(alarm_seconds * time_scale));

    const char *tmp = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/vx-test-XXXXXX", tmp && *tmp && strlen(tmp) < 60 ? tmp : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        tmp_dir[0] = 0;
        check(false, "create a temporary directory: %s", strerror(errno));
        return false;
    }
    snprintf(sock_path, sizeof(sock_path), "%s/vhost.sock", tmp_dir);
    snprintf(sock_path2, sizeof(sock_path2), "%s/vhost2.sock", tmp_dir);
    snprintf(log_path, sizeof(log_path), "%s/backend.log", tmp_dir);
    atexit(at_exit_cleanup);
    return true;
}

bool fe_start(const char *test_name, double alarm_seconds, const char *binary, const char *const *extra_args)
{
    if (!fe_setup(test_name, alarm_seconds) || !start_backend(binary, extra_args)) {
        printf("1..%d\n", tap_n);
        return false;
    }
    double t = now();
    if (!check(wait_for_socket(20), "back-end creates its socket (%.2f s)", now() - t)) {
        print_backend_log(30);
        printf("1..%d\n", tap_n);
        return false;
    }
    return true;
}

int fe_finish(void)
{
    if (tap_failed || getenv("VX_SHOW_LOG"))
        print_backend_log(40);
    diag("runtime %.1f s", now() - t_setup);
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

/* Has it died?  Reaps it and says so once. */
bool backend_alive(void)
{
    if (backend_pid <= 0)
        return false;
    pid_t p = waitpid(backend_pid, &backend_status, WNOHANG);
    if (p == backend_pid) {
        if (WIFEXITED(backend_status))
            diag("back-end (pid %d) exited with status %d", (int)backend_pid, WEXITSTATUS(backend_status));
        else if (WIFSIGNALED(backend_status))
            diag("back-end (pid %d) killed by signal %d", (int)backend_pid, WTERMSIG(backend_status));
        backend_pid = -1;
        return false;
    }
    return true;
}

/* Replace every {sock} in cmd by the socket path. */
static char *expand_command(const char *cmd)
{
    size_t cap = strlen(cmd) + 16 + 8 * strlen(sock_path), n = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    n += (size_t)snprintf(out, cap, "exec ");
    for (const char *p = cmd; *p;) {
        if (strncmp(p, "{sock}", 6) == 0 && n + strlen(sock_path) + 1 < cap) {
            n += (size_t)snprintf(out + n, cap - n, "%s", sock_path);
            p += 6;
        } else if (n + 2 < cap) {
            out[n++] = *p++;
        } else {
            break;
        }
    }
    out[n] = 0;
    return out;
}

bool start_backend(const char *binary, const char *const *extra_args)
{
    const char *args[64] = { "--socket", sock_path, "--loopback" };
    int n = 3;
    for (int i = 0; extra_args && extra_args[i] && n < 63; i++)
        args[n++] = extra_args[i];
    args[n] = NULL;
    return start_backend_argv(binary, args);
}

bool start_backend_argv(const char *binary, const char *const *args)
{
    const char *cmd = getenv("VX_BACKEND_CMD");
    char *shell_cmd = NULL;
    int in[2] = { -1, -1 };

    /* The real back-end's argv: [wrapper words...] binary args... */
    enum { MAX_ARGS = 64 };
    char *argv[MAX_ARGS + 1], *wrapper = NULL, described[1024] = "";
    int argc = 0;

    backend_real = !(cmd && *cmd);
    if (backend_real) {
        if (access(binary, X_OK) != 0) {
            check(false, "back-end executable %s exists (%s); build it with make", binary, strerror(errno));
            return false;
        }
        const char *w = getenv("VX_BACKEND_WRAPPER");
        if (w && *w && (wrapper = strdup(w)))
            for (char *save = NULL, *t = strtok_r(wrapper, " \t", &save); t && argc < MAX_ARGS - 8;
                 t = strtok_r(NULL, " \t", &save))
                argv[argc++] = t;
        argv[argc++] = (char *)binary;
        for (int i = 0; args && args[i] && argc < MAX_ARGS; i++)
            argv[argc++] = (char *)args[i];
        argv[argc] = NULL;
        for (int i = 0, n = 0; i < argc && n < (int)sizeof(described); i++)
            n += snprintf(described + n, sizeof(described) - (size_t)n, "%s%s", i ? " " : "", argv[i]);
    } else {
        shell_cmd = expand_command(cmd);
        /* testpmd without -i reads stdin ("Press enter to exit") and quits on
         * EOF: give it a pipe we keep open until the end. */
        if (!shell_cmd || pipe2(in, O_CLOEXEC) < 0) {
            check(false, "prepare the stand-in command: %s", strerror(errno));
            free(shell_cmd);
            return false;
        }
    }

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        check(false, "fork: %s", strerror(errno));
        free(shell_cmd);
        free(wrapper);
        return false;
    }
    if (pid == 0) {
        setpgid(0, 0);
        /* If the test dies (a crash, an ASan report), the back-end gets
         * SIGTERM: no poll thread left spinning on a shared machine. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int null = open("/dev/null", O_RDONLY);
        /* Appended: a test that starts a back-end again keeps one log, and
         * the offsets log_size() gave before stay valid. */
        int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(backend_real ? null : in[0], 0);
        if (log >= 0) {
            dup2(log, 1);
            dup2(log, 2);
        }
        if (backend_real)
            execvp(argv[0], argv);
        else
            execl("/bin/sh", "sh", "-c", shell_cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);  /* both sides, so kill(-pid) works whichever runs first */
    backend_pid = pid;
    if (!backend_real) {
        close(in[0]);
        backend_stdin = in[1];
        diag("back-end: /bin/sh -c '%s'", shell_cmd);
    } else {
        diag("back-end: %s", described);
    }
    free(shell_cmd);
    free(wrapper);
    return true;
}

bool wait_for_socket(double seconds)
{
    double end = now() + seconds * time_scale;
    struct stat st;
    while (now() < end) {
        if (stat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode))
            return true;
        if (!backend_alive())
            return false;
        sleep_ms(20);
    }
    return false;
}

/* The last lines of the back-end's output, as TAP diagnostics. */
void print_backend_log(int max_lines)
{
    FILE *f = fopen(log_path, "r");
    if (!f)
        return;
    char line[512];
    static char ring[64][512];
    int n = 0;
    if (max_lines > 64)
        max_lines = 64;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        snprintf(ring[n % max_lines], sizeof(ring[0]), "%s", line);
        n++;
    }
    fclose(f);
    int first = n > max_lines ? n - max_lines : 0;
    diag("---- last %d lines of the back-end's output ----", n - first);
    for (int i = first; i < n; i++)
        diag("| %s", ring[i % max_lines]);
}

void stop_backend(void)
{
    if (backend_real && backend_pid > 0) {
        kill(backend_pid, SIGTERM);
        double end = now() + 5 * time_scale;
        pid_t p = 0;
        while (now() < end && (p = waitpid(backend_pid, &backend_status, WNOHANG)) == 0)
            sleep_ms(20);
        if (p == backend_pid)
            backend_pid = -1;
        check(p > 0 && WIFEXITED(backend_status) && WEXITSTATUS(backend_status) == 0,
              "SIGTERM: back-end exits with status 0 within %.0f s (%s %d)", 5 * time_scale,
              p <= 0 ? "still running" : WIFEXITED(backend_status) ? "exit status" : "signal",
              p <= 0 ? 0 : WIFEXITED(backend_status) ? WEXITSTATUS(backend_status) : WTERMSIG(backend_status));
        struct stat st;
        check(stat(sock_path, &st) != 0, "SIGTERM: back-end removed its socket file");
    } else if (!backend_real && backend_pid > 0) {
        /* testpmd quits when its stdin closes; it re-raises SIGTERM otherwise. */
        close(backend_stdin);
        backend_stdin = -1;
        double end = now() + 10 * time_scale;
        pid_t p = 0;
        while (now() < end && (p = waitpid(backend_pid, &backend_status, WNOHANG)) == 0)
            sleep_ms(20);
        if (p == backend_pid) {
            backend_pid = -1;
            diag("stand-in back-end quit on stdin EOF: %s %d", WIFEXITED(backend_status) ? "exit status" : "signal",
                 WIFEXITED(backend_status) ? WEXITSTATUS(backend_status) : WTERMSIG(backend_status));
        } else {
            diag("stand-in back-end still running %.0f s after stdin EOF: killed", 10 * time_scale);
        }
    }
    kill_backend();
}

bool stop_backend_within(double *seconds, int *status)
{
    *seconds = -1;
    *status = -1;
    if (backend_pid <= 0)
        return false;
    double t0 = now(), end = t0 + 5 * time_scale;
    kill(backend_pid, SIGTERM);
    pid_t p = 0;
    while ((p = waitpid(backend_pid, &backend_status, WNOHANG)) == 0 && now() < end) {
        struct timespec ts = { 0, 2000000 };
        nanosleep(&ts, NULL);
    }
    if (p != backend_pid) {
        kill_backend();
        return false;
    }
    *seconds = now() - t0;
    *status = backend_status;
    backend_pid = -1;
    return true;
}

/* === The back-end's open files and memory (/proc/PID) ==================== */

int count_fds(pid_t pid, char *list, size_t list_len)
{
    char dir[64], target[256];
    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    size_t used = 0;
    if (list && list_len)
        list[0] = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        n++;
        if (!list)
            continue;
        ssize_t t = readlinkat(dirfd(d), e->d_name, target, sizeof(target) - 1);
        target[t > 0 ? t : 0] = 0;
        int w = snprintf(list + used, list_len - used, "%s%s->%s", used ? " " : "", e->d_name, target);
        if (w > 0 && (size_t)w < list_len - used)
            used += (size_t)w;
    }
    closedir(d);
    return n;
}

long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* === The back-end's log ================================================== */

long log_size(void)
{
    struct stat st;
    return stat(log_path, &st) == 0 ? (long)st.st_size : 0;
}

bool log_scan(long from, bool (*fn)(const char *line, void *arg), void *arg)
{
    FILE *f = fopen(log_path, "r");
    if (!f)
        return false;
    bool found = false;
    char line[1024];
    if (fseek(f, from, SEEK_SET) == 0)
        while (!found && fgets(line, sizeof(line), f))
            if (strchr(line, '\n'))     /* a line still being written is looked at next time */
                found = fn(line, arg);
    fclose(f);
    return found;
}

struct log_match {
    const char *needle, *also;
    char *line;
    size_t len;
    int count;
};

static bool log_match_one(const char *line, void *arg)
{
    struct log_match *m = arg;
    if (!strstr(line, m->needle) || (m->also && !strstr(line, m->also)))
        return false;
    m->count++;
    if (m->line) {
        snprintf(m->line, m->len, "%s", line);
        m->line[strcspn(m->line, "\n")] = 0;
    }
    return m->line != NULL;     /* log_count goes on to the end */
}

bool log_find(long from, const char *needle, const char *also, double seconds, char *line, size_t len)
{
    char dummy[8];
    struct log_match m = { needle, also, line ? line : dummy, line ? len : sizeof(dummy), 0 };
    double end = now() + seconds * time_scale;
    for (;;) {
        if (log_scan(from, log_match_one, &m))
            return true;
        if (now() >= end)
            return false;
        sleep_ms(10);
    }
}

int log_count(long from, const char *needle)
{
    struct log_match m = { needle, NULL, NULL, 0, 0 };
    log_scan(from, log_match_one, &m);
    return m.count;
}

/* === Guest memory ======================================================= */

static uint8_t canary_byte(size_t i)
{
    return (uint8_t)(0xA5 ^ (i * 7) ^ (i >> 9));
}

bool mem_create(struct guest_mem *m, uint64_t gpa, uint64_t size, uint64_t mmap_offset, uint64_t tail)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    memset(m, 0, sizeof(*m));
    m->map_len = mmap_offset + size + tail;
    m->fd = memfd_create("vx-test-guest", MFD_CLOEXEC);
    if (m->fd < 0 || ftruncate(m->fd, (off_t)m->map_len) < 0)
        return false;
    m->reserve_len = (m->map_len + page - 1) / page * page + 2 * page;
    m->reserve = mmap(NULL, m->reserve_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m->reserve == MAP_FAILED) {
        m->reserve = NULL;
        return false;
    }
    m->map = mmap(m->reserve + page, m->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, m->fd, 0);
    if (m->map == MAP_FAILED) {
        m->map = NULL;
        return false;
    }
    /* The file's bytes outside the region: a back-end that forgets
     * mmap_offset reads this instead of our rings, and one that writes
     * outside the region changes it. */
    for (size_t i = 0; i < mmap_offset; i++)
        m->map[i] = canary_byte(i);
    for (size_t i = mmap_offset + size; i < m->map_len; i++)
        m->map[i] = canary_byte(i);
    m->base = m->map + mmap_offset;
    m->gpa = gpa;
    m->size = size;
    m->mmap_offset = mmap_offset;
    return true;
}

bool mem_canary_intact(const struct guest_mem *m, char *where, size_t len)
{
    for (size_t i = 0; i < m->map_len; i++) {
        if (i == m->mmap_offset)
            i += m->size;
        if (i < m->map_len && m->map[i] != canary_byte(i)) {
            snprintf(where, len, "file offset 0x%zx (%s the region) is 0x%02x, not 0x%02x", i,
                     i < m->mmap_offset ? "before" : "after", m->map[i], canary_byte(i));
            return false;
        }
    }
    return true;
}

void mem_destroy(struct guest_mem *m)
{
    if (m->reserve)
        munmap(m->reserve, m->reserve_len);     /* the file mapping with it */
    if (m->fd >= 0)
        close(m->fd);
    m->reserve = m->map = m->base = NULL;
    m->fd = -1;
}

uint64_t gpa_of(const struct guest_mem *m, const void *p)
{
    return m->gpa + (uint64_t)((const uint8_t *)p - m->base);
}

uint64_t uva_of(const void *p)
{
    return (uint64_t)(uintptr_t)p;
}

/* === One split virtqueue, driver side (virtio 1.2 §2.7) ================= */

/* The two event-index fields live just past the rings (virtio 1.2 §2.7.10). */
uint16_t *used_event(struct ring *r) { return &r->avail->ring[r->num]; }
uint16_t *avail_event(struct ring *r) { return (uint16_t *)&r->used->ring[r->num]; }

void ring_init(struct ring *r, uint32_t index, struct guest_mem *m, uint16_t base)
{
    uint32_t p = index / 2;
    bool tx = index & 1;
    uint32_t area = RING_AREA(p, tx);
    if (p == 0)
        snprintf(r->name, sizeof(r->name), "%s", tx ? "TX" : "RX");
    else
        snprintf(r->name, sizeof(r->name), "%s%u", tx ? "TX" : "RX", p % 100);
    r->index = index;
    r->num = RING_SIZE;
    r->mem = m;
    r->desc = (struct vring_desc *)(m->base + area);
    r->avail = (struct vring_avail *)(m->base + area + 0x1000);
    r->used = (struct vring_used *)(m->base + area + 0x2000);
    r->indirect = (struct vring_desc *)(m->base + INDIRECT_AREA(p, tx));
    r->bufs = m->base + (tx && p == 0 ? m->size - RING_SIZE * SLOT : 0x100000u * (1 + 2 * p) + (tx ? 0x100000u : 0));
    memset(r->desc, 0, sizeof(struct vring_desc) * RING_SIZE);
    memset(r->avail, 0, 0x1000);
    memset(r->used, 0, 0x1000);
    for (int i = 0; i < RING_SIZE; i++)
        r->free_ids[i] = (uint16_t)(RING_SIZE - 1 - i);
    r->nfree = RING_SIZE;
    r->outstanding = 0;
    memset(r->chains, 0, sizeof(r->chains));
    r->base = base;
    r->avail_idx = r->published_idx = r->last_used_idx = base;
    r->avail->idx = base;
    r->used->idx = base;
    *used_event(r) = base;
    *avail_event(r) = base;
    r->published = r->consumed = r->post_count = 0;
    r->kicks = r->calls = 0;
}

/* Take n free descriptors; the first is the head, whose SLOT holds the data. */
int ring_take(struct ring *r, int n, uint16_t *ids)
{
    if (r->nfree < n)
        return -1;
    for (int i = 0; i < n; i++)
        ids[i] = r->free_ids[--r->nfree];
    return ids[0];
}

uint8_t *slot_of(struct ring *r, int head)
{
    return r->bufs + (size_t)head * SLOT;
}

/* Write the chain's descriptors (or indirect table) and its avail entry. */
void ring_add(struct ring *r, const uint16_t *ids, int ndesc, const struct seg *segs, int nseg,
              bool device_writes, bool indirect)
{
    const struct guest_mem *m = r->mem;
    uint16_t head = ids[0];
    struct chain *ch = &r->chains[head];
    uint16_t wflag = device_writes ? VRING_DESC_F_WRITE : 0;

    ch->outstanding = true;
    ch->ndesc = (uint8_t)ndesc;
    ch->nseg = (uint8_t)nseg;
    ch->cap = 0;
    for (int i = 0; i < ndesc; i++)
        ch->desc_ids[i] = ids[i];
    for (int i = 0; i < nseg; i++) {
        ch->seg[i] = segs[i];
        ch->cap += segs[i].len;
    }
    if (indirect) {
        struct vring_desc *table = r->indirect + (size_t)head * MAX_SEGS;
        for (int i = 0; i < nseg; i++) {
            table[i].addr = gpa_of(m, slot_of(r, head) + segs[i].off);
            table[i].len = segs[i].len;
            table[i].flags = (uint16_t)(wflag | (i + 1 < nseg ? VRING_DESC_F_NEXT : 0));
            table[i].next = (uint16_t)(i + 1 < nseg ? i + 1 : 0);
        }
        /* The WRITE flag of the descriptor naming a table is ignored (§2.7.5.3.2). */
        r->desc[head].addr = gpa_of(m, table);
        r->desc[head].len = (uint32_t)(nseg * sizeof(struct vring_desc));
        r->desc[head].flags = VRING_DESC_F_INDIRECT;
        r->desc[head].next = 0;
    } else {
        for (int i = 0; i < nseg; i++) {
            struct vring_desc *d = &r->desc[ids[i]];
            d->addr = gpa_of(m, slot_of(r, head) + segs[i].off);
            d->len = segs[i].len;
            d->flags = (uint16_t)(wflag | (i + 1 < nseg ? VRING_DESC_F_NEXT : 0));
            d->next = i + 1 < nseg ? ids[i + 1] : 0;
        }
    }
    r->avail->ring[r->avail_idx % r->num] = head;
    r->avail_idx++;
    r->published++;
    r->outstanding++;
}

void ring_free(struct ring *r, uint16_t head)
{
    struct chain *ch = &r->chains[head];
    for (int i = 0; i < ch->ndesc; i++)
        r->free_ids[r->nfree++] = ch->desc_ids[i];
    ch->outstanding = false;
    r->outstanding--;
}

bool fe_no_kick;

/* Publish avail->idx, then notify the device unless it asked us not to. */
void ring_flush(struct ring *r, bool event_idx)
{
    if (r->avail_idx == r->published_idx)
        return;
    uint16_t old = r->published_idx;
    /* Release: descriptors and avail entries before the index that covers them. */
    __atomic_store_n(&r->avail->idx, r->avail_idx, __ATOMIC_RELEASE);
    r->published_idx = r->avail_idx;
    /* Full barrier: read avail_event / used->flags only after the index is
     * visible, or we and the device can each miss the other (§2.7.10). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (r->kick_fd < 0 || fe_no_kick)
        return;                     /* rings filled before SET_VRING_KICK (or a frontend that never kicks) */
    bool need;
    if (event_idx)
        need = vring_need_event(__atomic_load_n(avail_event(r), __ATOMIC_RELAXED), r->avail_idx, old);
    else
        need = !(__atomic_load_n(&r->used->flags, __ATOMIC_RELAXED) & VRING_USED_F_NO_NOTIFY);
    if (need && eventfd_write(r->kick_fd, 1) == 0)
        r->kicks++;
}

/* Copy up to len bytes of a chain's data, in descriptor order. */
static uint32_t chain_gather(struct ring *r, uint16_t head, uint32_t len, uint8_t *out)
{
    struct chain *ch = &r->chains[head];
    uint32_t done = 0;
    for (int i = 0; i < ch->nseg && done < len; i++) {
        uint32_t n = ch->seg[i].len < len - done ? ch->seg[i].len : len - done;
        memcpy(out + done, slot_of(r, head) + ch->seg[i].off, n);
        done += n;
    }
    return done;
}

/* === The frames we send =================================================== */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint32_t frame_len(uint32_t seq, uint32_t salt)
{
    if (seq % 100 == 0)
        return MIN_FRAME;
    if (seq % 100 == 1)
        return MAX_FRAME;
    return MIN_FRAME + (uint32_t)(splitmix64(((uint64_t)salt << 32) | seq) % (MAX_FRAME - MIN_FRAME + 1));
}

/* Ethernet header (locally administered MACs, ethertype 0x88b5), then the
 * sequence number and length, then pseudo-random bytes unique to (salt, seq). */
static void frame_fill(uint8_t *p, uint32_t seq, uint32_t salt, uint32_t len)
{
    static const uint8_t eth[14] = { 0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xb5 };
    uint8_t head[22];
    memcpy(head, eth, 14);
    head[14] = (uint8_t)(seq >> 24);
    head[15] = (uint8_t)(seq >> 16);
    head[16] = (uint8_t)(seq >> 8);
    head[17] = (uint8_t)seq;
    head[18] = (uint8_t)(len >> 8);
    head[19] = (uint8_t)len;
    head[20] = (uint8_t)salt;
    head[21] = (uint8_t)(salt >> 8);
    memcpy(p, head, 22);
    uint64_t state = ((uint64_t)salt << 32) ^ seq ^ 0x5eed;
    for (uint32_t i = 22; i < len; i += 8) {
        state = splitmix64(state);
        uint32_t n = len - i < 8 ? len - i : 8;
        memcpy(p + i, &state, n);
    }
}

/* === One connection ====================================================== */

bool fail(struct conn *c, const char *fmt, ...)
{
    if (!c->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof(c->err), fmt, ap);
        va_end(ap);
    }
    return false;
}

/* A handshake step: a TAP line in tap mode, else silent unless it failed. */
static bool step(struct conn *c, bool ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool step(struct conn *c, bool ok, const char *fmt, ...)
{
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (c->tap)
        return check(ok, "%s: %s", c->tag, text);
    return ok || fail(c, "%s", text);
}

struct conn *conn_new(const char *tag, bool tap)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    snprintf(c->tag, sizeof(c->tag), "%s", tag);
    c->tap = tap;
    c->sock = -1;
    for (int i = 0; i < FE_MAX_MEM; i++)
        c->mem[i].fd = -1;
    for (int p = 0; p < MAX_PAIRS; p++) {
        struct pair *q = &c->qp[p];
        q->rx.kick_fd = q->rx.call_fd = q->rx.err_fd = -1;
        q->tx.kick_fd = q->tx.call_fd = q->tx.err_fd = -1;
        q->partial_at = -1;
        q->salt = (uint32_t)(0x100 * (p + 1));
    }
    return c;
}

bool conn_connect(struct conn *c)
{
    return conn_connect_to(c, sock_path);
}

bool conn_connect_to(struct conn *c, const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int rc = -1;
    for (double end = now() + 3 * time_scale; now() < end;) {
        c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        rc = connect(c->sock, (struct sockaddr *)&sa, sizeof(sa));
        if (rc == 0 || !backend_alive())
            break;
        close(c->sock);
        c->sock = -1;
        sleep_ms(50);
    }
    return rc == 0 || fail(c, "connect to %s: %s", path, strerror(errno));
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

void conn_close(struct conn *c)
{
    close_fd(&c->sock);
    for (int p = 0; p < MAX_PAIRS; p++) {
        struct ring *rs[2] = { &c->qp[p].rx, &c->qp[p].tx };
        for (int i = 0; i < 2; i++) {
            close_fd(&rs[i]->kick_fd);
            close_fd(&rs[i]->call_fd);
            close_fd(&rs[i]->err_fd);
        }
    }
    for (int i = 0; i < FE_MAX_MEM; i++)
        mem_destroy(&c->mem[i]);
}

void conn_free(struct conn *c)
{
    if (c) {
        conn_close(c);
        free(c);
    }
}

/* --- messages --- */

bool send_raw(int sock, const void *buf, size_t len, const int *fds, int nfds)
{
    struct iovec iov = { (void *)buf, len };
    union {
        char buf[CMSG_SPACE(64 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    memset(&u, 0, sizeof(u));
    if (nfds > 64)
        return false;
    if (nfds > 0) {
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
    }
    return sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)len;
}

/* One message: header and payload in one sendmsg, fds riding with them. */
bool vu_send(struct conn *c, uint32_t req, uint32_t flags, const void *payload, uint32_t size,
             const int *fds, int nfds)
{
    uint8_t buf[sizeof(struct vu_header) + sizeof(struct vu_memory)];
    struct vu_header h = { req, flags, size };
    if (size > sizeof(buf) - sizeof(h))
        return fail(c, "send %s: payload of %u bytes is too big for this front-end", request_name(req), size);
    memcpy(buf, &h, sizeof(h));
    if (size)
        memcpy(buf + sizeof(h), payload, size);
    if (!send_raw(c->sock, buf, sizeof(h) + size, fds, nfds))
        return fail(c, "send %s: %s", request_name(req), strerror(errno));
    return true;
}

static bool recv_all(int fd, void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, (int)(REPLY_TIMEOUT_MS * time_scale)) <= 0)
            return false;
        ssize_t n = recv(fd, (char *)buf + done, len - done, 0);
        if (n <= 0)
            return false;
        done += (size_t)n;
    }
    return true;
}

/* Read one reply: header flags must be VERSION|REPLY exactly, the request
 * echoed, the size as the spec fixes it for this request, and no fds. */
bool vu_reply(struct conn *c, uint32_t req, void *payload, uint32_t size)
{
    struct vu_header h;
    union {
        char buf[CMSG_SPACE(8 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = { &h, sizeof(h) };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
    struct pollfd p = { c->sock, POLLIN, 0 };
    int timeout = (int)(REPLY_TIMEOUT_MS * time_scale);

    if (poll(&p, 1, timeout) <= 0)
        return fail(c, "%s: no reply within %d ms", request_name(req), timeout);
    ssize_t n = recvmsg(c->sock, &mh, MSG_CMSG_CLOEXEC);
    if (n == 0)
        return fail(c, "%s: back-end closed the connection instead of replying", request_name(req));
    if (n < 0)
        return fail(c, "%s: recvmsg: %s", request_name(req), strerror(errno));
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            int nf = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int fds[8];
            memcpy(fds, CMSG_DATA(cm), (size_t)(nf > 8 ? 8 : nf) * sizeof(int));
            for (int i = 0; i < nf && i < 8; i++)
                close(fds[i]);
            return fail(c, "%s: reply carried %d fd(s)", request_name(req), nf);
        }
    }
    if (n < (ssize_t)sizeof(h) && !recv_all(c->sock, (char *)&h + n, sizeof(h) - (size_t)n))
        return fail(c, "%s: short reply header (%zd bytes)", request_name(req), n);
    if (h.request != req)
        return fail(c, "%s: reply has request %u (%s)", request_name(req), h.request, request_name(h.request));
    if (h.flags != (VHOST_USER_VERSION | VHOST_USER_REPLY_MASK))
        return fail(c, "%s: reply flags 0x%x, expected 0x5 (VERSION|REPLY)", request_name(req), h.flags);
    if (h.size != size)
        return fail(c, "%s: reply size %u, expected %u", request_name(req), h.size, size);
    if (size && !recv_all(c->sock, payload, size))
        return fail(c, "%s: reply payload (%u bytes) did not arrive", request_name(req), size);
    return true;
}

bool vu_get_u64(struct conn *c, uint32_t req, uint64_t *out)
{
    return vu_send(c, req, VHOST_USER_VERSION, NULL, 0, NULL, 0) && vu_reply(c, req, out, sizeof(*out));
}

bool vu_set_u64(struct conn *c, uint32_t req, uint64_t v)
{
    return vu_send(c, req, VHOST_USER_VERSION, &v, sizeof(v), NULL, 0);
}

bool add_status(struct conn *c, uint8_t bits)
{
    if (!(c->protocol & BIT(VHOST_USER_PROTOCOL_F_STATUS)))
        return true;
    uint64_t s = 0xdead;
    if (!vu_get_u64(c, VHOST_USER_GET_STATUS, &s))
        return false;
    if (s != c->status)
        return fail(c, "GET_STATUS answered 0x%" PRIx64 ", the last SET_STATUS said 0x%x", s, c->status);
    c->status |= bits;
    return vu_set_u64(c, VHOST_USER_SET_STATUS, c->status);
}

bool vu_set_state(struct conn *c, uint32_t req, uint32_t index, uint32_t num)
{
    struct vu_vring_state s = { index, num };
    return vu_send(c, req, VHOST_USER_VERSION, &s, sizeof(s), NULL, 0);
}

/* SET_VRING_KICK/CALL/ERR: u64 = ring index (bit 8 "no fd" clear), fd attached. */
bool vu_set_fd(struct conn *c, uint32_t req, uint32_t index, int fd)
{
    uint64_t v = index;
    return vu_send(c, req, VHOST_USER_VERSION, &v, sizeof(v), &fd, 1);
}

/* Send with NEED_REPLY and wait for the REPLY_ACK (when negotiated).  The
 * back-end handles messages in order, so once this one is acked every
 * earlier one has been handled too: the guest may start at once, with no
 * ring still being reconfigured behind its back. */
static bool vu_send_synced(struct conn *c, uint32_t req, const void *payload, uint32_t size, const int *fds, int nfds)
{
    if (!c->reply_ack)
        return vu_send(c, req, VHOST_USER_VERSION, payload, size, fds, nfds);
    uint64_t ack = ~0ull;
    return vu_send(c, req, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, payload, size, fds, nfds) &&
           vu_reply(c, req, &ack, sizeof(ack)) &&
           (ack == 0 || fail(c, "%s: REPLY_ACK 0x%" PRIx64 ", expected 0", request_name(req), ack));
}

/* --- the handshake --- */

uint64_t fe_wanted_features(bool mrg_rxbuf, int npairs)
{
    return BIT(VIRTIO_F_VERSION_1) | BIT(VIRTIO_RING_F_INDIRECT_DESC) | BIT(VIRTIO_RING_F_EVENT_IDX) |
           BIT(VHOST_USER_F_PROTOCOL_FEATURES) | (mrg_rxbuf ? BIT(VIRTIO_NET_F_MRG_RXBUF) : 0) |
           (npairs > 1 ? BIT(VIRTIO_NET_F_MQ) : 0);
}

static struct ring *ring_of(struct conn *c, int i)
{
    return i & 1 ? &c->qp[i / 2].tx : &c->qp[i / 2].rx;
}

/* Lay out and fill the rings: the guest fills its RX rings before
 * DRIVER_OK, so the back-end must find these buffers without ever being
 * kicked for them. */
static void rings_prepare(struct conn *c, uint16_t base)
{
    for (int p = 0; p < c->npairs; p++) {
        struct pair *q = &c->qp[p];
        ring_init(&q->rx, (uint32_t)(2 * p), &c->mem[0], base);
        ring_init(&q->tx, (uint32_t)(2 * p + 1), &c->mem[0], base);
        while (rx_post(c, q))
            ;
        ring_flush(&q->rx, c->event_idx);
    }
}

/* SET_VRING_NUM, BASE, ADDR, KICK for one ring (the kick fd is new). */
static bool ring_setup(struct conn *c, struct ring *r)
{
    struct vu_vring_addr a = {
        .index = r->index,
        .flags = 0,
        .desc_user_addr = uva_of(r->desc),
        .used_user_addr = uva_of(r->used),
        .avail_user_addr = uva_of(r->avail),
        .log_guest_addr = gpa_of(r->mem, r->used),
    };
    int kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    bool ok = kick >= 0 && vu_set_state(c, VHOST_USER_SET_VRING_NUM, r->index, r->num) &&
              vu_set_state(c, VHOST_USER_SET_VRING_BASE, r->index, r->base) &&
              vu_send(c, VHOST_USER_SET_VRING_ADDR, VHOST_USER_VERSION, &a, sizeof(a), NULL, 0) &&
              vu_set_fd(c, VHOST_USER_SET_VRING_KICK, r->index, kick);
    /* Only now may ring_flush kick. */
    close_fd(&r->kick_fd);
    r->kick_fd = kick;
    return ok;
}

static bool set_mem_table(struct conn *c)
{
    struct vu_memory mt;
    int fds[FE_MAX_MEM];
    memset(&mt, 0, sizeof(mt));
    mt.nregions = (uint32_t)c->nmem;
    for (int i = 0; i < c->nmem; i++) {
        mt.regions[i].guest_phys_addr = c->mem[i].gpa;
        mt.regions[i].memory_size = c->mem[i].size;
        mt.regions[i].userspace_addr = uva_of(c->mem[i].base);
        mt.regions[i].mmap_offset = c->mem[i].mmap_offset;
        fds[i] = c->mem[i].fd;
    }
    uint32_t mt_size = (uint32_t)(offsetof(struct vu_memory, regions) + (size_t)c->nmem * sizeof(struct vu_memory_region));
    if (!c->reply_ack) {
        if (c->tap)
            skip("back-end does not offer PROTOCOL_F_REPLY_ACK", "%s: SET_MEM_TABLE ack", c->tag);
        return vu_send(c, VHOST_USER_SET_MEM_TABLE, VHOST_USER_VERSION, &mt, mt_size, fds, c->nmem);
    }
    uint64_t ack = ~0ull;
    bool ok = vu_send(c, VHOST_USER_SET_MEM_TABLE, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, &mt, mt_size,
                      fds, c->nmem) &&
              vu_reply(c, VHOST_USER_SET_MEM_TABLE, &ack, sizeof(ack));
    return step(c, ok && ack == 0, "SET_MEM_TABLE with NEED_REPLY acked: flags 0x5, u64 0 (got 0x%" PRIx64 ")%s%s",
                ack, c->err[0] ? ": " : "", c->err);
}

/* GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, each reply checked. */
static bool negotiate(struct conn *c, const struct fe_opts *o)
{
    bool ok = vu_get_u64(c, VHOST_USER_GET_FEATURES, &c->offered);
    step(c, ok && (c->offered & BIT(VIRTIO_F_VERSION_1)) && (c->offered & BIT(VHOST_USER_F_PROTOCOL_FEATURES)),
         "GET_FEATURES reply valid, offers VERSION_1 and PROTOCOL_FEATURES (0x%" PRIx64 ")%s%s", c->offered,
         c->err[0] ? ": " : "", c->err);
    if (!ok || !(c->offered & BIT(VHOST_USER_F_PROTOCOL_FEATURES)))
        return fail(c, "no usable GET_FEATURES");
    ok = vu_get_u64(c, VHOST_USER_GET_PROTOCOL_FEATURES, &c->protocol_offered);
    if (!step(c, ok, "GET_PROTOCOL_FEATURES reply valid (0x%" PRIx64 ")%s%s", c->protocol_offered,
              c->err[0] ? ": " : "", c->err))
        return false;
    c->protocol = c->protocol_offered & (BIT(VHOST_USER_PROTOCOL_F_MQ) | BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
                                         (o->status ? BIT(VHOST_USER_PROTOCOL_F_STATUS) : 0));
    c->reply_ack = c->protocol & BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    if (!vu_set_u64(c, VHOST_USER_SET_PROTOCOL_FEATURES, c->protocol))
        return false;
    if (c->protocol & BIT(VHOST_USER_PROTOCOL_F_MQ)) {
        ok = vu_get_u64(c, VHOST_USER_GET_QUEUE_NUM, &c->queue_num);
        if (!step(c, ok && c->queue_num >= (uint64_t)o->npairs,
                  "GET_QUEUE_NUM reply valid, >= %d queue pair(s) (%" PRIu64 ")%s%s", o->npairs, c->queue_num,
                  c->err[0] ? ": " : "", c->err))
            return false;
    } else if (o->npairs > 1) {
        return fail(c, "%d queue pairs wanted, back-end does not offer PROTOCOL_F_MQ", o->npairs);
    } else if (c->tap) {
        skip("back-end does not offer PROTOCOL_F_MQ", "%s: GET_QUEUE_NUM", c->tag);
    }
    c->features = c->offered & (fe_wanted_features(o->mrg_rxbuf, o->npairs) | o->more_features) & ~o->fewer_features;
    if (o->npairs > 1 && !(c->features & BIT(VIRTIO_NET_F_MQ)))
        return fail(c, "%d queue pairs wanted, back-end does not offer VIRTIO_NET_F_MQ", o->npairs);
    c->mrg = c->features & BIT(VIRTIO_NET_F_MRG_RXBUF);
    c->event_idx = c->features & BIT(VIRTIO_RING_F_EVENT_IDX);
    c->indirect = c->features & BIT(VIRTIO_RING_F_INDIRECT_DESC);
    return true;
}

static bool create_memory(struct conn *c, const struct fe_opts *o)
{
    c->nmem = o->nmem ? o->nmem : 1;
    for (int i = 0; i < c->nmem; i++) {
        uint64_t gpa = o->nmem ? o->mem[i].gpa : 0x40000000ull, size = o->nmem ? o->mem[i].size : REGION_SIZE;
        if (!mem_create(&c->mem[i], gpa, size, o->nmem ? o->mem[i].mmap_offset : 0, o->nmem ? o->mem[i].tail : 0))
            return fail(c, "guest memory: %s", strerror(errno));
        if (c->tap)
            diag("%s: SET_MEM_TABLE region %d: gpa 0x%" PRIx64 " size 0x%" PRIx64 " uaddr 0x%" PRIx64 " mmap_offset 0x%" PRIx64
                 "; ring base %u", c->tag, i, c->mem[i].gpa, c->mem[i].size, uva_of(c->mem[i].base),
                 c->mem[i].mmap_offset, o->base);
    }
    return true;
}

static bool make_eventfds(struct conn *c)
{
    for (int i = 0; i < 2 * c->npairs; i++) {
        struct ring *r = ring_of(c, i);
        r->err_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        r->call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (r->err_fd < 0 || r->call_fd < 0)
            return fail(c, "eventfd: %s", strerror(errno));
    }
    return true;
}

/* QEMU 7.2, in the order labs/traces/qemu-7.2.trace records. */
static bool handshake_qemu(struct conn *c, const struct fe_opts *o)
{
    /* Phase 1: what QEMU sends as soon as it connects. */
    uint64_t again = 0;
    if (!negotiate(c, o) || !vu_send(c, VHOST_USER_SET_OWNER, VHOST_USER_VERSION, NULL, 0, NULL, 0))
        return false;
    bool ok = vu_get_u64(c, VHOST_USER_GET_FEATURES, &again);
    if (!step(c, ok && again == c->offered, "second GET_FEATURES (after SET_OWNER) gives the same 0x%" PRIx64 "%s%s",
              again, c->err[0] ? ": " : "", c->err))
        return false;

    /* Call and error eventfds for every ring; the call fds are replaced by
     * new ones at ring set-up, as QEMU does. */
    if (!make_eventfds(c))
        return false;
    for (int i = 0; i < 2 * c->npairs; i++) {
        int early_call = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        ok = vu_set_fd(c, VHOST_USER_SET_VRING_CALL, (uint32_t)i, early_call) &&
             vu_set_fd(c, VHOST_USER_SET_VRING_ERR, (uint32_t)i, ring_of(c, i)->err_fd);
        close_fd(&early_call);
        if (!ok)
            return false;
    }
    for (int i = 0; i < 2 * c->npairs; i++)
        if (!vu_set_state(c, VHOST_USER_SET_VRING_ENABLE, (uint32_t)i, 1))
            return false;

    /* Phase 2: the guest driver has set FEATURES_OK and DRIVER_OK. */
    if (c->tap)
        diag("%s: SET_FEATURES 0x%" PRIx64 " (MRG_RXBUF %d, EVENT_IDX %d, INDIRECT_DESC %d), protocol 0x%" PRIx64,
             c->tag, c->features, c->mrg, c->event_idx, c->indirect, c->protocol);
    if (!vu_set_u64(c, VHOST_USER_SET_FEATURES, c->features) || !add_status(c, VIRTIO_CONFIG_S_FEATURES_OK) ||
        !create_memory(c, o) || !set_mem_table(c))
        return false;
    rings_prepare(c, o->base);
    for (int i = 0; i < 2 * c->npairs; i++) {
        struct ring *r = ring_of(c, i);
        uint64_t index = r->index;
        if (!ring_setup(c, r) || !vu_send_synced(c, VHOST_USER_SET_VRING_CALL, &index, sizeof(index), &r->call_fd, 1))
            return false;
    }
    return add_status(c, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK);
}

/* DPDK 22.11 virtio_user (labs/traces/dpdk-22.11.trace): call fds before SET_FEATURES, the
 * memory table at DRIVER_OK, then all RX rings before the TX rings, each
 * enabled at the end.  With o->resume, as it does on a new connection after
 * its backend restarted (labs/traces/dpdk-22.11-reconnect.trace): the old
 * device stopped first, and no SET_OWNER. */
static bool handshake_dpdk(struct conn *c, const struct fe_opts *o)
{
    if (o->resume) {
        /* virtio_user_dev_server_reconnect: the device it had running is
         * stopped first, on the new connection (each pair disabled, then
         * each ring's base asked); no SET_OWNER. */
        struct vu_vring_state s;
        for (int i = 0; i < 2 * c->npairs; i++)
            if (!vu_set_state(c, VHOST_USER_SET_VRING_ENABLE, (uint32_t)i, 0))
                return false;
        for (int i = 0; i < 2 * c->npairs; i++)
            if (!vu_set_state(c, VHOST_USER_GET_VRING_BASE, (uint32_t)i, 0) ||
                !vu_reply(c, VHOST_USER_GET_VRING_BASE, &s, sizeof(s)) ||
                (s.index != (uint32_t)i && !fail(c, "GET_VRING_BASE ring %d: reply names ring %u", i, s.index)))
                return false;
    } else if (!vu_send(c, VHOST_USER_SET_OWNER, VHOST_USER_VERSION, NULL, 0, NULL, 0)) {
        return false;
    }
    if (!negotiate(c, o) || !make_eventfds(c))
        return false;
    for (int i = 0; i < 2 * c->npairs; i++)
        if (!vu_set_fd(c, VHOST_USER_SET_VRING_CALL, (uint32_t)i, ring_of(c, i)->call_fd))
            return false;
    if (!vu_set_u64(c, VHOST_USER_SET_FEATURES, c->features) || !create_memory(c, o) || !set_mem_table(c))
        return false;
    rings_prepare(c, o->base);
    for (int tx = 0; tx < 2; tx++)
        for (int p = 0; p < c->npairs; p++)
            if (!ring_setup(c, ring_of(c, 2 * p + tx)))
                return false;
    for (int i = 0; i < 2 * c->npairs; i++) {
        struct vu_vring_state s = { (uint32_t)i, 1 };
        if (!vu_send_synced(c, VHOST_USER_SET_VRING_ENABLE, &s, sizeof(s), NULL, 0))
            return false;
    }
    return true;
}

bool handshake(struct conn *c, const struct fe_opts *o)
{
    c->style = o->style;
    c->npairs = o->npairs > 0 && o->npairs <= MAX_PAIRS ? o->npairs : 1;
    bool ok = o->style == STYLE_DPDK ? handshake_dpdk(c, o) : handshake_qemu(c, o);
    if (!ok)
        return false;
    /* Nothing was asked for: the back-end must not have said anything, nor hung up. */
    struct pollfd p = { c->sock, POLLIN, 0 };
    int pr = poll(&p, 1, c->tap ? 50 : 2);
    return step(c, pr == 0, "ring set-up accepted (no unsolicited message, no hang-up)%s",
                pr == 0 ? "" : (p.revents & (POLLHUP | POLLERR)) ? ": connection closed" : ": unexpected data");
}

bool ring_stop(struct conn *c, struct ring *r, uint16_t *base)
{
    struct vu_vring_state s = { 0xffff, 0xffffffff };
    if (c->style == STYLE_DPDK && !vu_set_state(c, VHOST_USER_SET_VRING_ENABLE, r->index, 0))
        return false;
    if (!vu_set_state(c, VHOST_USER_GET_VRING_BASE, r->index, 0) ||
        !vu_reply(c, VHOST_USER_GET_VRING_BASE, &s, sizeof(s)))
        return false;
    if (s.index != r->index || s.num > 0xffff)
        return fail(c, "GET_VRING_BASE ring %u: reply index %u num %u", r->index, s.index, s.num);
    *base = (uint16_t)s.num;
    return true;
}

bool ring_restart(struct conn *c, struct ring *r, uint16_t base, bool fill_rx)
{
    struct pair *q = &c->qp[r->index / 2];
    ring_init(r, r->index, r->mem, base);
    if (!(r->index & 1) && fill_rx) {
        q->partial_at = -1;
        while (rx_post(c, q))
            ;
        ring_flush(r, c->event_idx);
    }
    struct vu_vring_state s = { r->index, 1 };
    return ring_setup(c, r) && vu_send_synced(c, VHOST_USER_SET_VRING_ENABLE, &s, sizeof(s), NULL, 0);
}

/* === The data path: guest driver ========================================== */

/*
 * TX: the frame goes into head's SLOT behind a 12-byte zero header.  Layouts:
 *   0: one descriptor, header and frame together
 *   1: header | frame
 *   2: header | frame[0:a] | frame[a:]
 *   3: header | frame[0:a] | frame[a:b] | frame[b:]
 *   4: one descriptor naming an indirect table: header | frame[0:a] | frame[a:]
 * Pieces are 32+ bytes apart with 0xEE between them, so a back-end that reads
 * past a descriptor's len (or ignores the chain) sends garbage.
 */
bool tx_post(struct conn *c, struct pair *q, uint32_t seq)
{
    struct ring *r = &q->tx;
    uint32_t len = frame_len(seq, q->salt);
    uint64_t rnd = splitmix64(((uint64_t)seq << 20) ^ q->salt ^ 0x7a7a);
    int layout = (c->indirect && seq % 50 == 7) ? 4 : (int)((rnd >> 8) % 4);
    int nseg = layout == 0 ? 1 : layout == 4 ? 3 : layout + 1;
    int ndesc = layout == 4 ? 1 : nseg;
    uint16_t ids[MAX_SEGS];
    int head = ring_take(r, ndesc, ids);
    if (head < 0)
        return false;

    uint8_t frame[MAX_FRAME];
    frame_fill(frame, seq, q->salt, len);
    uint8_t *slot = slot_of(r, head);
    memset(slot, 0xEE, SLOT);
    memset(slot, 0, HDR_LEN);   /* flags 0, GSO_NONE, num_buffers 0 on TX */

    struct seg segs[MAX_SEGS];
    if (layout == 0) {
        segs[0] = (struct seg){ 0, HDR_LEN + len };
        memcpy(slot + HDR_LEN, frame, len);
    } else {
        uint32_t cut[3] = { 0, len, len };
        int pieces = nseg - 1;
        if (pieces == 2) {
            cut[1] = 1 + (uint32_t)(rnd % (len - 1));
        } else if (pieces == 3) {
            uint32_t a = 1 + (uint32_t)(rnd % (len - 2));
            uint32_t b = a + 1 + (uint32_t)((rnd >> 32) % (len - a - 1));
            cut[1] = a;
            cut[2] = b;
        }
        segs[0] = (struct seg){ 0, HDR_LEN };
        uint32_t off = 64;
        for (int i = 0; i < pieces; i++) {
            uint32_t from = cut[i], to = i + 1 < pieces ? cut[i + 1] : len;
            segs[1 + i] = (struct seg){ off, to - from };
            memcpy(slot + off, frame + from, to - from);
            off = (off + (to - from) + 32 + 7) & ~7u;
        }
    }
    c->tx_layouts[layout]++;
    ring_add(r, ids, ndesc, segs, nseg, false, layout == 4);
    return true;
}

/*
 * RX buffers, poisoned with 0xDD.  With MRG_RXBUF the buffers are of mixed
 * sizes (>= 512 bytes, so a frame spans at most 3), a few are chains or
 * indirect; without it every chain holds a whole 1526-byte packet:
 *   single 1526 | 12 + 1514 | 100 + 700 + 1000 | single 2048 at an odd
 *   address | indirect 500 + 500 + 600.
 */
bool rx_post(struct conn *c, struct pair *q)
{
    struct ring *r = &q->rx;
    struct seg segs[MAX_SEGS];
    int nseg = 1;
    bool indirect = false;
    uint32_t k = r->post_count;

    if (c->mrg) {
        static const uint32_t sizes[] = { 2048, 1024, 512, 768, 1526, 0, 0, 4096 };
        switch (k % 8) {
        case 5: nseg = 2; segs[0] = (struct seg){ 0, 256 }; segs[1] = (struct seg){ 512, 300 }; break;
        case 6:
            if (c->indirect) {
                indirect = true;
                nseg = 2;
                segs[0] = (struct seg){ 0, 300 };
                segs[1] = (struct seg){ 400, 700 };
            } else {
                segs[0] = (struct seg){ 0, 600 };
            }
            break;
        default: segs[0] = (struct seg){ 0, sizes[k % 8] }; break;
        }
    } else {
        switch (k % 5) {
        case 0: segs[0] = (struct seg){ 0, HDR_LEN + MAX_FRAME }; break;
        case 1: nseg = 2; segs[0] = (struct seg){ 0, HDR_LEN }; segs[1] = (struct seg){ 64, MAX_FRAME }; break;
        case 2:
            nseg = 3;
            segs[0] = (struct seg){ 0, 100 };
            segs[1] = (struct seg){ 200, 700 };
            segs[2] = (struct seg){ 1000, 1000 };
            break;
        case 3: segs[0] = (struct seg){ 5, 2048 }; break;
        default:
            if (c->indirect) {
                indirect = true;
                nseg = 3;
                segs[0] = (struct seg){ 0, 500 };
                segs[1] = (struct seg){ 600, 500 };
                segs[2] = (struct seg){ 1200, 600 };
            } else {
                segs[0] = (struct seg){ 0, 4096 };
            }
            break;
        }
    }
    uint16_t ids[MAX_SEGS];
    int head = ring_take(r, indirect ? 1 : nseg, ids);
    if (head < 0)
        return false;
    memset(slot_of(r, head), 0xDD, SLOT);
    ring_add(r, ids, indirect ? 1 : nseg, segs, nseg, true, indirect);
    r->post_count++;
    if (indirect)
        c->rx_layouts_indirect++;
    return true;
}

static bool check_used_id(struct conn *c, struct ring *r, uint32_t id, uint16_t at)
{
    if (id >= r->num || !r->chains[id].outstanding)
        return fail(c, "%s used[%u]: id %u is not a head we made available (or returned twice)", r->name,
                    (unsigned)at, id);
    return true;
}

/* Returns the number of used entries read, or -1 on a protocol violation. */
int tx_reap(struct conn *c, struct pair *q)
{
    struct ring *r = &q->tx;
    uint16_t used_idx = __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);
    int n = 0;
    if ((uint16_t)(used_idx - r->last_used_idx) > r->outstanding)
        return fail_int(c, "%s used->idx %u runs %u entries ahead of what we read (%u), only %d outstanding",
                        r->name, used_idx, (uint16_t)(used_idx - r->last_used_idx), r->last_used_idx, r->outstanding);
    while (r->last_used_idx != used_idx) {
        struct vring_used_elem e = r->used->ring[r->last_used_idx % r->num];
        if (!check_used_id(c, r, e.id, r->last_used_idx))
            return -1;
        if (e.len != 0 && c->tx_len_nonzero++ == 0)
            snprintf(c->tx_len_first, sizeof(c->tx_len_first), "used[%u] id %u len %u", r->last_used_idx, e.id, e.len);
        ring_free(r, (uint16_t)e.id);
        r->last_used_idx++;
        r->consumed++;
        n++;
    }
    if (n && c->event_idx)
        __atomic_store_n(used_event(r), r->last_used_idx, __ATOMIC_RELEASE);
    return n;
}

static bool verify_frame(struct conn *c, struct pair *q, const uint8_t *got, uint32_t got_len, int nbufs)
{
    uint32_t seq = q->received;
    uint32_t len = frame_len(seq, q->salt);
    uint8_t want[MAX_FRAME];
    frame_fill(want, seq, q->salt, len);
    if (got_len == len && memcmp(got, want, len) == 0)
        return true;
    uint32_t i = 0;
    while (i < len && i < got_len && got[i] == want[i])
        i++;
    uint32_t got_seq = got_len >= 18 ? (uint32_t)got[14] << 24 | (uint32_t)got[15] << 16 | (uint32_t)got[16] << 8 | got[17]
                                     : 0;
    return fail(c, "%s frame #%u (%d buffer(s)): expected %u bytes, got %u; first difference at byte %u "
                   "(got 0x%02x, want 0x%02x); it carries seq %u",
                q->rx.name, seq, nbufs, len, got_len, i, i < got_len ? got[i] : 0, i < len ? want[i] : 0, got_seq);
}

/* We ack no offloads, so everything but num_buffers must be zero; and
 * num_buffers must be 1 without MRG_RXBUF (virtio 1.2 §5.1.6.4.1; Linux's
 * vhost-net got this wrong until 2025, DPDK 22.11 leaves it unwritten). */
static void check_rx_header(struct conn *c, const uint8_t *hdr, uint16_t want_buffers, uint16_t at)
{
    struct virtio_net_hdr_mrg_rxbuf h;
    memcpy(&h, hdr, sizeof(h));
    if (h.hdr.flags == 0 && h.hdr.gso_type == VIRTIO_NET_HDR_GSO_NONE && h.hdr.hdr_len == 0 && h.hdr.gso_size == 0 &&
        h.hdr.csum_start == 0 && h.hdr.csum_offset == 0 && h.num_buffers == want_buffers)
        return;
    if (c->hdr_bad++ == 0)
        snprintf(c->hdr_bad_first, sizeof(c->hdr_bad_first),
                 "used[%u]: flags 0x%x gso_type %u hdr_len %u gso_size %u csum %u/%u num_buffers %u (want %u)",
                 at, h.hdr.flags, h.hdr.gso_type, h.hdr.hdr_len, h.hdr.gso_size, h.hdr.csum_start,
                 h.hdr.csum_offset, h.num_buffers, want_buffers);
}

int rx_reap(struct conn *c, struct pair *q)
{
    struct ring *r = &q->rx;
    uint16_t used_idx = __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);
    uint8_t pkt[HDR_LEN + MAX_FRAME + 8];
    int n = 0;

    if ((uint16_t)(used_idx - r->last_used_idx) > r->outstanding)
        return fail_int(c, "%s used->idx %u runs %u entries ahead of what we read (%u), only %d outstanding", r->name,
                        used_idx, (uint16_t)(used_idx - r->last_used_idx), r->last_used_idx, r->outstanding);
    while (r->last_used_idx != used_idx) {
        uint16_t at = r->last_used_idx;
        uint16_t ready = (uint16_t)(used_idx - at);
        struct vring_used_elem e = r->used->ring[at % r->num];
        if (!check_used_id(c, r, e.id, at))
            return -1;
        struct chain *ch = &r->chains[e.id];
        if (e.len > ch->cap)
            return fail_int(c, "%s used[%u]: len %u larger than the buffer (%u)", r->name, at, e.len, ch->cap);
        if (e.len < HDR_LEN)
            return fail_int(c, "%s used[%u]: len %u shorter than the 12-byte header", r->name, at, e.len);

        uint16_t nbufs = 1;
        if (c->mrg) {
            struct virtio_net_hdr_mrg_rxbuf h;
            chain_gather(r, (uint16_t)e.id, HDR_LEN, (uint8_t *)&h);
            nbufs = h.num_buffers;
            if (nbufs == 0 || nbufs > 8)
                return fail_int(c, "%s used[%u]: num_buffers %u (a frame of <= 1526 bytes needs 1..3 buffers here)",
                                r->name, at, nbufs);
            if (nbufs > ready) {
                /* The device published used->idx in the middle of a packet:
                 * Linux's receive_mergeable drops such a packet.  Wait. */
                if (q->partial_at != at) {
                    c->mrg_partial++;
                    q->partial_at = at;
                }
                break;
            }
        }
        uint32_t total = 0;
        for (uint16_t i = 0; i < nbufs; i++) {
            struct vring_used_elem ei = r->used->ring[(uint16_t)(at + i) % r->num];
            if (i > 0) {
                if (!check_used_id(c, r, ei.id, (uint16_t)(at + i)))
                    return -1;
                if (ei.len > r->chains[ei.id].cap)
                    return fail_int(c, "%s used[%u]: len %u larger than the buffer (%u)", r->name, (uint16_t)(at + i),
                                    ei.len, r->chains[ei.id].cap);
            }
            if (i + 1 < nbufs && ei.len != r->chains[ei.id].cap && c->mrg_not_full++ == 0)
                snprintf(c->mrg_not_full_first, sizeof(c->mrg_not_full_first),
                         "used[%u] is buffer %u of %u with len %u, buffer holds %u", (uint16_t)(at + i), i + 1, nbufs,
                         ei.len, r->chains[ei.id].cap);
            if (total + ei.len > sizeof(pkt))
                return fail_int(c, "%s used[%u]: packet of %u+ bytes, more than header + 1514", r->name, at,
                                total + ei.len);
            total += chain_gather(r, (uint16_t)ei.id, ei.len, pkt + total);
        }
        check_rx_header(c, pkt, nbufs, at);    /* nbufs is 1 without MRG_RXBUF */
        if (!verify_frame(c, q, pkt + HDR_LEN, total - HDR_LEN, nbufs))
            return -1;
        if (nbufs > 1)
            c->multi_buffer++;
        for (uint16_t i = 0; i < nbufs; i++) {
            ring_free(r, (uint16_t)r->used->ring[(uint16_t)(at + i) % r->num].id);
            r->last_used_idx++;
            r->consumed++;
        }
        q->received++;
        n += nbufs;
    }
    if (n && c->event_idx)
        __atomic_store_n(used_event(r), r->last_used_idx, __ATOMIC_RELEASE);
    return n;
}

/* Sleep until a call eventfd fires, at most ms; the test never depends on calls. */
static void wait_for_call(struct pair *q, int ms)
{
    struct pollfd p[2] = { { q->rx.call_fd, POLLIN, 0 }, { q->tx.call_fd, POLLIN, 0 } };
    if (poll(p, 2, ms) > 0) {
        eventfd_t v;
        if (p[0].revents & POLLIN && eventfd_read(q->rx.call_fd, &v) == 0)
            q->rx.calls += v;
        if (p[1].revents & POLLIN && eventfd_read(q->tx.call_fd, &v) == 0)
            q->tx.calls += v;
    }
}

bool traffic(struct conn *c, struct pair *q, uint32_t npackets)
{
    return traffic_between(c, q, c, q, npackets);
}

bool traffic_between(struct conn *a, struct pair *qa, struct conn *b, struct pair *qb, uint32_t npackets)
{
    double t0 = now(), last_progress = t0;
    if (qa != qb) {     /* b checks a's frames: a's numbers, from where a is */
        qb->salt = qa->salt;
        qb->received = qa->sent;
        qb->partial_at = -1;
    }

    while (qb->received < npackets || qa->tx.outstanding > 0) {
        bool progress = false;

        uint16_t before = qb->rx.avail_idx;
        while (rx_post(b, qb))
            ;
        ring_flush(&qb->rx, b->event_idx);
        progress |= before != qb->rx.avail_idx;

        uint32_t posted = 0;
        while (qa->sent < npackets && qa->sent - qb->received < MAX_IN_FLIGHT && tx_post(a, qa, qa->sent)) {
            qa->sent++;
            posted++;
        }
        ring_flush(&qa->tx, a->event_idx);

        int t = tx_reap(a, qa);
        int rcv = t < 0 ? -1 : rx_reap(b, qb);
        if (b != a && b->err[0])
            return fail(a, "%s", b->err);
        if (t < 0 || rcv < 0 || a->err[0])
            return false;
        if (posted || t || rcv)
            progress = true;

        double tnow = now();
        if (progress) {
            last_progress = tnow;
            continue;
        }
        if (tnow - last_progress > STALL_SECONDS * time_scale || tnow - t0 > TRAFFIC_SECONDS * time_scale) {
            if (!backend_alive())
                return fail(a, "back-end died: sent %u, received %u", qa->sent, qb->received);
            return fail(a, "%s after %.1f s: sent %u, received %u in order; %s avail %u used %u (read %u); "
                           "%s avail %u used %u (read %u)",
                        tnow - t0 > TRAFFIC_SECONDS * time_scale ? "too slow" : "no progress", tnow - t0, qa->sent,
                        qb->received, qa->tx.name, qa->tx.avail_idx, qa->tx.used->idx, qa->tx.last_used_idx,
                        qb->rx.name, qb->rx.avail_idx, qb->rx.used->idx, qb->rx.last_used_idx);
        }
        wait_for_call(qb, 1);
    }
    return true;
}

/* === One frame at a time (frontend.h) ===================================== */

bool frame_add(struct conn *c, struct pair *q, const uint8_t *frame, uint32_t len)
{
    uint16_t id;
    int head = ring_take(&q->tx, 1, &id);
    if (head < 0)
        return fail(c, "no free TX descriptor");
    uint8_t *slot = slot_of(&q->tx, head);
    memset(slot, 0, HDR_LEN);
    memcpy(slot + HDR_LEN, frame, len);
    struct seg seg = { 0, HDR_LEN + len };
    ring_add(&q->tx, &id, 1, &seg, 1, false, false);
    return true;
}

bool frame_send(struct conn *c, struct pair *q, const uint8_t *frame, uint32_t len)
{
    if (!frame_add(c, q, frame, len))
        return false;
    ring_flush(&q->tx, c->event_idx);
    return true;
}

bool tx_wait_done(struct conn *c, struct pair *q)
{
    double end = now() + STALL_SECONDS * time_scale;
    while (q->tx.outstanding > 0) {
        if (tx_reap(c, q) < 0)
            return false;
        if (now() > end)
            return fail(c, "TX descriptors not returned after %.0f s", STALL_SECONDS * time_scale);
        sleep_ms(1);
    }
    return true;
}

/* The RX chain `id` read: its buffers back to the ring, the used entry
 * consumed (and used_event moved, with EVENT_IDX), fresh buffers posted. */
void rx_release(struct conn *c, struct pair *q, uint16_t id)
{
    struct ring *r = &q->rx;
    ring_free(r, id);
    r->last_used_idx++;
    r->consumed++;
    if (c->event_idx)
        __atomic_store_n(used_event(r), r->last_used_idx, __ATOMIC_RELEASE);
    while (rx_post(c, q))
        ;
    ring_flush(r, c->event_idx);
}

int frame_recv(struct conn *c, struct pair *q, uint8_t *out, uint32_t cap)
{
    struct ring *r = &q->rx;
    double end = now() + STALL_SECONDS * time_scale;
    while (__atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE) == r->last_used_idx) {
        if (now() > end)
            return fail_int(c, "no frame on RX after %.0f s", STALL_SECONDS * time_scale);
        sleep_ms(1);
    }
    struct vring_used_elem e = r->used->ring[r->last_used_idx % r->num];
    if (e.id >= r->num || !r->chains[e.id].outstanding || e.len < HDR_LEN || e.len > r->chains[e.id].cap ||
        e.len - HDR_LEN > cap)
        return fail_int(c, "RX used[%u]: id %u len %u is not a buffer we posted", r->last_used_idx, e.id, e.len);
    /* The chain's pieces hold header + frame; piece i covers bytes
     * [pos, pos + n) of it, and only what lies past the header is kept. */
    const struct chain *ch = &r->chains[e.id];
    uint32_t pos = 0;
    for (int i = 0; i < ch->nseg && pos < e.len; i++) {
        uint32_t n = ch->seg[i].len < e.len - pos ? ch->seg[i].len : e.len - pos;
        uint32_t skip = pos < HDR_LEN ? HDR_LEN - pos : 0;
        if (skip < n)
            memcpy(out + pos + skip - HDR_LEN, slot_of(r, e.id) + ch->seg[i].off + skip, n - skip);
        pos += n;
    }
    rx_release(c, q, (uint16_t)e.id);
    return (int)(e.len - HDR_LEN);
}

/* === Packed rings, driver side (virtio 1.2 §2.8) ======================== */

void packed_advance(uint16_t *slot, bool *wrap, uint32_t n)
{
    *slot = (uint16_t)(*slot + n);
    if (*slot >= PACKED_NUM) {
        *slot = (uint16_t)(*slot - PACKED_NUM);
        *wrap = !*wrap;
    }
}

/* Lay the ring out where RING_AREA says (desc, driver event at +0x1000,
 * device event at +0x2000) and make every slot look as it would for a
 * driver that reached (slot, wrap): slots before it used in this lap
 * (AVAIL = USED = wrap), the others used in the previous lap.  None is
 * available, and the base slot is not "already used" in this lap. */
void pring_init(struct pring *r, const char *name, uint32_t index, struct guest_mem *m, uint32_t base)
{
    uint32_t area = RING_AREA(0, index & 1);
    memset(r, 0, sizeof(*r));
    r->name = name;
    r->index = index;
    r->mem = m;
    r->desc = (struct vring_packed_desc *)(m->base + area);
    r->driver = (struct vring_packed_desc_event *)(m->base + area + 0x1000);
    r->device = (struct vring_packed_desc_event *)(m->base + area + 0x2000);
    r->bufs = m->base + (index & 1 ? 0x200000u : 0x100000u);
    r->avail_slot = r->used_slot = (uint16_t)(base & 0x7fff);
    r->avail_wrap = r->used_wrap = base & 0x8000;
    memset(r->desc, 0, sizeof(*r->desc) * PACKED_NUM);
    for (uint16_t s = 0; s < PACKED_NUM; s++) {
        bool lap = s < r->avail_slot ? r->avail_wrap : !r->avail_wrap;
        r->desc[s].flags = (uint16_t)(lap ? PACKED_AVAIL | PACKED_USED : 0);
    }
    memset(r->driver, 0, sizeof(*r->driver));  /* ENABLE: call us after using buffers */
    memset(r->device, 0, sizeof(*r->device));
    r->kick_fd = r->call_fd = -1;
}

/* Make one chain of nseg descriptors available, pieces of its buffer
 * (buffer id = its first slot).  Descriptors after the first take the next
 * slots, each with the flags of the lap its slot is in (Linux's
 * virtqueue_add_packed does the same); the first one's flags go last, with
 * a release store: that is the publication (§2.8.6). */
bool pring_add(struct pring *r, const struct seg *segs, int nseg, bool device_writes)
{
    if (r->inflight + (uint32_t)nseg > PACKED_NUM)
        return false;
    uint16_t head = r->avail_slot, slot = head;
    bool wrap = r->avail_wrap;
    uint16_t head_flags = 0;
    for (int i = 0; i < nseg; i++) {
        struct vring_packed_desc *d = &r->desc[slot];
        uint16_t flags = (uint16_t)((wrap ? PACKED_AVAIL : PACKED_USED) | (device_writes ? VRING_DESC_F_WRITE : 0) |
                                    (i + 1 < nseg ? VRING_DESC_F_NEXT : 0));
        d->addr = gpa_of(r->mem, r->bufs + (size_t)head * PACKED_BUF + segs[i].off);
        d->len = segs[i].len;
        d->id = head;
        if (i == 0)
            head_flags = flags;
        else
            __atomic_store_n(&d->flags, flags, __ATOMIC_RELAXED);
        packed_advance(&slot, &wrap, 1);
    }
    __atomic_store_n(&r->desc[head].flags, head_flags, __ATOMIC_RELEASE);
    r->ndesc[head] = (uint8_t)nseg;
    r->inflight += (uint32_t)nseg;
    r->avail_slot = slot;
    r->avail_wrap = wrap;
    return true;
}

/* Kick unless the device asked us not to (device event DISABLE, §2.8.10);
 * a full barrier first, so the flags we read are not older than our chains. */
void pring_notify(struct pring *r)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!fe_no_kick && __atomic_load_n(&r->device->flags, __ATOMIC_RELAXED) != VRING_PACKED_EVENT_FLAG_DISABLE)
        (void)eventfd_write(r->kick_fd, 1);
}

/* The used descriptor at our used cursor, if the device wrote it in this
 * lap (AVAIL = USED = the used wrap counter, §2.8.1): 1 with its id and len,
 * the cursor moved past the chain; 0 if none yet; -1 (c->err) if its id is
 * not the chain that starts there (no IN_ORDER: one used descriptor per
 * chain, in order). */
int pring_used(struct conn *c, struct pring *r, uint16_t *id, uint32_t *len)
{
    struct vring_packed_desc *d = &r->desc[r->used_slot];
    uint16_t flags = __atomic_load_n(&d->flags, __ATOMIC_ACQUIRE);
    if (!!(flags & PACKED_AVAIL) != r->used_wrap || !!(flags & PACKED_USED) != r->used_wrap)
        return 0;
    *id = d->id;
    *len = d->len;
    if (*id != r->used_slot || r->ndesc[*id] == 0)
        return fail_int(c, "%s: used descriptor in slot %u names buffer id %u, not the chain that starts there",
                        r->name, r->used_slot, *id);
    r->inflight -= r->ndesc[*id];
    packed_advance(&r->used_slot, &r->used_wrap, r->ndesc[*id]);
    r->ndesc[*id] = 0;
    return 1;
}

/* SET_VRING_NUM, BASE, ADDR (descriptors, driver event as "avail", device
 * event as "used"), a new KICK fd, then ENABLE, acked when REPLY_ACK is on. */
bool pring_start(struct conn *c, struct pring *r, uint32_t base)
{
    struct vu_vring_addr a = {
        .index = r->index,
        .desc_user_addr = uva_of(r->desc),
        .used_user_addr = uva_of(r->device),
        .avail_user_addr = uva_of(r->driver),
    };
    if (r->kick_fd >= 0)
        close(r->kick_fd);
    r->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct vu_vring_state on = { r->index, 1 };
    uint64_t ack = 0;
    uint32_t flags = VHOST_USER_VERSION | (c->reply_ack ? VHOST_USER_NEED_REPLY_MASK : 0);
    return (r->kick_fd >= 0 || fail(c, "eventfd: %s", strerror(errno))) &&
           vu_set_state(c, VHOST_USER_SET_VRING_NUM, r->index, PACKED_NUM) &&
           vu_set_state(c, VHOST_USER_SET_VRING_BASE, r->index, base) &&
           vu_send(c, VHOST_USER_SET_VRING_ADDR, VHOST_USER_VERSION, &a, sizeof(a), NULL, 0) &&
           vu_set_fd(c, VHOST_USER_SET_VRING_KICK, r->index, r->kick_fd) &&
           vu_send(c, VHOST_USER_SET_VRING_ENABLE, flags, &on, sizeof(on), NULL, 0) &&
           (!c->reply_ack || vu_reply(c, VHOST_USER_SET_VRING_ENABLE, &ack, sizeof(ack))) &&
           (ack == 0 || fail(c, "SET_VRING_ENABLE ring %u: REPLY_ACK 0x%" PRIx64, r->index, ack));
}

/* GET_VRING_BASE: stops the ring, returns the 32-bit packed base. */
bool pring_stop(struct conn *c, struct pring *r, uint32_t *base)
{
    struct vu_vring_state s = { 0xffff, 0xffffffff };
    if (!vu_set_state(c, VHOST_USER_GET_VRING_BASE, r->index, 0) || !vu_reply(c, VHOST_USER_GET_VRING_BASE, &s, sizeof(s)))
        return false;
    *base = s.num;
    return s.index == r->index || fail(c, "GET_VRING_BASE ring %u: reply names ring %u", r->index, s.index);
}

void pring_close(struct pring *r)
{
    if (r->kick_fd >= 0)
        close(r->kick_fd);
    if (r->call_fd >= 0)
        close(r->call_fd);
    r->kick_fd = r->call_fd = -1;
}

/* DPDK virtio_user's order (labs/traces/dpdk-22.11.trace): SET_OWNER, features, call fds,
 * SET_FEATURES (RING_PACKED before SET_VRING_NUM: a packed ring's size need
 * not be a power of two), the memory table, then each ring at `base`.  With
 * `create`, the guest memory and both rings are made first (empty, as
 * pring_init says); without, the connection is a new one to a back-end
 * started again, and the memory and the rings are what the driver left
 * (new call eventfds; the memory table names the same memfd), and, as
 * virtio_user resuming its session, no SET_OWNER. */
bool packed_session(struct conn *c, struct pring *rx, struct pring *tx, uint32_t base, bool create)
{
    uint64_t want = BIT(VIRTIO_F_VERSION_1) | BIT(VIRTIO_F_RING_PACKED) | BIT(VHOST_USER_F_PROTOCOL_FEATURES);
    if ((create && !vu_send(c, VHOST_USER_SET_OWNER, VHOST_USER_VERSION, NULL, 0, NULL, 0)) ||
        !vu_get_u64(c, VHOST_USER_GET_FEATURES, &c->offered) ||
        !vu_get_u64(c, VHOST_USER_GET_PROTOCOL_FEATURES, &c->protocol_offered))
        return false;
    c->protocol = c->protocol_offered & BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    c->reply_ack = c->protocol != 0;
    c->features = want;
    c->nmem = 1;
    if (!vu_set_u64(c, VHOST_USER_SET_PROTOCOL_FEATURES, c->protocol))
        return false;
    if (create) {
        if (!mem_create(&c->mem[0], 0x40000000ull, REGION_SIZE, 0, 0))
            return fail(c, "guest memory: %s", strerror(errno));
        pring_init(rx, "RX", 0, &c->mem[0], base);
        pring_init(tx, "TX", 1, &c->mem[0], base);
    }
    struct pring *rings[2] = { rx, tx };
    for (int i = 0; i < 2; i++) {
        if (rings[i]->call_fd >= 0)
            close(rings[i]->call_fd);
        rings[i]->call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (rings[i]->call_fd < 0 || !vu_set_fd(c, VHOST_USER_SET_VRING_CALL, rings[i]->index, rings[i]->call_fd))
            return fail(c, "SET_VRING_CALL ring %d: %s", i, c->err[0] ? c->err : strerror(errno));
    }
    struct vu_memory mt = { .nregions = 1 };
    mt.regions[0] = (struct vu_memory_region){ c->mem[0].gpa, c->mem[0].size, uva_of(c->mem[0].base), 0 };
    uint32_t mt_size = (uint32_t)(offsetof(struct vu_memory, regions) + sizeof(mt.regions[0]));
    uint64_t ack = 0;
    uint32_t flags = VHOST_USER_VERSION | (c->reply_ack ? VHOST_USER_NEED_REPLY_MASK : 0);
    return vu_set_u64(c, VHOST_USER_SET_FEATURES, c->features) &&
           vu_send(c, VHOST_USER_SET_MEM_TABLE, flags, &mt, mt_size, &c->mem[0].fd, 1) &&
           (!c->reply_ack || vu_reply(c, VHOST_USER_SET_MEM_TABLE, &ack, sizeof(ack))) &&
           (ack == 0 || fail(c, "SET_MEM_TABLE: REPLY_ACK 0x%" PRIx64, ack)) &&
           pring_start(c, rx, base) && pring_start(c, tx, base);
}

bool packed_handshake(struct conn *c, struct pring *rx, struct pring *tx, uint32_t base)
{
    return packed_session(c, rx, tx, base, true);
}

/* Frame `seq`: 60..1514 bytes of a pattern unique to it. */
uint32_t packed_frame_len(uint32_t seq) { return MIN_FRAME + (seq * 397u) % (MAX_FRAME - MIN_FRAME + 1); }
uint8_t packed_frame_byte(uint32_t seq, uint32_t i) { return (uint8_t)(seq * 13u + i * 7u + (i >> 8)); }

/* Put frame `seq` on TX behind a zero 12-byte header: in one descriptor, or
 * (two_descs) header + first half, second half in the next slot. */
bool packed_tx_frame(struct pring *tx, uint32_t seq, bool two_descs)
{
    uint32_t len = packed_frame_len(seq), cut = two_descs ? len / 2 : len;
    uint8_t *buf = tx->bufs + (size_t)tx->avail_slot * PACKED_BUF;
    memset(buf, 0xEE, PACKED_BUF);
    memset(buf, 0, HDR_LEN);
    for (uint32_t i = 0; i < len; i++)
        buf[i < cut ? HDR_LEN + i : 1024 + (i - cut)] = packed_frame_byte(seq, i);
    struct seg segs[2] = { { 0, HDR_LEN + cut }, { 1024, len - cut } };
    return pring_add(tx, segs, two_descs ? 2 : 1, false);
}

/* One RX buffer holds the header and a whole frame (no MRG_RXBUF). */
bool packed_rx_buffer(struct pring *rx)
{
    memset(rx->bufs + (size_t)rx->avail_slot * PACKED_BUF, 0xDD, PACKED_BUF);
    struct seg seg = { 0, PACKED_BUF };
    return pring_add(rx, &seg, 1, true);
}

/* An RX used descriptor must hold frame `seq`: len = header + frame, the
 * header zero but num_buffers = 1 (VERSION_1 without MRG_RXBUF). */
bool packed_rx_check(struct conn *c, struct pring *rx, uint16_t id, uint32_t len, uint32_t seq)
{
    const uint8_t *b = rx->bufs + (size_t)id * PACKED_BUF;
    uint32_t want = packed_frame_len(seq);
    if (len != HDR_LEN + want)
        return fail(c, "RX slot %u: frame %u came back as %u bytes, want %u + %u", id, seq, len, HDR_LEN, want);
    for (int i = 0; i < HDR_LEN; i++)
        if (b[i] != (i == 10 ? 1 : 0))
            return fail(c, "RX slot %u: header byte %d is 0x%02x", id, i, b[i]);
    for (uint32_t i = 0; i < want; i++)
        if (b[HDR_LEN + i] != packed_frame_byte(seq, i))
            return fail(c, "RX slot %u: frame %u byte %u differs", id, seq, i);
    return true;
}

/*
 * One round: keep n + 1 RX buffers posted, send frames seq .. seq+n-1 (the
 * ones with a bit set in `chained` as two-descriptor chains), and read all n
 * back: every TX chain used, every frame in the next RX buffer, in order.
 */
bool packed_round(struct conn *c, struct pring *rx, struct pring *tx, uint32_t seq, uint32_t n,
                         unsigned chained)
{
    while (rx->inflight < n + 1)
        if (!packed_rx_buffer(rx))
            return fail(c, "RX ring full");
    for (uint32_t k = 0; k < n; k++)
        if (!packed_tx_frame(tx, seq + k, chained >> k & 1))
            return fail(c, "TX ring full at frame %u", seq + k);
    pring_notify(rx);
    pring_notify(tx);
    return packed_collect(c, rx, tx, seq, n, n);
}

/* Read TX and RX used descriptors until `tx_want` TX chains are used and `n`
 * frames from `seq` are back, in order, in the next RX buffers; within 5 s. */
bool packed_collect(struct conn *c, struct pring *rx, struct pring *tx, uint32_t seq, uint32_t n, uint32_t tx_want)
{
    uint32_t tx_done = 0, rx_done = 0;
    double end = now() + 5 * time_scale;
    while (tx_done < tx_want || rx_done < n) {
        uint16_t id;
        uint32_t len;
        int r = pring_used(c, tx, &id, &len);
        if (r < 0)
            return false;
        tx_done += (uint32_t)r;
        int q = pring_used(c, rx, &id, &len);
        if (q < 0 || (q > 0 && !packed_rx_check(c, rx, id, len, seq + rx_done)))
            return false;
        rx_done += (uint32_t)q;
        if (r == 0 && q == 0 && now() > end)
            return fail(c, "after 5 s: %u of %u TX chains used, %u of %u frames back (waiting at TX slot %u, RX slot %u)",
                        tx_done, tx_want, rx_done, n, tx->used_slot, rx->used_slot);
        if (r == 0 && q == 0)
            sleep_ms(1);
    }
    return true;
}
