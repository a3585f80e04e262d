"""test_budget_sched: FLOP budgets and scheduler counters from Python.

Through a real obsd: budget contexts written with the binding (charges, a
refusal, nested dispatch spans, a participant-only sleep, namespaces, a
wall-time limit) must read back from `obsctl budget --json` and `obsctl show
--json` with exactly the numbers the test expects; worker and queue counter
blocks bumped from Python threads with known increments must give, in the
final snapshot's sched section, exactly the deltas and derived metrics
(steal_yield, idle_ratio, enq_retry_ratio, fairness CV and Gini, throughput
over the window) that the test computes itself from the documented
definitions. Without a daemon: the cost helpers' pinned values, accounting-only
contexts and the misuse errors.
"""
import math
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DaemonTestCase, metric  # noqa: E402
import obsd  # noqa: E402


def by_namespace(doc, ns):
    hits = [c for c in doc["contexts"] if c["namespace"] == ns]
    if len(hits) != 1:
        raise AssertionError("%d contexts with namespace %s in %s"
                             % (len(hits), ns, [c["namespace"] for c in doc["contexts"]]))
    return hits[0]


class BudgetTest(DaemonTestCase):
    def test_budget_round_trip(self):
        self.start_daemon()
        h = obsd.Obsd(self.name)
        self.addCleanup(h.close)
        h.session("started")

        # 1. Exact: the caller's timestamps (the _at variants), so every
        #    figure is known in advance.
        t0 = obsd.now()
        b = h.budget(10_000, namespace="py.exact", now_ns=t0)
        with self.assertRaises(obsd.ObsdError) as cm:   # one context per thread
            h.budget(5)
        self.assertEqual(cm.exception.status, obsd.OBSD_ESTATE)
        mm = obsd.flops_matmul(8, 8, 8, "float32")
        self.assertEqual(mm, 960)
        b.dispatch_begin("matmul", now_ns=t0 + 1000)        # outer framework span
        b.charge("matmul", mm, now_ns=t0 + 1100)
        b.kernel_begin("matmul", now_ns=t0 + 1200)
        b.kernel_end(now_ns=t0 + 1500)                      # kernel 300 ns
        b.dispatch_begin("tolist", now_ns=t0 + 1600)        # nested: counted once
        b.dispatch_end(now_ns=t0 + 1900)
        b.dispatch_end(now_ns=t0 + 2000)                    # dispatch 1000 ns, not 1300
        with b.namespace("layer1") as label:
            self.assertEqual(label, "py.exact.layer1")
            self.assertEqual(b.current_namespace, "py.exact.layer1")
            b.charge("sum", obsd.flops_reduce(1000, "int32"))   # 1998
        self.assertEqual(b.current_namespace, "py.exact")
        before = b.status()
        with self.assertRaises(obsd.BudgetExhausted) as cm:
            b.charge("fft", obsd.flops_fft(1024, "float32"))    # 51200 > 7042 left
        e = cm.exception
        self.assertEqual((e.op, e.flop_cost, e.flops_remaining, e.status),
                         ("fft", 51200, 10_000 - 960 - 1998, obsd.OBSD_EBUDGET))
        self.assertIn("fft", str(e))
        after = b.status()                                   # the refusal charged nothing
        self.assertEqual(after.flops_used, before.flops_used)
        self.assertEqual(after.operations, before.operations)
        self.assertNotIn("fft", after.operations)
        self.assertTrue(after.exhausted)
        self.assertTrue(after.open)
        b.dispatch_begin(participant=True, now_ns=t0 + 3000)    # participant: adds nothing
        b.dispatch_end(now_ns=t0 + 5000)
        s = b.close(now_ns=t0 + 10_000)
        self.assertIs(b.summary, s)
        self.assertIs(b.close(), s)
        expect = dict(ns="py.exact", flop_budget=10_000, flops_used=2958, flops_remaining=7042,
                      exhausted=True, wall_exceeded=False, open=False, refused_charges=1,
                      participant_spans=1, wall_ns=10_000, dispatch_ns=1000, backend_ns=300,
                      overhead_ns=700, residual_ns=9000, n_ops=2, n_namespaces=2)
        self.assertEqual({k: getattr(s, k) for k in expect}, expect)
        self.assertEqual(s.operations, {
            "matmul": obsd.OpSummary("matmul", 960, 1, 300, 700),
            "sum": obsd.OpSummary("sum", 1998, 1, 0, 0)})
        self.assertEqual(list(s.by_namespace), ["py.exact", "py.exact.layer1"])
        self.assertEqual(s.by_namespace["py.exact.layer1"].flop_cost, 1998)
        with self.assertRaises(obsd.ObsdError):
            b.charge("matmul", 1)                           # closed

        # 2. Real clocks, through the context managers.
        with h.budget(10**9, namespace="py.cm") as c:
            t_a = obsd.now()
            with c.dispatch("tolist"):
                with c.dispatch("tolist"):                  # nested: counted once
                    time.sleep(0.05)
            outer_ns = obsd.now() - t_a
            with c.dispatch(participant=True):              # the participant's own sleep
                time.sleep(0.2)
            with c.dispatch("matmul"):
                c.charge(obsd.budget_op("matmul"), 100)     # by id
                with c.kernel("matmul"):
                    sum(range(10000))
            with self.assertRaises(obsd.BudgetExhausted):
                c.charge("matmul", 10**9)
            with self.assertRaises(KeyError):
                with c.dispatch("tolist"):
                    raise KeyError("the span still ends")
            with self.assertRaises(obsd.ObsdError):         # so no span is open now
                c.dispatch_end()
            self.assertTrue(c.flush())
        cs = c.summary
        tolist = cs.operations["tolist"].overhead_ns
        self.assertGreaterEqual(tolist, 50_000_000)
        self.assertLess(tolist, outer_ns + 5_000_000)    # twice the sleep if counted twice
        self.assertGreaterEqual(cs.residual_ns, 200_000_000)
        self.assertEqual(cs.participant_spans, 1)
        self.assertEqual((cs.flops_used, cs.refused_charges), (100, 1))
        self.assertEqual(cs.wall_ns, cs.backend_ns + cs.overhead_ns + cs.residual_ns)

        # 3. A wall-time limit (1 ms), checked at the charge.
        t1 = obsd.now()
        w = h.budget(1000, wall_time_limit_s=0.001, namespace="py.wall", now_ns=t1)
        w.charge("matmul", 5, now_ns=t1 + 500_000)
        with self.assertRaises(obsd.WallTimeExceeded) as cm:
            w.charge("matmul", 5, now_ns=t1 + 2_000_000)
        e = cm.exception
        self.assertEqual((e.op, e.flop_cost, e.flops_remaining, e.wall_ns, e.wall_limit_ns),
                         ("matmul", 5, 995, 2_000_000, 1_000_000))
        ws = w.close(now_ns=t1 + 3_000_000)
        self.assertTrue(ws.wall_exceeded)

        # 4. Another thread has a context of its own; this thread's object
        #    refuses to be used from there, and the handle refuses to close
        #    under the other thread's open context.
        err = []
        m = h.budget(100, namespace="py.main")
        opened, may_close = threading.Event(), threading.Event()

        def other():
            try:
                with self.assertRaises(obsd.ObsdError) as cm:
                    m.charge("matmul", 1)
                self.assertIn("thread", str(cm.exception))
                with h.budget(777, namespace="py.thread") as t:
                    t.charge("sum", 7)
                    opened.set()
                    may_close.wait(30)
            except BaseException as ex:  # reported by the main thread
                err.append(ex)
            finally:
                opened.set()

        th = threading.Thread(target=other)
        th.start()
        opened.wait(30)
        with self.assertRaises(obsd.ObsdError):
            h.close()
        may_close.set()
        th.join()
        self.assertEqual(err, [])
        m.charge("matmul", 3)
        self.assertEqual(m.close().flops_used, 3)
        h.session("ended")
        h.close()
        self.wait_daemon()

        doc = self.obsctl("budget", "--json")
        ex = by_namespace(doc, "py.exact")
        self.assertEqual((ex["flop_budget"], ex["flops_used"], ex["flops_remaining"],
                          ex["exhausted"]), (10_000, 2958, 7042, True))
        self.assertEqual((ex["wall_s"], ex["backend_s"], ex["overhead_s"], ex["residual_s"]),
                         (10_000 / 1e9, 300 / 1e9, 700 / 1e9, 9000 / 1e9))
        self.assertEqual(ex["operations"], {
            "matmul": {"flop_cost": 960, "calls": 1, "backend_s": 300 / 1e9,
                       "overhead_s": 700 / 1e9},
            "sum": {"flop_cost": 1998, "calls": 1, "backend_s": 0.0, "overhead_s": 0.0}})
        self.assertEqual(ex["by_namespace"]["py.exact.layer1"]["flops_used"], 1998)
        self.assertEqual(set(ex["by_namespace"]), {"py.exact", "py.exact.layer1"})
        cm_ctx = by_namespace(doc, "py.cm")
        for key, ns in (("wall_s", cs.wall_ns), ("backend_s", cs.backend_ns),
                        ("overhead_s", cs.overhead_ns), ("residual_s", cs.residual_ns)):
            self.assertEqual(cm_ctx[key], ns / 1e9, key)   # the collector's split is the producer's
        self.assertEqual(cm_ctx["operations"]["matmul"]["calls"], 1)
        self.assertEqual(by_namespace(doc, "py.thread")["flops_used"], 7)
        self.assertEqual(by_namespace(doc, "py.main")["flops_used"], 3)
        self.assertEqual(doc["session"]["contexts"], 5)

        snap = self.obsctl("show", "--final", "--json")
        full = {c["namespace"]: c for c in snap["budget"]["contexts"]}
        ex = full["py.exact"]
        self.assertEqual((ex["refused_charges"], ex["participant_spans"], ex["dispatch_s"],
                          ex["open"]), (1, 1, 1000 / 1e9, False))
        self.assertEqual(full["py.cm"]["participant_spans"], 1)
        self.assertEqual((full["py.wall"]["wall_exceeded"], full["py.wall"]["wall_time_limit_s"]),
                         (True, 0.001))


