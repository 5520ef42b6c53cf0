/* A small epoll echo server in C, the "someone else's repository" of tests/test_separate_project.py.
 *
 *     ./build/echo_server --port PORT [--host HOST]
 *
 * Level-triggered epoll, non-blocking sockets, one output buffer per
 * connection. It does what the harness checks:
 *   - partial send(): what the kernel did not take waits in the buffer, and
 *     EPOLLOUT is asked for only while something waits (no busy loop);
 *   - backpressure: past HIGH_WATER bytes waiting, it stops reading that
 *     client until the buffer drains (bounded memory, and a client that does
 *     not read holds up no one else);
 *   - EOF (the client's FIN or SHUT_WR): it sends what is left, then closes,
 *     which sends FIN; an error or a reset closes at once;
 *   - EMFILE on accept(): it stops listening until a connection closes,
 *     instead of spinning on a listener that stays readable.
 *
 * Built with -DECHO_BUG it has the commonest epoll bug: on EOF it removes the
 * connection from epoll and forgets it, never closing it (CLOSE_WAIT, an fd
 * leaked per connection, no FIN after a half-close).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FD 65536
#define CHUNK 65536
#define HIGH_WATER (256 * 1024)

struct conn {
    char *out;
    size_t len, cap;
    int eof;     /* the client will send no more */
    int reading; /* EPOLLIN is on */
};

static struct conn *conns[MAX_FD];
static int ep, listener, listening = 1;

static void watch(int fd, struct conn *c) {
    struct epoll_event ev = {.data.fd = fd};
    ev.events = (c->reading ? EPOLLIN : 0) | (c->len ? EPOLLOUT : 0);
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

static void set_listening(int on) {
    struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.fd = listener};
    if (on != listening) epoll_ctl(ep, EPOLL_CTL_MOD, listener, &ev);
    listening = on;
}

static void drop(int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd]->out);
    free(conns[fd]);
    conns[fd] = NULL;
    set_listening(1); /* an fd is free again */
}

static int flush_out(int fd, struct conn *c) {
    while (c->len) {
        ssize_t n = send(fd, c->out, c->len, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        memmove(c->out, c->out + n, c->len - n);
        c->len -= n;
    }
    return 0;
}

static void on_client(int fd, unsigned events) {
    struct conn *c = conns[fd];
    char buf[CHUNK];
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        while (c->reading && c->len < HIGH_WATER) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n > 0) {
                if (c->len + n > c->cap) {
                    c->cap = c->len + n;
                    c->out = realloc(c->out, c->cap);
                }
                memcpy(c->out + c->len, buf, n);
                c->len += n;
                if (flush_out(fd, c) < 0) { drop(fd); return; }
            } else if (n == 0) {
#ifdef ECHO_BUG
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                return;
#endif
                c->eof = 1;
                c->reading = 0;
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            } else {
                drop(fd);
                return;
            }
        }
    }
    if (flush_out(fd, c) < 0) { drop(fd); return; }
    if (c->eof && !c->len) { drop(fd); return; }
    c->reading = !c->eof && c->len < HIGH_WATER;
    watch(fd, c);
}

static void on_listener(void) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) set_listening(0);
            if (errno == ECONNABORTED || errno == EINTR) continue;
            return;
        }
        if (fd >= MAX_FD) { close(fd); continue; }
        struct conn *c = calloc(1, sizeof *c);
        c->reading = 1;
        conns[fd] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--host")) host = argv[i + 1];
    }
    if (port < 0) { fprintf(stderr, "usage: %s --port PORT [--host HOST]\n", argv[0]); return 2; }
    signal(SIGPIPE, SIG_IGN);
    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 ||
        bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, SOMAXCONN) < 0) {
        perror("echo_server: cannot listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) on_listener();
            else if (conns[fd]) on_client(fd, events[i].events);
        }
    }
}
