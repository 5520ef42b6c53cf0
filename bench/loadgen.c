/*
 * loadgen: a small epoll load generator for echo servers on 127.0.0.1.
 *
 * One thread, non-blocking sockets, level-triggered epoll. Three modes:
 *
 *   rr   --port P --conns C --size S --duration D [--warmup W]
 *        C connections; each sends one S-byte message, waits for its whole
 *        echo (checked byte for byte), then sends the next. Requests that
 *        complete inside the D-second window after the warm-up are counted.
 *   bulk --port P --conns C --size S --duration D [--warmup W] [--max-bytes B]
 *        C connections stream writes of up to S bytes while reading the echo
 *        concurrently (the stream is checked byte for byte). Echoed bytes
 *        received inside the window are counted.
 *   hold --port P --conns N --size S --timeout T [--window K]
 *        Opens N connections (at most K connects/echoes outstanding at once),
 *        sends one S-byte message on each and checks its echo, keeping every
 *        connection open until all N are done or T seconds have passed.
 *
 * Every mode stops by itself: after the window (or T) sending stops, the
 * outstanding echoes get a bounded grace period (--drain, default 5 s), and
 * bulk additionally caps bytes per connection. The destination is always
 * 127.0.0.1; there is deliberately no --host option.
 *
 * Optional --server-pid PID samples the server's CPU time from /proc at the
 * window's edges, so the caller can tell which side saturates its core.
 *
 * Output: one JSON object on stdout. Exit status 0 if every check passed
 * (no mismatched byte, no connection error, nothing left unfinished), 1 if
 * not, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A prime period, so the pattern never lines up with power-of-two sizes:
 * a chunk echoed at the wrong offset or on the wrong connection mismatches. */
#define PATTERN_PERIOD 65521u
#define MAX_EVENTS 1024
#define LAT_BUCKETS 200000 /* 1 us buckets up to 200 ms; slower goes in the last */

enum mode { MODE_RR, MODE_BULK, MODE_HOLD };

struct options {
    enum mode mode;
    int port;
    int conns;
    size_t size;
    double duration;
    double warmup;
    double timeout;
    double drain;
    int window;
    unsigned long long max_bytes;
    int server_pid;
};

struct conn {
    int fd;
    int state; /* see CS_* */
    uint32_t events; /* what is registered with epoll */
    unsigned long long seq; /* rr: message number; bulk: unused */
    size_t sent, recvd; /* rr/hold: within the current message */
    unsigned long long wpos, rpos; /* bulk: stream offsets */
    double started; /* rr: when the current message was begun */
};

enum { CS_CONNECTING, CS_ACTIVE, CS_DRAINING, CS_DONE, CS_FAILED };

static unsigned char *pattern; /* periodic, PATTERN_PERIOD + max(size, scratch) bytes */
static unsigned char *scratch;
static size_t scratch_len;
static unsigned long long *lat_hist;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of another process, in seconds; -1 if unavailable. */
static double proc_cpu(int pid) {
    if (pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* The command name may contain spaces or ')': fields restart after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long utime = 0, stime = 0;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void usage(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    fprintf(stderr,
            "usage: loadgen rr|bulk|hold --port P [--conns C] [--size S] [--duration D] [--warmup W]\n"
            "               [--timeout T] [--window K] [--drain G] [--max-bytes B] [--server-pid PID]\n");
    exit(2);
}

static double parse_double(const char *s, const char *what) {
    char *end;
    double v = strtod(s, &end);
    if (*s == 0 || *end != 0 || v < 0)
        usage(what);
    return v;
}

static long long parse_int(const char *s, const char *what) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == 0 || *end != 0 || v < 0)
        usage(what);
    return v;
}

