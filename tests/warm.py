"""A warm `python -m lstm_train` for the tests: one server process imports torch and lstm_train
once, then forks a fresh child for every CLI call.

Why: most CLI tests run `python -m lstm_train ...` as a user would, and each such process spent
~3 s of the suite's two cores importing torch, accelerate and lstm_train before doing a
fraction of a second of work (about 250 calls: the largest single cost of the suite).  A
forked child is still a separate process with its own pid, working directory, environment,
file descriptors, exit code, signal handlers and atexit teardown, so the behaviour under test
is the same; only the imports are shared (copy-on-write).  The server starts no thread and
runs no torch operation before forking (torch's OpenMP pool must not exist in a parent that
forks), and every child begins as `python -m lstm_train` begins: `sys.argv`, `sys.path[0]` the
working directory, the environment replaced, `PYTHONPATH` entries put first.

Not for calls where the process itself is under test (what a fresh interpreter imports, a
file in the working directory shadowing a module the server preloaded, an entry point installed
during the test, signals sent to a running process): `conftest.run_cli`
takes `fresh=True` for those, and routes any call whose environment changes what an
interpreter reads only at start-up (PYTHON* variables) to a real `python -m lstm_train`.
"""

from __future__ import annotations

import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_PATH: list[str] = []  # the interpreter's own sys.path (set by `serve`)
# What a child would otherwise import on its first run, measured (suite5): torch._dynamo is imported by
# the first optimizer any run builds (torch.optim's `_disable_dynamo` wrapper; it pulls in sympy and
# triton), matplotlib by the plots, confusion matrices and bench PNGs, torchvision by the tutorial
# loader, sacrebleu by the translator: 1.4-2.7 CPU-s in every forked `run` before, 0.1-0.7 s with them
# here (a 3-step MNIST run: 2.5 -> 0.08 CPU-s).  Only modules that start no thread, not even a native
# one (`serve` asserts it): pandas (pyarrow's pool) and seqeval (scikit-learn, scipy's OpenBLAS) each
# start one, and a pool's thread does not survive the fork (the child would hold a dead pool).
PRELOAD = ("torch", "numpy", "accelerate", "lstm_train.cli", "lstm_train.train", "lstm_train.tasks.registry",
           "lstm_train.data.store.prepared", "torch._dynamo", "matplotlib.pyplot", "torchvision", "sacrebleu",
           "tokenizers", "sentencepiece", "conllu")
FIRST_EXTRA = PRELOAD.index("torch._dynamo")  # the ones added for the first run (above)


# ---------------------------------------------------------------------------
# The server (runs in its own process: `python -c "import tests.warm; tests.warm.serve()"`)


def serve() -> None:
    """Read one JSON request per line on stdin; fork a child that runs it; answer its pid, then
    its exit code, one JSON line each on stdout."""
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    import importlib

    for name in PRELOAD[:FIRST_EXTRA]:
        importlib.import_module(name)
    native = len(os.listdir("/proc/self/task"))  # torch's own, as before the extras
    for name in PRELOAD[FIRST_EXTRA:]:
        importlib.import_module(name)
    assert len(os.listdir("/proc/self/task")) == native, "a preloaded module started a native thread"
    # The interpreter's own path, less what this server's start added (`-c`'s '' and the
    # PYTHONPATH that found tests.warm): each child puts its own in front, as its start would.
    own = {os.path.abspath(p) if p else os.getcwd() for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)}
    global BASE_PATH
    BASE_PATH = [p for p in sys.path[1:] if p not in own]
    import threading

    assert threading.active_count() == 1, "the warm server must not fork with threads running"
    replies.write(json.dumps({"ready": os.getpid()}) + "\n")
    replies.flush()
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            _child(request)  # never returns: ends the child's interpreter with its exit code
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


def _child(request: dict) -> None:
    os.setpgid(0, 0)  # its own process group: a timeout kills it and whatever it started
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY),
                            (2, request["err"], os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    pythonpath = request["env"].get("PYTHONPATH", "")
    # As `python -m` starts: the working directory, then PYTHONPATH's entries made absolute (an
    # empty entry is the working directory), then the interpreter's own.
    extra = [os.path.abspath(p) if p else os.getcwd() for p in pythonpath.split(os.pathsep)] if pythonpath else []
    sys.path[:] = [os.getcwd(), *extra, *BASE_PATH]
    sys.argv = [str(ROOT / "lstm_train" / "__main__.py"), *request["args"]]
    import io

    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding="utf-8",
                                  line_buffering=request["env"].get("PYTHONUNBUFFERED") == "1", write_through=False)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), encoding="utf-8", errors="backslashreplace",
                                  line_buffering=True)
    sys.stdin = open(os.devnull)
    code: object = 0
    try:
        runpy.run_module("lstm_train", run_name="__main__", alter_sys=True)  # ends with sys.exit(main())
    except SystemExit as e:
        code = e.code
    except BaseException:  # as the interpreter would: the traceback on stderr, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    # An interpreter's exit, less the teardown of every imported module (~0.5 s with torch
    # loaded, and nothing a user sees): atexit handlers, flushed streams, the exit code.
    import atexit
    import threading

    threading._shutdown()  # as at exit: wait for the threads that are not daemons
    atexit._run_exitfuncs()
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


# ---------------------------------------------------------------------------
# The client (in pytest)


class WarmServer:
    """One server per pytest process, started on first use and stopped at exit."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        proc = subprocess.Popen([sys.executable, "-c", "import tests.warm as w; w.serve()"], cwd=ROOT, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        first = proc.stdout.readline()
        if not first.startswith('{"ready"'):
            proc.kill()
            raise RuntimeError(f"the warm lstm_train server did not start: {first!r}")
        return proc

    def run(self, args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        with tempfile.TemporaryDirectory(prefix="warm-") as tmp:
            out, err = Path(tmp) / "out", Path(tmp) / "err"
            out.touch()
            err.touch()
            request = {"args": list(args), "env": env, "cwd": str(cwd), "out": str(out), "err": str(err)}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            pid = json.loads(self.proc.stdout.readline())["pid"]
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
                if ready:
                    rc = json.loads(self.proc.stdout.readline())["rc"]
                    break
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.stdout.readline()
                raise subprocess.TimeoutExpired([sys.executable, "-m", "lstm_train", *args], timeout,
                                                out.read_bytes(), err.read_bytes())
            return subprocess.CompletedProcess([sys.executable, "-m", "lstm_train", *args], rc,
                                               out.read_text(errors="replace"), err.read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


SERVER = WarmServer()
