#!/usr/bin/env python3
# Usage: python3 eng/ctrl-c.py SECONDS COMMAND...  (e.g. to check that ./build.sh bench cluster tears down on Ctrl-C)
# Runs a command on a pseudo-terminal and types Ctrl-C after a delay, as a user at a terminal would.
import os, pty, sys, time, select
delay = float(sys.argv[1]); cmd = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    # A terminal's shell starts commands with SIGINT at its default; this script may itself have been
    # started with SIGINT ignored (a background job), which children would inherit.
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL); signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    os.execvp(cmd[0], cmd)
start = time.time(); sent = False; out = b""
while True:
    if not sent and time.time() - start > delay:
        os.write(fd, b"\x03"); sent = True
    r, _, _ = select.select([fd], [], [], 0.5)
    if r:
        try: data = os.read(fd, 4096)
        except OSError: break
        if not data: break
        out += data
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace")[-1500:])
print(f"\n[exit status {os.waitstatus_to_exitcode(status)}]")