static void parse_args(int argc, char **argv, struct options *o) {
    memset(o, 0, sizeof *o);
    o->conns = 10;
    o->size = 64;
    o->duration = 5;
    o->warmup = 0.5;
    o->timeout = 60;
    o->drain = 5;
    o->window = 1000;
    o->max_bytes = 1ull << 40;
    if (argc < 2)
        usage("missing mode");
    if (!strcmp(argv[1], "rr"))
        o->mode = MODE_RR;
    else if (!strcmp(argv[1], "bulk"))
        o->mode = MODE_BULK;
    else if (!strcmp(argv[1], "hold"))
        o->mode = MODE_HOLD;
    else
        usage("mode must be rr, bulk or hold");
    for (int i = 2; i < argc; i += 2) {
        if (i + 1 >= argc)
            usage("option without a value");
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--port"))
            o->port = (int)parse_int(v, "bad --port");
        else if (!strcmp(k, "--conns"))
            o->conns = (int)parse_int(v, "bad --conns");
        else if (!strcmp(k, "--size"))
            o->size = (size_t)parse_int(v, "bad --size");
        else if (!strcmp(k, "--duration"))
            o->duration = parse_double(v, "bad --duration");
        else if (!strcmp(k, "--warmup"))
            o->warmup = parse_double(v, "bad --warmup");
        else if (!strcmp(k, "--timeout"))
            o->timeout = parse_double(v, "bad --timeout");
        else if (!strcmp(k, "--drain"))
            o->drain = parse_double(v, "bad --drain");
        else if (!strcmp(k, "--window"))
            o->window = (int)parse_int(v, "bad --window");
        else if (!strcmp(k, "--max-bytes"))
            o->max_bytes = (unsigned long long)parse_int(v, "bad --max-bytes");
        else if (!strcmp(k, "--server-pid"))
            o->server_pid = (int)parse_int(v, "bad --server-pid");
        else
            usage("unknown option");
    }
    if (o->port < 1 || o->port > 65535)
        usage("--port must be in 1..65535");
    if (o->conns < 1 || o->conns > 1000000)
        usage("--conns must be in 1..1000000");
    if (o->size < 1 || o->size > (64u << 20))
        usage("--size must be in 1..64 MiB");
    if (o->window < 1)
        usage("--window must be >= 1");
}

/* The byte expected at stream offset `off` of connection `c`, message `seq`
 * (rr/hold), as an index into `pattern`. Different connections and messages
 * start at different phases, so crossed or stale echoes are caught. */
static size_t phase(int c, unsigned long long seq) {
    return (size_t)(((unsigned long long)c * 7919u + seq * 104729u) % PATTERN_PERIOD);
}

static void raise_nofile(int need) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < (rlim_t)need) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t)need ? (rlim_t)need : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static struct sockaddr_in target(int port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sa;
}

/* Starts a non-blocking connect; returns the fd or -1 (errno set). */
static int start_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    /* Without NODELAY a message split by a partial send would wait for an ACK. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = target(port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void set_events(int ep, struct conn *c, int idx, uint32_t events) {
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)idx};
    int op = c->events == 0 ? EPOLL_CTL_ADD : (events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD);
    if (epoll_ctl(ep, op, c->fd, &ev) != 0) {
        perror("epoll_ctl");
        exit(1);
    }
    c->events = events;
}

struct stats {
    unsigned long long requests; /* rr: completed inside the window; hold: echoes verified */
    unsigned long long requests_total;
    unsigned long long bytes; /* bulk: echoed bytes received inside the window */
    unsigned long long bytes_total;
    unsigned long long mismatches;
    unsigned long long conn_errors;
    unsigned long long unfinished;
    unsigned long long connected;
    unsigned long long lat_samples;
    int peak_open;
    double window_start, window_end;
    double cpu_self_start, cpu_self_end;
    double cpu_server_start, cpu_server_end;
    char first_error[160];
};

static void note_error(struct stats *st, const char *what, int err) {
    st->conn_errors++;
    if (!st->first_error[0])
        snprintf(st->first_error, sizeof st->first_error, "%s: %s", what, strerror(err));
}

static void fail_conn(int ep, struct conn *c, int idx) {
    set_events(ep, c, idx, 0);
    close(c->fd);
    c->fd = -1;
    c->state = CS_FAILED;
}

/* rr/hold: send what is left of the current message; arms EPOLLOUT if the
 * kernel took only part of it. Returns 0 on success, -1 if the connection died. */
