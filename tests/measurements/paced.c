/* A minimal open-loop HTTP/1.1 client in C: the floor under any paced generator on this machine.

   Constant arrivals from a repeating timerfd (one wake-up per slot at low rates, as the lean engine), each
   slot sent on a free connection (a slot waits, late, while every connection is busy), answers timed by the
   kernel's receive timestamp (SO_TIMESTAMPNS) and latency counted from the slot's intended time.
   reads=deferred: answers do not wake the client, they are read at its next wake-up (the lean engine's
   default); reads=arrival: every answer wakes it, and a server's "Connection: close" answer is closed at
   once (the lean engine against such servers). No HTTP parsing beyond the head's Content-Length and
   Connection; no bookkeeping beyond one latency per answer. Not a load generator: a reference for what the
   kernel and one wake-up per request cost. Built and driven by tests/measurements/paced_floor.py.

   paced HOST PORT RATE_RPS DURATION_S WARMUP_S CONNECTIONS deferred|arrival REQUEST_FILE
   prints one JSON object. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384
#define LATE_NS 1000000LL
#define DRAIN_NS 2000000000LL

typedef struct {
    int fd, busy, len;
    long long intended;
    char buf[BUF];
} conn_t;

static struct sockaddr_in addr;
static char *req;
static size_t req_len;
static int sp; /* the sockets' epoll set */
static long long offset_ns, win_start, win_end;
static int *lat_us;
static long long n_lat, answered, errors, late, sent;
static int *idle, n_idle;
static conn_t *conns;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static void drop_conn(conn_t *c) {
    if (c->fd >= 0) close(c->fd); /* (closing takes it out of the epoll set) */
    c->fd = -1;
    c->busy = 0;
    c->len = 0;
    idle[n_idle++] = (int)(c - conns);
}

/* 1 once the head and Content-Length bytes of body are in, with *closing set from "Connection: close" */
static int complete(conn_t *c, int *closing) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    long length = 0;
    *closing = 0;
    for (char *line = memchr(c->buf, '\n', end - c->buf); line && line < end;
         line = memchr(line + 1, '\n', end - line)) {
        char *h = line + 1;
        if (!strncasecmp(h, "content-length:", 15)) length = strtol(h + 15, NULL, 10);
        else if (!strncasecmp(h, "connection:", 11)) {
            char *v = h + 11;
            while (*v == ' ') v++;
            *closing = !strncasecmp(v, "close", 5);
        }
    }
    return c->len - (end + 4 - c->buf) >= length;
}

static void read_conn(conn_t *c) {
    char ctrl[CMSG_SPACE(sizeof(struct timespec))];
    for (;;) {
        struct iovec iov = {c->buf + c->len, BUF - 1 - c->len};
        struct msghdr msg = {0};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl;
        msg.msg_controllen = sizeof ctrl;
        ssize_t r = recvmsg(c->fd, &msg, 0);
        if (r < 0) {
            if (errno == EAGAIN) return;
            if (c->busy) errors++;
            drop_conn(c);
            return;
        }
        if (r == 0) { /* closed by the server: with a request on it, an error; idle, replaced at its next send */
            if (c->busy) {
                errors++;
                drop_conn(c);
            } else { /* already in the idle list */
                close(c->fd);
                c->fd = -1;
                c->len = 0;
            }
            return;
        }
        long long end_ns = 0;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof ts);
            end_ns = ts.tv_sec * 1000000000LL + ts.tv_nsec - offset_ns;
        }
        c->len += (int)r;
        int closing;
        if (c->busy && complete(c, &closing)) {
            if (closing) { close(c->fd); c->fd = -1; } /* first: the server may wait for our close */
            if (!end_ns) end_ns = now_ns();
            int ok = c->len > 12 && !memcmp(c->buf + 9, "200", 3);
            if (!ok) errors++;
            else if (c->intended >= win_start && c->intended < win_end) {
                answered++;
                lat_us[n_lat++] = (int)((end_ns - c->intended) / 1000);
            }
            c->busy = 0;
            c->len = 0;
            idle[n_idle++] = (int)(c - conns);
            return;
        }
        if (c->len >= BUF - 1) { errors++; drop_conn(c); return; }
        if ((size_t)r < iov.iov_len) return;
    }
}

static void reap(void) {
    struct epoll_event ev[64];
    int n;
    do {
        n = epoll_wait(sp, ev, 64, 0);
        for (int i = 0; i < n; i++) {
            conn_t *c = &conns[ev[i].data.u32];
            if (c->fd >= 0) read_conn(c);
        }
    } while (n == 64);
}

