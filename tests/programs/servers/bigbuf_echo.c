/*
 * bigbuf_echo.c -- a CORRECT single-threaded, non-blocking epoll echo server in C
 * that buffers much more per connection than the harness's reference server.
 *
 * Shape modelled: the classic C epoll server (nginx/haproxy-style event loop)
 * with a large per-connection buffer. It reads a connection until it holds
 * --buffer bytes not yet echoed, then stops reading that connection
 * (backpressure) and resumes once the buffer drains. Memory per connection is
 * therefore bounded by --buffer, which may be far above 256 KiB.
 *
 *   bigbuf_echo [--port] PORT [--buffer BYTES] [--et] [--lazy-log PATH]
 *               [--pipe-pool] [--pipe-linger SECONDS]
 *
 *   --buffer N      bytes held per connection before it stops reading (default 1 MiB)
 *   --et            edge-triggered epoll (default: level-triggered)
 *   --lazy-log P    open log file P on the first connection, keep it open forever
 *                   (one fd that appears after start-up and never goes away)
 *   --pipe-pool     keep a pool of pipes (2 fds each): one per peak concurrent
 *                   connection, the surplus freed --pipe-linger seconds (default 3)
 *                   after connections drop, as Go's runtime does with its splice
 *                   pipes: non-client fds that come and go, late.
 *
 * Correctness points: EOF / half-close (echo everything, then shutdown(SHUT_WR)
 * and close: FIN, never RST), EPOLLHUP/EPOLLERR, EMFILE (stop accepting until a
 * connection closes or 100 ms pass, never spin), SIGPIPE ignored and
 * MSG_NOSIGNAL, SIGTERM/SIGINT via signalfd -> exit 0.
 * Bind 127.0.0.1. Build: cc -O2 -o bigbuf_echo bigbuf_echo.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MIN_CAP (64 * 1024)
#define MAX_EVENTS 64

struct conn {
    int fd;
    char *buf;          /* pending echo: buf[off .. off+len) */
    size_t cap, off, len;
    int eof;            /* peer sent FIN */
    int can_read, can_write; /* edge-triggered readiness hints */
    unsigned events;    /* level-triggered: current interest set */
};

static size_t max_buffer = 1 << 20;
static int edge = 0, pipe_pool_on = 0;
static const char *log_path = NULL;
static int log_fd = -1;
static double pipe_linger = 3.0;
static int ep, lfd, sfd;
static int accepting = 1;
static double accept_retry_at = 0; /* when paused after EMFILE */
static int active = 0;
static struct epoll_event listen_ev; /* EPOLLIN, plus EPOLLET with --et */

/* pipe pool: pipes[i][0..1], npipes of them */
static int (*pipes)[2] = NULL;
static int npipes = 0, pipes_cap = 0;
static double shrink_at = 0; /* 0: no shrink pending */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) { perror(what); exit(1); }

static void log_line(const char *fmt, int a) {
    if (!log_path) return;
    if (log_fd < 0) {
        log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd < 0) return; /* logging is best effort (EMFILE too) */
    }
    char line[128];
    int n = snprintf(line, sizeof line, fmt, a);
    if (write(log_fd, line, n) < 0) { /* ignore */ }
}

static void pool_grow(void) {
    if (!pipe_pool_on) return;
    while (npipes < active) {
        if (npipes == pipes_cap) {
            pipes_cap = pipes_cap ? pipes_cap * 2 : 8;
            pipes = realloc(pipes, pipes_cap * sizeof *pipes);
            if (!pipes) die("realloc");
        }
        if (pipe2(pipes[npipes], O_CLOEXEC | O_NONBLOCK) < 0) break; /* EMFILE: do without */
        npipes++;
    }
    if (npipes <= active) shrink_at = 0;
}

static void pool_changed(void) {
    if (pipe_pool_on && npipes > active && shrink_at == 0) shrink_at = now() + pipe_linger;
}

static void pool_shrink(void) {
    while (npipes > active) {
        npipes--;
        close(pipes[npipes][0]);
        close(pipes[npipes][1]);
    }
    shrink_at = 0;
}

static void set_interest(struct conn *c) {
    if (edge) return; /* registered once with everything */
    unsigned ev = 0;
    if (!c->eof && c->len < max_buffer) ev |= EPOLLIN;
    if (c->len > 0) ev |= EPOLLOUT;
    if (ev == c->events) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl mod");
    c->events = ev;
}

static void close_conn(struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    log_line("close %d\n", c->fd);
    free(c->buf);
    free(c);
    active--;
    pool_changed();
    if (!accepting) { /* a freed fd: try accepting again */
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &listen_ev);
        accepting = 1;
        accept_retry_at = 0;
    }
}

/* Make room for at least one more byte (the buffer grows on demand up to max_buffer). */
static size_t room(struct conn *c) {
    if (c->off > 0 && c->off + c->len == c->cap) {
        memmove(c->buf, c->buf + c->off, c->len);
        c->off = 0;
    }
    if (c->off + c->len == c->cap && c->cap < max_buffer) {
        size_t ncap = c->cap ? c->cap * 2 : MIN_CAP;
        if (ncap > max_buffer) ncap = max_buffer;
        char *nb = realloc(c->buf, ncap);
        if (!nb) return 0;
        c->buf = nb;
        c->cap = ncap;
    }
    size_t r = c->cap - (c->off + c->len);
    size_t allowed = max_buffer - c->len;
    return r < allowed ? r : allowed;
}

