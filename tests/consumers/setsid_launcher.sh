#!/bin/sh
# A launcher that starts the consumer it is given the way a daemonizing wrapper does: in a new
# session, its standard streams on /dev/null (as daemon(3) leaves them), then waits for it. The
# consumer leaves the launcher's process group and session, so a signal to the group misses it,
# and nothing ties it to the harness's pipes. Used by tests/harness_cleanup.rs and
# tests/harness_killed.rs.
setsid "$@" </dev/null >/dev/null 2>&1 &
wait $!