static int rr_send(int ep, struct conn *c, int idx, size_t size, struct stats *st) {
    const unsigned char *msg = pattern + phase(idx, c->seq);
    while (c->sent < size) {
        ssize_t n = send(c->fd, msg + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN)
                break;
            note_error(st, "send", errno);
            fail_conn(ep, c, idx);
            return -1;
        }
        c->sent += (size_t)n;
    }
    set_events(ep, c, idx, EPOLLIN | (c->sent < size ? EPOLLOUT : 0));
    return 0;
}

/* rr/hold: read the echo. Returns 1 when the whole message has come back
 * (and matched), 0 if more is to come, -1 if the connection died or lied. */
static int rr_recv(int ep, struct conn *c, int idx, size_t size, struct stats *st) {
    const unsigned char *msg = pattern + phase(idx, c->seq);
    while (c->recvd < size) {
        size_t want = size - c->recvd;
        if (want > scratch_len)
            want = scratch_len;
        ssize_t n = recv(c->fd, scratch, want, 0);
        if (n < 0) {
            if (errno == EAGAIN)
                return 0;
            note_error(st, "recv", errno);
            fail_conn(ep, c, idx);
            return -1;
        }
        if (n == 0) {
            note_error(st, "recv", ECONNRESET); /* early EOF: the echo is incomplete */
            fail_conn(ep, c, idx);
            return -1;
        }
        if ((size_t)n > c->sent - c->recvd || memcmp(scratch, msg + c->recvd, (size_t)n) != 0) {
            /* More than we sent, or different bytes: the server is wrong. */
            st->mismatches++;
            fail_conn(ep, c, idx);
            return -1;
        }
        c->recvd += (size_t)n;
    }
    return 1;
}

/* Blocking-free setup for rr/bulk: connect every socket and wait (bounded)
 * until all are established. Returns the number connected. */
static int connect_all(int ep, struct conn *cs, const struct options *o, struct stats *st) {
    int pending = 0;
    for (int i = 0; i < o->conns; i++) {
        cs[i].fd = start_connect(o->port);
        if (cs[i].fd < 0) {
            note_error(st, "connect", errno);
            cs[i].state = CS_FAILED;
            continue;
        }
        cs[i].state = CS_CONNECTING;
        set_events(ep, &cs[i], i, EPOLLOUT);
        pending++;
    }
    struct epoll_event evs[MAX_EVENTS];
    double deadline = now() + 10;
    while (pending > 0 && now() < deadline) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 100);
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            struct conn *c = &cs[i];
            if (c->state != CS_CONNECTING)
                continue;
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            pending--;
            if (err) {
                note_error(st, "connect", err);
                fail_conn(ep, c, i);
                continue;
            }
            c->state = CS_ACTIVE;
            st->connected++;
            set_events(ep, c, i, EPOLLIN);
        }
    }
    for (int i = 0; i < o->conns; i++)
        if (cs[i].state == CS_CONNECTING) {
            note_error(st, "connect", ETIMEDOUT);
            fail_conn(ep, &cs[i], i);
        }
    return (int)st->connected;
}

