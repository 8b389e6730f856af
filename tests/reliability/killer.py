"""Run the deftrec CLI and send this process a signal right after the N-th call of a hook.

python killer.py MODULE:ATTR[.METHOD] N SIGNAL deftrec-args...   (SIGNAL: SIGKILL | SIGINT | SIGTERM)"""

import importlib
import os
import signal
import sys


def main() -> None:
    hook, count, signal_name, *cli_args = sys.argv[1:]
    # as in a terminal: a job started in the background of a script inherits SIGINT ignored, Ctrl-C does not
    signal.signal(signal.SIGINT, signal.default_int_handler)
    module_name, path = hook.split(":")
    owner = importlib.import_module(module_name)
    *parents, attr = path.split(".")
    for name in parents:
        owner = getattr(owner, name)
    real = getattr(owner, attr)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == int(count):
            os.kill(os.getpid(), getattr(signal, signal_name))
        return out

    setattr(owner, attr, wrapped)
    from deftrec_tui.cli import app
    sys.argv = ["deftrec", *cli_args]
    app()


if __name__ == "__main__":
    main()
