"""A CORRECT Twisted echo server: Twisted's ``Echo`` protocol (docs "Writing
Servers" / examples/simpleserv.py) on the default (epoll) reactor.

    python twisted_echo.py [--port] PORT

``dataReceived`` -> ``transport.write(data)``, as in the docs, plus the two
things the docs' 4-line example leaves out and a real server needs:

* backpressure: ``transport.registerProducer(transport, streaming=True)`` makes
  the transport its own producer, so Twisted stops reading the connection while
  its write buffer is full (the idiom of twisted.protocols.portforward); without
  it Twisted buffers without limit for a client that does not read;
* half-close: implementing ``IHalfCloseableProtocol`` so the peer's FIN calls
  ``readConnectionLost`` -> ``loseConnection()`` (flush the pending echo, then
  our FIN); without it Twisted drops the connection, and its unsent echo, at once.

SIGTERM: the reactor stops and the process exits 0.
"""

import sys

from twisted.internet import interfaces, protocol, reactor
from zope.interface import implementer


@implementer(interfaces.IHalfCloseableProtocol)
class Echo(protocol.Protocol):
    def connectionMade(self) -> None:
        self.transport.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class EchoFactory(protocol.Factory):
    def buildProtocol(self, addr: object) -> Echo:
        return Echo()


def main() -> None:
    port = int(next(a for a in sys.argv[1:] if a != "--port"))
    reactor.listenTCP(port, EchoFactory(), interface="127.0.0.1")
    # Twisted's own SIGTERM handler stops the reactor; run() then returns: exit 0.
    reactor.callWhenRunning(lambda: print(f"LISTENING 127.0.0.1:{port}", flush=True))
    reactor.run()


if __name__ == "__main__":
    main()
