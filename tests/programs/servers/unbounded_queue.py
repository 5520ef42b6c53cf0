"""BUGGY: a non-blocking selectors echo server that queues without limit.

    python unbounded_queue.py [--port] PORT

Shape: the common single-threaded event-loop echo server (selectors / epoll,
level-triggered). It is right about everything else: partial sends, EOF
(flush, then our FIN), resets, EMFILE.

Bug: it never stops reading. Every chunk received is appended to the
connection's output queue whether or not the client is reading its echo, so a
client that floods without reading grows the server's memory without bound
(no backpressure, no high-water mark). Property that must catch it:
bounded-memory. SIGTERM: exit 0.
"""

import selectors
import signal
import socket
import sys
import time

sel = selectors.DefaultSelector()


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()  # BUG: unbounded
        self.eof = False

    def update(self) -> None:
        events = 0 if self.eof else selectors.EVENT_READ  # BUG: reads even when self.out is huge
        if self.out:
            events |= selectors.EVENT_WRITE
        if events:
            sel.modify(self.sock, events, self)
        else:
            self.close()

    def close(self) -> None:
        sel.unregister(self.sock)
        self.sock.close()

    def on_event(self, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                data = self.sock.recv(65536)
                if data:
                    self.out += data
                else:
                    self.eof = True
            if self.out:
                try:
                    sent = self.sock.send(self.out)
                    del self.out[:sent]
                except BlockingIOError:
                    pass
            if self.eof and not self.out:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()  # reset by the peer
            return
        self.update()


def main() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(next(a for a in sys.argv[1:] if a != "--port"))))
    listener.listen(128)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"LISTENING 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    paused_until = 0.0
    while True:
        if paused_until and time.monotonic() >= paused_until:
            sel.register(listener, selectors.EVENT_READ, None)
            paused_until = 0.0
        for key, mask in sel.select(timeout=0.1 if paused_until else None):
            if key.data is None:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                except OSError:  # EMFILE: stop watching the listener for 100 ms
                    sel.unregister(listener)
                    paused_until = time.monotonic() + 0.1
                    continue
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, Conn(sock))
            else:
                key.data.on_event(mask)


if __name__ == "__main__":
    main()