/* One read; returns -1 if the connection is gone, 0 on EAGAIN/no room, 1 on progress. */
static int do_read(struct conn *c) {
    size_t r = room(c);
    if (r == 0 || c->eof) return 0;
    ssize_t n = recv(c->fd, c->buf + c->off + c->len, r, 0);
    if (n > 0) { c->len += n; return 1; }
    if (n == 0) { c->eof = 1; return 1; }
    if (errno == EAGAIN || errno == EWOULDBLOCK) { c->can_read = 0; return 0; }
    if (errno == EINTR) return 1;
    return -1; /* ECONNRESET etc. */
}

static int do_write(struct conn *c) {
    if (c->len == 0) return 0;
    ssize_t n = send(c->fd, c->buf + c->off, c->len, MSG_NOSIGNAL);
    if (n > 0) {
        c->off += n;
        c->len -= n;
        if (c->len == 0) {
            c->off = 0;
            if (c->cap > MIN_CAP) { free(c->buf); c->buf = NULL; c->cap = 0; }
        }
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) { c->can_write = 0; return 0; }
    if (n < 0 && errno == EINTR) return 1;
    return -1; /* EPIPE, ECONNRESET */
}

static void handle(struct conn *c, unsigned ev) {
    /* EPOLLERR: reset. EPOLLHUP: both directions are shut (we only shut our side
     * right before close), so nothing more can be sent: either way, close. */
    if (ev & (EPOLLERR | EPOLLHUP)) { close_conn(c); return; }
    if (ev & EPOLLIN) c->can_read = 1;
    if (ev & EPOLLOUT) c->can_write = 1;
    if (edge) {
        /* Edge-triggered: work until both directions say EAGAIN (or nothing to do). */
        int progress = 1;
        while (progress) {
            progress = 0;
            if (c->can_write && c->len > 0) {
                int w = do_write(c);
                if (w < 0) { close_conn(c); return; }
                progress |= w;
            }
            if (c->can_read && !c->eof && c->len < max_buffer) {
                int r = do_read(c);
                if (r < 0) { close_conn(c); return; }
                progress |= r;
            }
        }
    } else {
        /* Level-triggered: one read and one write per event; epoll reports the rest. */
        if ((ev & EPOLLIN) && do_read(c) < 0) { close_conn(c); return; }
        if (c->len > 0 && (ev & EPOLLOUT || c->can_write)) {
            if (do_write(c) < 0) { close_conn(c); return; }
        }
    }
    if (c->eof && c->len == 0) {
        /* Everything echoed after the peer's FIN: our FIN, then close. */
        shutdown(c->fd, SHUT_WR);
        close_conn(c);
        return;
    }
    set_interest(c);
}

static void accept_all(void) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of fds: stop watching the listener (it would stay readable and
                 * make a level-triggered loop spin) until a connection closes. */
                epoll_ctl(ep, EPOLL_CTL_DEL, lfd, NULL);
                accepting = 0;
                accept_retry_at = now() + 0.1;
                return;
            }
            die("accept");
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) { close(fd); continue; }
        c->fd = fd;
        c->can_write = 1;
        c->events = edge ? (EPOLLIN | EPOLLOUT | EPOLLET) : EPOLLIN;
        struct epoll_event e = {.events = c->events, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) { close(fd); free(c); continue; }
        active++;
        log_line("accept %d\n", fd);
        pool_grow();
    }
}

static void usage(void) {
    fprintf(stderr, "usage: bigbuf_echo [--port] PORT [--buffer BYTES] [--et] "
                    "[--lazy-log PATH] [--pipe-pool] [--pipe-linger SECONDS]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int port = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(a, "--buffer") && i + 1 < argc) max_buffer = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(a, "--et")) edge = 1;
        else if (!strcmp(a, "--lt")) edge = 0;
        else if (!strcmp(a, "--lazy-log") && i + 1 < argc) log_path = argv[++i];
        else if (!strcmp(a, "--pipe-pool")) pipe_pool_on = 1;
        else if (!strcmp(a, "--pipe-linger") && i + 1 < argc) pipe_linger = atof(argv[++i]);
        else if (a[0] != '-' && port < 0) port = atoi(a);
        else usage();
    }
    if (port < 0 || max_buffer == 0) usage();

    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) die("sigprocmask");
    sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) die("signalfd");

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, 511) < 0) die("listen");
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    printf("LISTENING 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    listen_ev.events = edge ? EPOLLIN | EPOLLET : EPOLLIN;
    listen_ev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &listen_ev);
    struct epoll_event se = {.events = EPOLLIN, .data.ptr = &sfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &se);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        /* The only timers: the EMFILE retry and the pipe pool's shrink. */
        double due = 0;
        if (!accepting) due = accept_retry_at;
        if (shrink_at && (!due || shrink_at < due)) due = shrink_at;
        int timeout = -1;
        if (due) {
            double ms = (due - now()) * 1000;
            timeout = ms <= 0 ? 0 : (int)ms + 1;
        }
        int n = epoll_wait(ep, events, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            void *p = events[i].data.ptr;
            if (p == &sfd) return 0; /* SIGTERM / SIGINT: exit 0 */
            if (p == NULL) accept_all();
            else handle(p, events[i].events);
        }
        double t = now();
        if (!accepting && t >= accept_retry_at) {
            epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &listen_ev);
            accepting = 1;
            accept_retry_at = 0;
        }
        if (shrink_at && t >= shrink_at) pool_shrink();
    }
}
