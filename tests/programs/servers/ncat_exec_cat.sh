#!/bin/sh
# CORRECT (third-party): ncat (Debian package ncat) keeping the listener open (-k)
# and running /bin/cat per connection with the socket as its stdin/stdout.
#   ncat_exec_cat.sh PORT   ==   ncat -l 127.0.0.1 PORT -k --exec /bin/cat
exec ncat -l 127.0.0.1 "$1" -k --exec /bin/cat
