"""test_binding: the Python binding (bindings/python/obsd.py) against a real obsd.

Starts obsd on a per-process segment and store, writes a session from Python
(spans from two threads, a counter, request records), waits for obsd to end
the run, and checks what obsctl show --final reads back from the store.
"""
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import DaemonTestCase, metric  # noqa: E402
import obsd  # noqa: E402

SPANS_PER_THREAD = 500


class BindingTest(DaemonTestCase):
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
        self.wait_daemon()

        snap = self.obsctl("show", "--final", "--json")
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