static int send_on(conn_t *c, long long intended) {
    if (c->fd < 0) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno == EINPROGRESS) {
            struct pollfd p = {fd, POLLOUT, 0};
            poll(&p, 1, 1000); /* loopback: at once */
        }
        struct epoll_event ev = {EPOLLIN | EPOLLRDHUP, {.u32 = (uint32_t)(c - conns)}};
        epoll_ctl(sp, EPOLL_CTL_ADD, fd, &ev);
        c->fd = fd;
    }
    c->intended = intended;
    c->busy = 1;
    if (send(c->fd, req, req_len, MSG_NOSIGNAL) != (ssize_t)req_len) {
        errors++;
        drop_conn(c);
        return 0;
    }
    return 1;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: paced HOST PORT RATE DURATION WARMUP CONNECTIONS deferred|arrival FILE\n");
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    double rate = atof(argv[3]), duration = atof(argv[4]), warmup = atof(argv[5]);
    int n_conns = atoi(argv[6]), arrival = !strcmp(argv[7], "arrival");
    FILE *f = fopen(argv[8], "rb");
    if (!f) { perror(argv[8]); return 2; }
    req = malloc(1 << 20);
    req_len = fread(req, 1, 1 << 20, f);
    fclose(f);

    long long period = (long long)(1e9 / rate);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    offset_ns = rt.tv_sec * 1000000000LL + rt.tv_nsec - now_ns();
    long long t0 = now_ns() + 50000000LL;
    win_start = t0 + (long long)(warmup * 1e9);
    win_end = win_start + (long long)(duration * 1e9);
    long long slots = (win_end - t0) / period;
    lat_us = malloc(sizeof(int) * (slots + 1));
    conns = calloc(n_conns, sizeof(conn_t));
    idle = malloc(sizeof(int) * n_conns);
    for (int i = n_conns - 1; i >= 0; i--) { conns[i].fd = -1; idle[n_idle++] = i; }

    int ep = epoll_create1(0), tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    sp = epoll_create1(0);
    struct itimerspec its = {{period / 1000000000LL, period % 1000000000LL},
                             {t0 / 1000000000LL, t0 % 1000000000LL}};
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
    struct epoll_event ev = {EPOLLIN, {.u32 = 0}};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    struct epoll_event sev = {EPOLLIN, {.u32 = 1}};
    int sp_on = 0;
    if (arrival) { epoll_ctl(ep, EPOLL_CTL_ADD, sp, &sev); sp_on = 1; }

    long long next = 0;
    double cpu0 = -1, cpu1 = -1;
    for (;;) {
        struct epoll_event evs[4];
        long long now = now_ns();
        int timeout = now >= win_end ? 50 : -1;
        int n = epoll_wait(ep, evs, 4, timeout);
        for (int i = 0; i < n; i++)
            if (evs[i].data.u32 == 0) { uint64_t x; if (read(tfd, &x, 8) < 0) {} }
        reap();
        now = now_ns();
        if (cpu0 < 0 && now >= win_start) cpu0 = cpu_s();
        if (now >= win_end) {
            if (cpu1 < 0) cpu1 = cpu_s();
            if (n_idle == n_conns || now >= win_end + DRAIN_NS) break;
            if (!sp_on) { epoll_ctl(ep, EPOLL_CTL_ADD, sp, &sev); sp_on = 1; }
            continue;
        }
        int starved = 0;
        while (next < slots && t0 + next * period <= now) {
            if (!n_idle) { starved = 1; break; }
            long long intended = t0 + next * period;
            conn_t *c = &conns[idle[--n_idle]];
            if (send_on(c, intended)) {
                sent++;
                if (now - intended > LATE_NS) late++;
            }
            next++;
        }
        if (!arrival && starved != sp_on) {
            epoll_ctl(ep, starved ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, sp, &sev);
            sp_on = starved;
        }
    }
    if (cpu0 < 0) cpu0 = cpu_s();
    if (cpu1 < 0) cpu1 = cpu_s();
    qsort(lat_us, n_lat, sizeof(int), cmp_int);
    printf("{\"answered\": %lld, \"throughput_rps\": %.1f, \"errors\": %lld, \"sent\": %lld, \"late\": %lld, "
           "\"unsent\": %lld, \"cpu_us_per_request\": %.1f, \"busy_percent\": %.1f, \"p50_us\": %d, "
           "\"p99_us\": %d, \"max_us\": %d}\n",
           answered, answered / duration, errors, sent, late, slots - next,
           answered ? (cpu1 - cpu0) * 1e6 / answered : 0.0, 100 * (cpu1 - cpu0) / duration,
           n_lat ? lat_us[n_lat / 2] : -1, n_lat ? lat_us[(long long)(n_lat * 0.99)] : -1,
           n_lat ? lat_us[n_lat - 1] : -1);
    return 0;
}