static void run_rr(int ep, struct conn *cs, const struct options *o, struct stats *st) {
    if (connect_all(ep, cs, o, st) == 0)
        return;
    double t0 = now();
    st->window_start = t0 + o->warmup;
    st->window_end = st->window_start + o->duration;
    int in_window = 0;
    for (int i = 0; i < o->conns; i++) {
        if (cs[i].state != CS_ACTIVE)
            continue;
        cs[i].started = t0;
        rr_send(ep, &cs[i], i, o->size, st);
    }
    int active = (int)st->connected;
    int stopping = 0;
    double drain_deadline = 0;
    struct epoll_event evs[MAX_EVENTS];
    while (active > 0) {
        double t = now();
        if (!in_window && t >= st->window_start) {
            in_window = 1;
            st->cpu_self_start = self_cpu();
            st->cpu_server_start = proc_cpu(o->server_pid);
        }
        if (!stopping && t >= st->window_end) {
            /* The window is over: no new requests, let the outstanding ones finish. */
            stopping = 1;
            st->cpu_self_end = self_cpu();
            st->cpu_server_end = proc_cpu(o->server_pid);
            drain_deadline = t + o->drain;
        }
        if (stopping && t >= drain_deadline)
            break;
        int n = epoll_wait(ep, evs, MAX_EVENTS, 10);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            exit(1);
        }
        t = now();
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            struct conn *c = &cs[i];
            if (c->state != CS_ACTIVE)
                continue;
            if ((evs[k].events & EPOLLOUT) && rr_send(ep, c, i, o->size, st) < 0) {
                active--;
                continue;
            }
            if (!(evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            int r = rr_recv(ep, c, i, o->size, st);
            if (r < 0) {
                active--;
                continue;
            }
            if (r == 0)
                continue;
            /* One full echo. Count it if it finished inside the window. */
            st->requests_total++;
            if (t >= st->window_start && t < st->window_end) {
                st->requests++;
                double us = (t - c->started) * 1e6;
                size_t b = us < 0 ? 0 : (us >= LAT_BUCKETS - 1 ? LAT_BUCKETS - 1 : (size_t)us);
                lat_hist[b]++;
                st->lat_samples++;
            }
            if (stopping || t >= st->window_end) {
                c->state = CS_DONE;
                set_events(ep, c, i, 0);
                active--;
                continue;
            }
            c->seq++;
            c->sent = c->recvd = 0;
            c->started = t;
            if (rr_send(ep, c, i, o->size, st) < 0)
                active--;
        }
    }
    if (!stopping) { /* every connection failed before the window closed */
        st->cpu_self_end = self_cpu();
        st->cpu_server_end = proc_cpu(o->server_pid);
        st->window_end = now();
    }
    for (int i = 0; i < o->conns; i++)
        if (cs[i].state == CS_ACTIVE)
            st->unfinished++;
}

static void run_bulk(int ep, struct conn *cs, const struct options *o, struct stats *st) {
    if (connect_all(ep, cs, o, st) == 0)
        return;
    double t0 = now();
    st->window_start = t0 + o->warmup;
    st->window_end = st->window_start + o->duration;
    int in_window = 0, stopping = 0, active = 0;
    double drain_deadline = 0;
    for (int i = 0; i < o->conns; i++)
        if (cs[i].state == CS_ACTIVE) {
            set_events(ep, &cs[i], i, EPOLLIN | EPOLLOUT);
            active++;
        }
    struct epoll_event evs[MAX_EVENTS];
    while (active > 0) {
        double t = now();
        if (!in_window && t >= st->window_start) {
            in_window = 1;
            st->cpu_self_start = self_cpu();
            st->cpu_server_start = proc_cpu(o->server_pid);
        }
        if (!stopping && t >= st->window_end) {
            /* Stop writing and half-close: the server echoes the rest, then its FIN. */
            stopping = 1;
            st->cpu_self_end = self_cpu();
            st->cpu_server_end = proc_cpu(o->server_pid);
            drain_deadline = t + o->drain;
            for (int i = 0; i < o->conns; i++)
                if (cs[i].state == CS_ACTIVE) {
                    cs[i].state = CS_DRAINING;
                    shutdown(cs[i].fd, SHUT_WR);
                    set_events(ep, &cs[i], i, EPOLLIN);
                }
        }
        if (stopping && t >= drain_deadline)
            break;
        int n = epoll_wait(ep, evs, MAX_EVENTS, 10);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            exit(1);
        }
        t = now();
        int counting = t >= st->window_start && t < st->window_end;
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            struct conn *c = &cs[i];
            if (c->state != CS_ACTIVE && c->state != CS_DRAINING)
                continue;
            if ((evs[k].events & EPOLLOUT) && c->state == CS_ACTIVE) {
                unsigned long long left = o->max_bytes - c->wpos;
                size_t want = o->size < left ? o->size : (size_t)left;
                if (want > 0) {
                    ssize_t w = send(c->fd, pattern + (c->wpos + phase(i, 0)) % PATTERN_PERIOD, want,
                                     MSG_NOSIGNAL);
                    if (w > 0)
                        c->wpos += (unsigned long long)w;
                    else if (w < 0 && errno != EAGAIN) {
                        note_error(st, "send", errno);
                        fail_conn(ep, c, i);
                        active--;
                        continue;
                    }
                }
                if (c->wpos >= o->max_bytes) { /* byte cap reached: finish like the window's end */
                    c->state = CS_DRAINING;
                    shutdown(c->fd, SHUT_WR);
                    set_events(ep, c, i, EPOLLIN);
                }
            }
            if (!(evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            ssize_t r = recv(c->fd, scratch, scratch_len, 0);
            if (r < 0) {
                if (errno == EAGAIN)
                    continue;
                note_error(st, "recv", errno);
                fail_conn(ep, c, i);
                active--;
                continue;
            }
            if (r == 0) {
                /* The server's FIN: fine only after a half-close, with every byte back. */
                if (c->state == CS_DRAINING && c->rpos == c->wpos) {
                    c->state = CS_DONE;
                    set_events(ep, c, i, 0);
                    close(c->fd);
                    c->fd = -1;
                } else {
                    note_error(st, "recv", ECONNRESET);
                    fail_conn(ep, c, i);
                }
                active--;
                continue;
            }
            size_t off = (size_t)((c->rpos + phase(i, 0)) % PATTERN_PERIOD);
            if (c->rpos + (unsigned long long)r > c->wpos || memcmp(scratch, pattern + off, (size_t)r) != 0) {
                st->mismatches++;
                fail_conn(ep, c, i);
                active--;
                continue;
            }
            c->rpos += (unsigned long long)r;
            st->bytes_total += (unsigned long long)r;
            if (counting)
                st->bytes += (unsigned long long)r;
        }
    }
    if (!stopping) {
        st->cpu_self_end = self_cpu();
        st->cpu_server_end = proc_cpu(o->server_pid);
        st->window_end = now();
    }
    for (int i = 0; i < o->conns; i++)
        if (cs[i].state == CS_ACTIVE || cs[i].state == CS_DRAINING)
            st->unfinished++;
}

