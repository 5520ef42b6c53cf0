#!/bin/sh
# CORRECT (third-party): socat forking a `cat` per connection (Debian package socat).
#   socat_exec_cat.sh PORT   ==   socat TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr,fork EXEC:cat
exec socat "TCP-LISTEN:$1,bind=127.0.0.1,reuseaddr,fork" EXEC:cat
