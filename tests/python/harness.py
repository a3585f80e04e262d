"""harness: a real obsd for the Python binding's suites.

DaemonTestCase starts obsd (from $OBSD_BUILD_DIR) on a per-test segment and
store and runs obsctl against that store; obsd and obsctl get an environment
without OBSD_* variables (they read those as configuration).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bindings", "python"))

BUILD = os.environ.get("OBSD_BUILD_DIR", "")


def tool_env():
    """obsd and obsctl read OBSD_<KEY> variables as config: give them none."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OBSD_")}


def metric(snapshot, name):
    for m in snapshot["metrics"]:
        if m["name"] == name:
            return m
    raise AssertionError("metric %s not in snapshot" % name)


class DaemonTestCase(unittest.TestCase):
    def setUp(self):
        self.assertTrue(BUILD, "OBSD_BUILD_DIR is not set")
        self.name = "pytest-%d-%s" % (os.getpid(), self._testMethodName[-12:])
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

    def start_daemon(self, *settings):
        """obsd --foreground with exit_after_run=true plus --set settings."""
        args = [os.path.join(BUILD, "src", "daemon", "obsd"), "--foreground",
                "--name", self.name, "--store", self.store, "--set", "exit_after_run=true"]
        for s in settings:
            args += ["--set", s]
        self.daemon = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, env=tool_env())
        for _ in range(300):
            if os.path.exists(self.shm):
                return
            if self.daemon.poll() is not None:
                self.fail("obsd exited early: %s" % self.daemon.stderr.read().decode())
            time.sleep(0.02)
        self.fail("obsd did not create %s" % self.shm)

    def wait_daemon(self):
        """Waits for obsd to end the run and exit (status 0)."""
        self.daemon.wait(timeout=60)
        self.assertEqual(self.daemon.returncode, 0, self.daemon.stderr.read().decode())

    def obsctl(self, *args, check=True):
        """obsctl ARGS --store STORE; returns stdout parsed as JSON."""
        out = subprocess.run([os.path.join(BUILD, "src", "cli", "obsctl")] + list(args)
                             + ["--store", self.store],
                             capture_output=True, env=tool_env())
        if check and out.returncode != 0:
            self.fail("obsctl %s: exit %d: %s" % (" ".join(args), out.returncode,
                                                  out.stderr.decode()))
        if out.returncode != 0:
            return None
        return json.loads(out.stdout)