static void run_hold(int ep, struct conn *cs, const struct options *o, struct stats *st) {
    raise_nofile(o->conns + 64);
    double t0 = now();
    st->window_start = t0;
    st->cpu_self_start = self_cpu();
    st->cpu_server_start = proc_cpu(o->server_pid);
    double deadline = t0 + o->timeout;
    int opened = 0, outstanding = 0, open_now = 0, finished = 0;
    struct epoll_event evs[MAX_EVENTS];
    while (finished < o->conns && now() < deadline) {
        /* Keep at most `window` connections between connect() and their echo:
         * the listen backlog (somaxconn) and SYN queue are finite, and a
         * dropped SYN costs a one-second retransmit, which would time the
         * kernel's queues rather than the server. */
        while (opened < o->conns && outstanding < o->window) {
            struct conn *c = &cs[opened];
            c->fd = start_connect(o->port);
            if (c->fd < 0) {
                note_error(st, "connect", errno);
                c->state = CS_FAILED;
                finished++;
                opened++;
                continue;
            }
            c->state = CS_CONNECTING;
            set_events(ep, c, opened, EPOLLOUT);
            opened++;
            outstanding++;
            open_now++;
            if (open_now > st->peak_open)
                st->peak_open = open_now;
        }
        int n = epoll_wait(ep, evs, MAX_EVENTS, 10);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            exit(1);
        }
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            struct conn *c = &cs[i];
            if (c->state == CS_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    note_error(st, "connect", err);
                    fail_conn(ep, c, i);
                    outstanding--;
                    open_now--;
                    finished++;
                    continue;
                }
                st->connected++;
                c->state = CS_ACTIVE;
                if (rr_send(ep, c, i, o->size, st) < 0) {
                    outstanding--;
                    open_now--;
                    finished++;
                }
                continue;
            }
            if (c->state != CS_ACTIVE)
                continue;
            if ((evs[k].events & EPOLLOUT) && rr_send(ep, c, i, o->size, st) < 0) {
                outstanding--;
                open_now--;
                finished++;
                continue;
            }
            if (!(evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            int r = rr_recv(ep, c, i, o->size, st);
            if (r == 0)
                continue;
            outstanding--;
            finished++;
            if (r < 0) {
                open_now--;
                continue;
            }
            /* Verified: keep the connection open but stop watching it. */
            st->requests++;
            c->state = CS_DONE;
            set_events(ep, c, i, 0);
        }
    }
    st->window_end = now();
    st->cpu_self_end = self_cpu();
    st->cpu_server_end = proc_cpu(o->server_pid);
    st->unfinished = (unsigned long long)(o->conns - finished);
    st->requests_total = st->requests;
}

