"""epoll-harness: property-based protocol testing for epoll echo servers."""

__version__ = "0.1.0"
