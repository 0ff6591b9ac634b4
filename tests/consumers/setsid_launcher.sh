#!/bin/sh
# A launcher that starts the consumer it is given in a new session, as daemonizing wrappers and
# some container clients do, then waits for it. The consumer leaves the launcher's process
# group (and session), so a signal to the group misses it. Used by tests/harness_cleanup.rs and
# tests/harness_killed.rs.
setsid "$@" &
wait $!