static void print_json(const struct options *o, const struct stats *st) {
    static const char *names[] = {"rr", "bulk", "hold"};
    double elapsed = st->window_end - st->window_start;
    if (elapsed <= 0)
        elapsed = 1e-9;
    double p50 = -1, p99 = -1;
    if (st->lat_samples) {
        unsigned long long acc = 0, q50 = (st->lat_samples + 1) / 2, q99 = (st->lat_samples * 99 + 99) / 100;
        for (size_t b = 0; b < LAT_BUCKETS; b++) {
            acc += lat_hist[b];
            if (p50 < 0 && acc >= q50)
                p50 = (double)b;
            if (p99 < 0 && acc >= q99) {
                p99 = (double)b;
                break;
            }
        }
    }
    double server_cpu = st->cpu_server_start >= 0 && st->cpu_server_end >= 0
                            ? (st->cpu_server_end - st->cpu_server_start) / elapsed
                            : -1;
    int ok = st->mismatches == 0 && st->conn_errors == 0 && st->unfinished == 0 &&
             st->connected == (unsigned long long)o->conns;
    printf("{\"mode\":\"%s\",\"conns\":%d,\"size\":%zu,\"elapsed\":%.6f,\"requests\":%llu,"
           "\"requests_total\":%llu,\"rps\":%.1f,\"bytes\":%llu,\"bytes_total\":%llu,\"mb_per_s\":%.2f,"
           "\"lat_p50_us\":%.0f,\"lat_p99_us\":%.0f,\"connected\":%llu,\"peak_open\":%d,"
           "\"mismatches\":%llu,\"conn_errors\":%llu,\"unfinished\":%llu,\"first_error\":\"%s\","
           "\"loadgen_cpu\":%.3f,\"server_cpu\":%.3f,\"ok\":%s}\n",
           names[o->mode], o->conns, o->size, elapsed, st->requests, st->requests_total,
           st->requests / elapsed, st->bytes, st->bytes_total, st->bytes / elapsed / 1e6, p50, p99,
           st->connected, st->peak_open, st->mismatches, st->conn_errors, st->unfinished, st->first_error,
           (st->cpu_self_end - st->cpu_self_start) / elapsed, server_cpu, ok ? "true" : "false");
}

int main(int argc, char **argv) {
    struct options o;
    parse_args(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    scratch_len = o.size < 256 * 1024 ? (o.size > 65536 ? o.size : 65536) : 256 * 1024;
    /* Long enough that any phase can be compared against a full scratch read. */
    size_t pattern_len = PATTERN_PERIOD + (o.size > scratch_len ? o.size : scratch_len) + 1;
    pattern = malloc(pattern_len);
    scratch = malloc(scratch_len);
    lat_hist = calloc(LAT_BUCKETS, sizeof *lat_hist);
    struct conn *cs = calloc((size_t)o.conns, sizeof *cs);
    if (!pattern || !scratch || !lat_hist || !cs) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    /* xorshift bytes, repeated with period PATTERN_PERIOD so any phase can be
     * read as one contiguous run of up to `size` bytes. */
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < PATTERN_PERIOD; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pattern[i] = (unsigned char)(x >> 24);
    }
    for (size_t i = PATTERN_PERIOD; i < pattern_len; i++)
        pattern[i] = pattern[i % PATTERN_PERIOD];
    for (int i = 0; i < o.conns; i++)
        cs[i].fd = -1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("epoll_create1");
        return 1;
    }
    struct stats st;
    memset(&st, 0, sizeof st);
    st.cpu_server_start = st.cpu_server_end = -1;
    if (o.mode == MODE_RR)
        run_rr(ep, cs, &o, &st);
    else if (o.mode == MODE_BULK)
        run_bulk(ep, cs, &o, &st);
    else
        run_hold(ep, cs, &o, &st);
    print_json(&o, &st);
    fflush(stdout);
    for (int i = 0; i < o.conns; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    return st.mismatches == 0 && st.conn_errors == 0 && st.unfinished == 0 &&
                   st.connected == (unsigned long long)o.conns
               ? 0
               : 1;
}
