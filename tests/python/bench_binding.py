"""bench_binding: what a call through the Python binding costs (ns per call).

    OBSD_LIBRARY=build/src/libobsd.so python3 tests/python/bench_binding.py [BUILD_DIR]

Starts its own obsd (BUILD_DIR/src/daemon/obsd, default: the build dir of the
libobsd.so loaded) on a private segment and store, and prints one JSON object
per measurement: the best of 7 rounds of N calls, in ns per call, next to two
baselines measured in the same run (an empty Python function call, and a
ctypes call without arguments, obsd.now()). Not a ctest suite: the figures go
to README's "From Python".
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bindings", "python"))
import obsd  # noqa: E402

N = 100000
ROUNDS = 7


def ns_per_call(stmt, g, n=N):
    return min(timeit.repeat(stmt, globals=g, number=n, repeat=ROUNDS)) / n * 1e9


def report(what, ns, base):
    print(json.dumps({"bench": "python_binding", "what": what, "ns_per_call": round(ns, 1),
                      "empty_python_call_ns": round(base["py"], 1),
                      "ctypes_noarg_call_ns": round(base["now"], 1)}))


def main():
    lib = obsd.load_library()
    build = sys.argv[1] if len(sys.argv) > 1 else None
    if build is None:
        path = lib._name
        build = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    name = "pybench-%d" % os.getpid()
    store = tempfile.mkdtemp(prefix="obsd-pybench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSD_")}
    daemon = subprocess.Popen([os.path.join(build, "src", "daemon", "obsd"), "--foreground",
                               "--name", name, "--store", store,
                               "--set", "exit_after_run=true"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        for _ in range(300):
            if os.path.exists("/dev/shm/obsd." + name):
                break
            time.sleep(0.02)
        run(name)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait()
        shutil.rmtree(store, ignore_errors=True)
        try:
            os.unlink("/dev/shm/obsd." + name)   # segments outlive their collector
        except FileNotFoundError:
            pass


def run(name):
    def empty():
        pass

    g = {"empty": empty, "obsd": obsd}
    base = {"py": ns_per_call("empty()", g), "now": ns_per_call("obsd.now()", g)}
    g["time"] = time
    report("time.monotonic_ns()", ns_per_call("time.monotonic_ns()", g), base)

    with obsd.Obsd(name) as h:
        h.session("started")
        b = h.budget(1 << 62, namespace="bench")
        op = obsd.budget_op("matmul")
        g.update(b=b, op=op)
        report("budget charge(op_id, cost)", ns_per_call("b.charge(op, 1)", g), base)
        report("budget charge('name', cost)", ns_per_call("b.charge('matmul', 1)", g), base)
        report("budget with dispatch(op): outermost span",
               ns_per_call("with b.dispatch(op): pass", g), base)
        b.dispatch_begin(op)
        report("budget with dispatch(op): nested span",
               ns_per_call("with b.dispatch(op): pass", g), base)
        b.dispatch_end()
        report("budget dispatch_begin(op) + dispatch_end()",
               ns_per_call("b.dispatch_begin(op); b.dispatch_end()", g), base)
        report("budget with kernel(op)", ns_per_call("with b.kernel(op): pass", g), base)
        report("budget with namespace('seg')",
               ns_per_call("with b.namespace('seg'): pass", g), base)
        report("budget status() (2 op rows)", ns_per_call("b.status()", g, N // 10), base)
        report("budget_op('matmul') (cached)", ns_per_call("obsd.budget_op('matmul')", g), base)
        report("flops_matmul(64, 64, 64, 'float32')",
               ns_per_call("obsd.flops_matmul(64, 64, 64, 'float32')", g), base)
        b.close()
        report("budget open + close (no rows)",
               ns_per_call("h.budget(1000).close()", dict(g, h=h), N // 10), base)

        w = h.sched_worker()
        q = h.sched_queue("bench.q")
        g.update(w=w, q=q)
        report("sched inc('popped_local')", ns_per_call("w.inc('popped_local')", g), base)
        report("sched add(SCHED_POPPED_LOCAL, 3)",
               ns_per_call("w.add(obsd.SCHED_POPPED_LOCAL, 3)", g), base)
        report("sched steal(True, now_ns)", ns_per_call("w.steal(True, 1)", g), base)
        report("sched steal(True) (reads the clock)", ns_per_call("w.steal(True)", g), base)
        report("sched completed(now_ns)", ns_per_call("w.completed(1)", g), base)
        report("sched add_shared('pushed_remote', 1)",
               ns_per_call("w.add_shared('pushed_remote', 1)", g), base)
        report("sched queue pushed()", ns_per_call("q.pushed()", g), base)
        report("sched queue pushed(cas_retries=2)", ns_per_call("q.pushed(2)", g), base)
        saved = obsd.SCHED_DIRECT_STORES
        obsd.SCHED_DIRECT_STORES = False   # the libatomic store path of other architectures
        try:
            wa = h.sched_worker()
        finally:
            obsd.SCHED_DIRECT_STORES = saved
        g["wa"] = wa
        report("sched inc('popped_local'), libatomic stores",
               ns_per_call("wa.inc('popped_local')", g), base)
        report("sched completed(now_ns), libatomic stores",
               ns_per_call("wa.completed(1)", g), base)
        h.session("ended")


if __name__ == "__main__":
    main()