class BudgetLocalTest(unittest.TestCase):
    """No daemon needed: accounting-only contexts, cost helpers, misuse."""

    def test_cost_helpers_pinned_values(self):
        f = obsd
        self.assertEqual([f.flops_matmul(8, 8, 8, d) for d in
                          ("float32", "float64", "complex64", "complex128")],
                         [960, 1920, 3968, 7936])
        self.assertEqual([f.flops_elementwise("multiply", 100, d) for d in
                          ("float32", "float64", "complex64", "complex128")],
                         [100, 200, 600, 1200])
        self.assertEqual(f.flops_elementwise("transcendental", 100, "float32"), 1600)
        self.assertEqual((f.flops_fft(1024, "float32"), f.flops_fft(1024, "int32")),
                         (51200, 102400))
        self.assertEqual(f.flops_reduce(1000, "int32"), 1998)
        self.assertEqual(f.flops_matmul(8, 8, 8, float), 1920)      # Python float: float64
        with self.assertRaises(ValueError):
            f.flops_matmul(8, 8, 8, "float128")
        with self.assertRaises(ValueError):
            f.flops_matmul(-1, 8, 8, "float32")
        with self.assertRaises(ValueError):
            f.flops_elementwise("gcd", 8, "int32")

    def test_accounting_only_and_misuse(self):
        self.assertFalse(obsd.budget_is_open())
        with obsd.BudgetContext(None, 2e3, namespace="local") as b:
            self.assertTrue(obsd.budget_is_open())
            self.assertEqual(obsd.budget_op("matmul"), obsd.budget_op("matmul"))
            self.assertEqual(obsd.budget_op_name(obsd.budget_op("matmul")), "matmul")
            b.charge("matmul", 2000)
            with self.assertRaises(obsd.BudgetExhausted) as cm:
                b.charge("matmul", 1)
            self.assertEqual(cm.exception.flops_remaining, 0)
            with self.assertRaises(ValueError):
                b.charge("matmul", -1)
            with self.assertRaises(ObsdErrorOrValue):
                b.charge("bad name!", 1)
            with self.assertRaises(obsd.ObsdError):
                b.namespace_push("a.b")                 # a segment has no dot
            with self.assertRaises(obsd.ObsdError):
                b.namespace_pop()                       # nothing pushed
            self.assertTrue(b.flush())                  # no handle: nothing to send
        self.assertFalse(obsd.budget_is_open())
        self.assertEqual((b.summary.flops_used, b.summary.refused_charges), (2000, 1))
        for bad in (0, -5, 1.5, 2 ** 64):
            with self.assertRaises(ValueError):
                obsd.BudgetContext(None, bad)
        with self.assertRaises(obsd.ObsdError):
            obsd.BudgetContext(None, 10, namespace="bad..label")
        self.assertFalse(obsd.budget_is_open())


