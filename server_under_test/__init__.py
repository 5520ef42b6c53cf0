"""Servers that epoll-harness is pointed at: the reference server, the seed's
server (a faithful port of the tutorial's buggy one) and single-bug mutants."""
