"""test_binding: the Python binding (bindings/python/obsd.py) against a real obsd.

Starts obsd on a per-process segment and store, writes a session from Python
(spans from two threads, a counter, request records), waits for obsd to end
the run, and checks what obsctl show --final reads back from the store.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bindings", "python"))
import obsd  # noqa: E402

BUILD = os.environ.get("OBSD_BUILD_DIR", "")
SPANS_PER_THREAD = 500


def tool_env():
    """obsd and obsctl read OBSD_<KEY> variables as config: give them none."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OBSD_")}


def metric(snapshot, name):
    for m in snapshot["metrics"]:
        if m["name"] == name:
            return m
    raise AssertionError("metric %s not in snapshot" % name)


class BindingTest(unittest.TestCase):
    def setUp(self):
        self.assertTrue(BUILD, "OBSD_BUILD_DIR is not set")
        self.name = "pytest-%d" % os.getpid()
        self.shm = "/dev/shm/obsd." + self.name
        self.store = tempfile.mkdtemp(prefix="obsd-pytest-")
        self.daemon = None
        self.addCleanup(self.cleanup)

    def cleanup(self):
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGKILL)
            self.daemon.wait()
        if self.daemon is not None:
            self.daemon.stderr.close()
        shutil.rmtree(self.store, ignore_errors=True)
        try:
            os.unlink(self.shm)
        except FileNotFoundError:
            pass

    def start_daemon(self):
        self.daemon = subprocess.Popen(
            [os.path.join(BUILD, "src", "daemon", "obsd"), "--foreground",
             "--name", self.name, "--store", self.store,
             "--set", "exit_after_run=true"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=tool_env())
        for _ in range(300):
            if os.path.exists(self.shm):
                return
            if self.daemon.poll() is not None:
                self.fail("obsd exited early: %s" % self.daemon.stderr.read().decode())
            time.sleep(0.02)
        self.fail("obsd did not create %s" % self.shm)

    def test_session_round_trip(self):
        self.start_daemon()
        with obsd.Obsd(self.name) as h:
            self.assertTrue(h.session("started"))
            key = h.key("py.span")
            self.assertEqual(key, h.key("py.span"))  # cached, same key
            dropped = [0, 0]

            def writer(slot):
                for i in range(SPANS_PER_THREAD):
                    with h.timed("py.span") if i % 2 else _nothing():
                        pass
                    if i % 2 == 0 and not h.span(key, 1000 * i, 1000 * i + 500):
                        dropped[slot] += 1
                h.flush()

            threads = [threading.Thread(target=writer, args=(s,)) for s in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertTrue(h.counter_add("py.count", 40))
            self.assertTrue(h.counter_add("py.count", 2))
            self.assertTrue(h.gauge_set("py.gauge", 1.5))
            self.assertTrue(h.value("py.value", 7))
            t = obsd.now()
            self.assertTrue(h.request_issued(1, t, prompt="héllo wörld"))
            self.assertTrue(h.request_first_chunk(1, t + 10, "hé"))
            self.assertTrue(h.request_chunk(1, t + 20))
            self.assertTrue(h.request_complete(1, t + 30, "stop", b"h\xc3\xa9llo"))
            self.assertTrue(h.request_issued(2, t, prompt_tokens=12))
            self.assertTrue(h.request_error(2, t + 40, "upstream 500"))
            with self.assertRaises(ValueError):
                h.session("no_such_event")
            with self.assertRaises(obsd.ObsdError):
                h.span(0, 1, 2)  # key 0 is never valid: OBSD_EINVAL
            stats = h.stats()
            self.assertTrue(h.session("ended"))
        drops = sum(dropped)
        self.assertEqual(drops, 0)
        self.assertEqual(stats["records_dropped"], 0)
        self.assertEqual(stats["records_refused"], 1)
        self.daemon.wait(timeout=60)
        self.assertEqual(self.daemon.returncode, 0, self.daemon.stderr.read().decode())

        out = subprocess.run(
            [os.path.join(BUILD, "src", "cli", "obsctl"), "show", "--final", "--json",
             "--store", self.store], check=True, capture_output=True, env=tool_env())
        snap = json.loads(out.stdout)
        self.assertEqual(snap["state"], "complete")
        self.assertEqual(metric(snap, "py.span")["count"], 2 * SPANS_PER_THREAD - drops)
        self.assertEqual(metric(snap, "py.count")["value"], 42)
        self.assertEqual(metric(snap, "total_samples_issued")["value"], 2)
        self.assertEqual(metric(snap, "total_samples_completed")["value"], 1)
        self.assertEqual(metric(snap, "total_samples_failed")["value"], 1)
        self.assertEqual(metric(snap, "obsd_dropped_records")["value"], 0)

    def test_open_missing_segment(self):
        with self.assertRaises(OSError) as cm:
            obsd.Obsd(self.name + "-missing")
        msg = str(cm.exception)
        self.assertIn(self.name + "-missing", msg)
        self.assertGreater(len(msg), len("obsd_open(%r): " % (self.name + "-missing")))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    unittest.main()