ObsdErrorOrValue = (obsd.ObsdError, ValueError)


# ---- scheduler counters

# Measured-phase script per worker: counter increments, steals (got?), and
# completions; warmup and post-stop work are added on top and must not show.
SCRIPT = {
    0: dict(add={"popped_local": 10, "pushed_local": 7, "dispatched_to_pending": 3,
                 "parked": 2, "batch_resets": 1, "enqueue_cas_retries": 2,
                 "dequeue_cas_retries": 1, "fairness_arm_fires": 1},
            steals=[True, False, False, False], completions=11),
    1: dict(add={"popped_local": 5, "pushed_local": 2},
            steals=[True, True, False, True, False, True], completions=9),
    2: dict(add={"parked": 4}, steals=[False, False], completions=1),
}
SHARED_PER_THREAD = 50000   # pushed_remote on worker 2, from two threads at once
QUEUE_PUSHES, QUEUE_POPS = 30000, 2000
# offsets in struct obsd_sched_block (obsd_sched.h)
OFF_PUSHED_REMOTE = 64 + 8 * obsd.SCHED_PUSHED_REMOTE
OFF_QUEUE_PUSHED = 64 + 48

# The foreign writer: another process (so not under this one's GIL, truly in
# parallel, as a C thread or a sub-interpreter would be) maps the segment and
# bumps fields with libatomic's relaxed fetch-add, the header's own
# instruction. A binding that updated shared fields with a load and a store
# would lose some of these increments.
# It runs from before the binding's writers start until after they end (so
# they always overlap), stops on SIGUSR1 and prints how many rounds it did.
FOREIGN_WRITER = r"""
import ctypes, mmap, signal, sys
path, offsets = sys.argv[1], [int(x) for x in sys.argv[2:]]
with open(path, "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
base = ctypes.addressof((ctypes.c_char * len(m)).from_buffer(m))
fa = getattr(ctypes.CDLL("libatomic.so.1"), "__atomic_fetch_add_8")
fa.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]
addrs = [base + o for o in offsets]
stop = []
signal.signal(signal.SIGUSR1, lambda *a: stop.append(1))
rounds = 0
while not stop:
    for a in addrs:
        fa(a, 1, 0)
    rounds += 1
    if rounds == 1000:
        print("running", flush=True)
print(rounds, flush=True)
"""


