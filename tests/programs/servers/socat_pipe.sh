#!/bin/sh
# CORRECT (third-party): socat forking per connection, echoing through an unnamed pipe (Debian socat).
#   socat_pipe.sh PORT   ==   socat TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr,fork PIPE
exec socat "TCP-LISTEN:$1,bind=127.0.0.1,reuseaddr,fork" PIPE