def segment_offset(shm_path, addr):
    """addr's offset in this process's mapping of shm_path (/proc/self/maps)."""
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(shm_path):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                if lo <= addr < hi:
                    return addr - lo
    raise AssertionError("%#x is not in a mapping of %s" % (addr, shm_path))


class SchedTest(DaemonTestCase):
    def wait_phase(self, phase):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snap = self.obsctl("show", "--json", check=False)
            if snap and snap.get("sched", {}).get("phase") == phase:
                return snap
            time.sleep(0.02)
        self.fail("the sched section never reached phase %s" % phase)

    def test_sched_round_trip(self):
        self.start_daemon("publish_interval_ms=20")
        h = obsd.Obsd(self.name)
        self.addCleanup(h.close)
        h.session("started")
        go_measure, go_post = threading.Event(), threading.Event()
        claimed = threading.Barrier(4)
        warm_done = threading.Barrier(4)
        measured_done = threading.Barrier(4)
        blocks, stamps, errors = {}, {}, []
        q = h.sched_queue("py.q")

        atomic_claimed = threading.Event()

        def worker(i):
            try:
                if i == 2:   # the libatomic store path, as on other architectures
                    obsd.SCHED_DIRECT_STORES = False
                    try:
                        w = h.sched_worker(i)
                    finally:
                        obsd.SCHED_DIRECT_STORES = True
                        atomic_claimed.set()
                    self.assertIsInstance(w, obsd._AtomicSchedWorker)
                else:
                    atomic_claimed.wait()
                    w = h.sched_worker(i)
                    self.assertNotIsInstance(w, obsd._AtomicSchedWorker)
                blocks[i] = w
                claimed.wait()
                # warmup: counted before TRACKING_START, must not show
                w.add("popped_local", 100 + i)
                w.steal(True)
                w.completed(obsd.now())
                w.completed()
                warm_done.wait()
                go_measure.wait()
                sc = SCRIPT[i]
                for name, n in sc["add"].items():
                    if n % 2:
                        for _ in range(n):
                            w.inc(name)
                    else:
                        w.add(obsd.SCHED_COUNTERS.index(name), n)
                last_steal = last_done = None
                for got in sc["steals"]:
                    last_steal = obsd.now()
                    w.steal(got, last_steal)
                for _ in range(sc["completions"]):
                    last_done = obsd.now()
                    w.completed(last_done)
                if i == 2:
                    for _ in range(SHARED_PER_THREAD):
                        w.add_shared("pushed_remote")
                for k in range(QUEUE_PUSHES // 3):
                    q.pushed(1 if k % 10 == 0 else 0)
                for k in range(QUEUE_POPS // 2 if i < 2 else 0):
                    q.popped(2 if k % 50 == 0 else 0)
                stamps[i] = (last_steal, last_done, w.counters())
                measured_done.wait()
                go_post.wait()
                w.add("popped_local", 1000)        # after TRACKING_STOP: must not show
                w.completed(obsd.now())
            except BaseException as e:  # reported by the main thread
                errors.append((i, e))
                for bar in (claimed, warm_done, measured_done):
                    bar.abort()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        try:
            claimed.wait()
            warm_done.wait()
            t_track = obsd.now()
            h.session("tracking_start")
            self.wait_phase("tracking")          # the collector took its baseline
            t_go = obsd.now()
            fw = subprocess.Popen(
                [sys.executable, "-c", FOREIGN_WRITER, self.shm,
                 str(segment_offset(self.shm, blocks[2].address + OFF_PUSHED_REMOTE)),
                 str(segment_offset(self.shm, q.address + OFF_QUEUE_PUSHED))],
                stdout=subprocess.PIPE)
            self.addCleanup(fw.wait)
            self.addCleanup(fw.kill)
            self.assertEqual(fw.stdout.readline(), b"running\n")
            go_measure.set()
            for _ in range(SHARED_PER_THREAD):   # concurrently with worker 2's own
                blocks[2].add_shared("pushed_remote", 1)
            measured_done.wait()
            fw.send_signal(signal.SIGUSR1)
            foreign = int(fw.stdout.readline())
            self.assertEqual(fw.wait(timeout=60), 0)
        except threading.BrokenBarrierError:
            pass
        finally:
            go_measure.set()
        if not errors:
            h.session("tracking_stop")
            self.wait_phase("done")
        go_post.set()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        h.session("ended")
        h.close()
        with self.assertRaises(obsd.ObsdError):     # closing the handle released it
            blocks[0].inc("popped_local")
        self.wait_daemon()

        snap = self.obsctl("show", "--final", "--json")
        sec = snap["sched"]
        self.assertEqual((sec["baseline"], sec["phase"]), ("tracking_start", "done"))
        workers = {w["worker_index"]: w for w in sec["workers"]}
        self.assertEqual(sorted(workers), [0, 1, 2])
        pops, completed, steals, attempts, failures = [], 0, 0, 0, 0
        for i, sc in SCRIPT.items():
            got = workers[i]
            want = {c: sc["add"].get(c, 0) for c in obsd.SCHED_COUNTERS}
            want["steal_attempts"] = len(sc["steals"])
            want["popped_via_steal"] = sum(sc["steals"])
            want["steal_failures"] = len(sc["steals"]) - sum(sc["steals"])
            if i == 2:
                want["pushed_remote"] = 2 * SHARED_PER_THREAD + foreign
            want["behaviors_completed"] = sc["completions"]
            self.assertEqual({k: got[k] for k in want}, want, "worker %d" % i)
            last_steal, last_done, live = stamps[i]
            self.assertEqual(got["last_steal_attempt_ns"], last_steal)
            self.assertEqual(live["last_steal_attempt_ns"], last_steal)
            if last_done is not None:
                self.assertEqual(got["last_completion_ns"], last_done)
            # first completion time: the run's first (in the warmup), set once
            self.assertEqual(got["first_completion_ns"], live["first_completion_ns"])
            self.assertLess(got["first_completion_ns"], t_track)
            self.assertFalse(got["torn"])
            pops.append(want["popped_local"] + want["popped_via_steal"])
            completed += want["behaviors_completed"]
            steals += want["popped_via_steal"]
            attempts += want["steal_attempts"]
            failures += want["steal_failures"]
        queue = [x for x in sec["queues"] if x["tag"] == "py.q"]
        self.assertEqual(len(queue), 1)
        self.assertEqual({k: queue[0][k] for k in ("pushed_total", "popped_total",
                                                   "enqueue_cas_retries",
                                                   "dequeue_cas_retries")},
                         {"pushed_total": QUEUE_PUSHES + foreign, "popped_total": QUEUE_POPS,
                          "enqueue_cas_retries": 3 * (QUEUE_PUSHES // 3 // 10),
                          "dequeue_cas_retries": 2 * 2 * (QUEUE_POPS // 2 // 50)})

        # The derived metrics, computed here from their definitions.
        d = sec["derived"]
        self.assertEqual((d["workers"], d["behaviors_completed"], d["steals"],
                          d["steal_attempts"], d["steal_failures"]),
                         (3, completed, steals, attempts, failures))
        self.assertEqual(d["steal_yield"], steals / completed)
        self.assertEqual(d["idle_ratio"], failures / attempts)
        pushes = [SCRIPT[i]["add"].get("pushed_local", 0)
                  + SCRIPT[i]["add"].get("dispatched_to_pending", 0) for i in range(3)]
        producer = pushes.index(max(pushes))
        self.assertEqual(d["producer_worker_index"], producer)
        self.assertEqual(d["enq_retry_ratio"],
                         SCRIPT[producer]["add"]["enqueue_cas_retries"] / pushes[producer])
        n = len(pops)
        mean = sum(pops) / n
        cv = math.sqrt(sum((p - mean) * (p - mean) for p in pops) / n) / mean
        ranked = sorted(pops)
        gini = (2.0 * sum((k + 1) * v for k, v in enumerate(ranked)) / (n * sum(ranked))
                - (n + 1) / n)
        self.assertEqual(d["fairness_cv"], cv)
        self.assertEqual(d["fairness_gini"], gini)
        self.assertEqual((d["worker_pop_min"], d["worker_pop_max"]), (min(pops), max(pops)))
        # Every worker finished before the end read: the window closes at
        # the last completion; it opened at the collector's baseline read.
        last = max(s[1] for s in stamps.values() if s[1] is not None)
        self.assertEqual(sec["window_end_ns"], last)
        self.assertTrue(t_track <= sec["window_start_ns"] <= t_go,
                        (t_track, sec["window_start_ns"], t_go))
        window_ns = sec["window_end_ns"] - sec["window_start_ns"]
        self.assertEqual(d["window_ns"], window_ns)
        self.assertEqual(d["throughput"], completed / (window_ns / 1e9))
        self.assertEqual(metric(snap, "sched_steal_yield")["value"], steals / completed)
        self.assertEqual(metric(snap, "sched_behaviors_completed")["value"], completed)

    def test_block_misuse(self):
        self.start_daemon()
        with obsd.Obsd(self.name) as h:
            h.session("started")
            with h.sched_worker() as w:
                with self.assertRaises(ValueError):
                    w.inc("no_such_counter")
                with self.assertRaises(ValueError):
                    w.add("parked", -1)
                w.inc(obsd.SCHED_PARKED)
                w.add("parked", 2)
                self.assertEqual(w.counters()["parked"], 3)
                self.assertEqual(w.last_steal_attempt_ns, 0)
            with self.assertRaises(obsd.ObsdError):     # released at the with-block's end
                w.inc("parked")
            with self.assertRaises(obsd.ObsdError):
                h.sched_queue("")                        # tag of 1..47 bytes
            q = h.sched_queue("py.misuse")
            self.assertEqual(q.tag, "py.misuse")
            q.release()
            q.release()                                  # idempotent
            with self.assertRaises(obsd.ObsdError):
                q.pushed()
            h.session("ended")
        self.wait_daemon()


if __name__ == "__main__":
    unittest.main()
