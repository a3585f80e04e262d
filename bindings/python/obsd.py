"""obsd: ctypes binding of libobsd, the producer API of obsd (Python 3.9+).

    import obsd
    with obsd.Obsd("bench") as h:          # maps /dev/shm/obsd.bench
        h.session("started")
        with h.timed("kernel.gemm"):
            work()
        h.counter_add("batches", 1)
        h.session("ended")

libobsd.so is found, in this order:
  1. the path in $OBSD_LIBRARY, if set;
  2. ctypes.util.find_library("obsd") (an installed libobsd.so.0);
  3. build*/src/libobsd.so in the source tree this file sits in
     (bindings/python/ -> ../../build*/src/), first in name order, skipping
     sanitizer builds (OBSD_SANITIZE set in their CMakeCache.txt).

Record calls return True when written, False when the record was dropped
(ring full: dropped and counted by obsd). Negative statuses raise ObsdError
with libobsd's message. Strings are encoded as UTF-8; bytes pass through.
No compiled extension, no third-party packages.
"""

import contextlib
import ctypes
import ctypes.util
import glob
import os

__all__ = ["Obsd", "ObsdError", "now", "load_library"]

OBSD_OK = 0
OBSD_DROPPED = 1

SESSION_EVENTS = {
    "started": 1,
    "tracking_start": 2,
    "tracking_stop": 3,
    "ended": 4,
    "interrupted": 5,
}


class ObsdError(Exception):
    """A record call failed (negative status); .status holds it."""

    def __init__(self, status, message):
        super().__init__(message or "libobsd error %d" % status)
        self.status = status


class _Stats(ctypes.Structure):
    _fields_ = [
        ("records_written", ctypes.c_uint64),
        ("records_dropped", ctypes.c_uint64),
        ("records_refused", ctypes.c_uint64),
    ]


def _candidates():
    env = os.environ.get("OBSD_LIBRARY")
    if env:
        return [env]
    out = []
    found = ctypes.util.find_library("obsd")
    if found:
        out.append(found)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for lib in sorted(glob.glob(os.path.join(root, "build*", "src", "libobsd.so"))):
        if not _sanitized(os.path.dirname(os.path.dirname(lib))):
            out.append(lib)
    return out


def _sanitized(build_dir):
    # A sanitizer build of libobsd aborts python3 on load (its runtime must be
    # preloaded), so the build-tree fallback skips those build dirs.
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("OBSD_SANITIZE:"):
                    return line.split("=", 1)[1].strip() != ""
    except OSError:
        pass
    return False


def _declare(lib):
    u64, i64, u32 = ctypes.c_uint64, ctypes.c_int64, ctypes.c_uint32
    vp, cp, sz, c_int = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int
    sigs = {
        "obsd_open": ([cp], vp),
        "obsd_close": ([vp], None),
        "obsd_last_error": ([], cp),
        "obsd_now": ([], u64),
        "obsd_key": ([vp, cp], u32),
        "obsd_span": ([vp, u32, u64, u64], c_int),
        "obsd_value": ([vp, u32, u64], c_int),
        "obsd_counter_add": ([vp, u32, i64], c_int),
        "obsd_gauge_set": ([vp, u32, ctypes.c_double], c_int),
        "obsd_flush": ([vp], c_int),
        "obsd_thread_release": ([vp], None),
        "obsd_session": ([vp, c_int], c_int),
        "obsd_session_at": ([vp, c_int, u64], c_int),
        "obsd_request_issued": ([vp, u64, u64, cp, sz], c_int),
        "obsd_request_issued_tokens": ([vp, u64, u64, u64], c_int),
        "obsd_request_first_chunk": ([vp, u64, u64, cp, sz], c_int),
        "obsd_request_chunk": ([vp, u64, u64], c_int),
        "obsd_request_error": ([vp, u64, u64, cp, sz], c_int),
        "obsd_request_complete": ([vp, u64, u64, cp, cp, sz], c_int),
        "obsd_stats": ([vp, ctypes.POINTER(_Stats)], None),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    return lib


_lib = None


def load_library():
    """Loads libobsd once (see the module docstring for the lookup order)."""
    global _lib
    if _lib is not None:
        return _lib
    tried = []
    for path in _candidates():
        try:
            _lib = _declare(ctypes.CDLL(path))
            return _lib
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise OSError("libobsd.so not found; set OBSD_LIBRARY to its path (tried: %s)"
                  % ("; ".join(tried) or "nothing"))


def now():
    """CLOCK_MONOTONIC in nanoseconds: the clock of every record."""
    return load_library().obsd_now()


def _bytes(s):
    if s is None:
        return None
    if isinstance(s, str):
        return s.encode("utf-8")
    return bytes(s)


def _last_error(lib):
    msg = lib.obsd_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


class Obsd:
    """A handle on the segment /dev/shm/obsd.<name> of a running collector."""

    def __init__(self, name):
        self._lib = load_library()
        self._keys = {}
        self._h = self._lib.obsd_open(_bytes(name))
        if not self._h:
            raise OSError("obsd_open(%r): %s" % (name, _last_error(self._lib)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Flushes and unmaps; must not race with other calls on this handle."""
        if self._h:
            self._lib.obsd_close(self._h)
            self._h = None

    def _handle(self):
        if not self._h:
            raise ObsdError(-1, "obsd handle is closed")
        return self._h

    def _check(self, status):
        if status == OBSD_OK:
            return True
        if status == OBSD_DROPPED:
            return False
        raise ObsdError(status, _last_error(self._lib))

    def key(self, name):
        """Interns a name once per handle and returns its key."""
        k = self._keys.get(name)
        if k is None:
            k = self._lib.obsd_key(self._handle(), _bytes(name))
            if k == 0:
                raise ObsdError(-1, _last_error(self._lib))
            self._keys[name] = k
        return k

    def _k(self, key_or_name):
        return key_or_name if isinstance(key_or_name, int) else self.key(key_or_name)

    def span(self, key_or_name, start_ns, end_ns):
        return self._check(self._lib.obsd_span(self._handle(), self._k(key_or_name),
                                               start_ns, end_ns))

    @contextlib.contextmanager
    def timed(self, key_or_name):
        """Records a span around the with-block (also when it raises)."""
        k = self._k(key_or_name)
        t0 = self._lib.obsd_now()
        try:
            yield
        finally:
            self.span(k, t0, self._lib.obsd_now())

    def value(self, key_or_name, value):
        return self._check(self._lib.obsd_value(self._handle(), self._k(key_or_name), value))

    def counter_add(self, key_or_name, delta):
        return self._check(self._lib.obsd_counter_add(self._handle(), self._k(key_or_name),
                                                      delta))

    def gauge_set(self, key_or_name, value):
        return self._check(self._lib.obsd_gauge_set(self._handle(), self._k(key_or_name),
                                                    float(value)))

    def flush(self):
        return self._check(self._lib.obsd_flush(self._handle()))

    def thread_release(self):
        """Releases the calling thread's ring (also done when the thread exits)."""
        self._lib.obsd_thread_release(self._handle())

    def session(self, event, ts_ns=None):
        if event not in SESSION_EVENTS:
            raise ValueError("unknown session event %r (one of %s)"
                             % (event, ", ".join(SESSION_EVENTS)))
        ev = SESSION_EVENTS[event]
        if ts_ns is None:
            return self._check(self._lib.obsd_session(self._handle(), ev))
        return self._check(self._lib.obsd_session_at(self._handle(), ev, ts_ns))

    def request_issued(self, request_id, ts_ns, prompt=None, prompt_tokens=None):
        """Either the prompt text or its token count (or neither)."""
        if prompt is not None and prompt_tokens is not None:
            raise ValueError("give prompt or prompt_tokens, not both")
        if prompt_tokens is not None:
            return self._check(self._lib.obsd_request_issued_tokens(
                self._handle(), request_id, ts_ns, prompt_tokens))
        p = _bytes(prompt)
        return self._check(self._lib.obsd_request_issued(
            self._handle(), request_id, ts_ns, p, len(p) if p else 0))

    def request_first_chunk(self, request_id, ts_ns, text):
        t = _bytes(text) or b""
        return self._check(self._lib.obsd_request_first_chunk(
            self._handle(), request_id, ts_ns, t, len(t)))

    def request_chunk(self, request_id, ts_ns):
        return self._check(self._lib.obsd_request_chunk(self._handle(), request_id, ts_ns))

    def request_error(self, request_id, ts_ns, message):
        m = _bytes(message) or b""
        return self._check(self._lib.obsd_request_error(
            self._handle(), request_id, ts_ns, m, len(m)))

    def request_complete(self, request_id, ts_ns, finish_reason, output):
        o = _bytes(output) or b""
        return self._check(self._lib.obsd_request_complete(
            self._handle(), request_id, ts_ns, _bytes(finish_reason), o, len(o)))

    def stats(self):
        """What this handle has written: records_written/_dropped/_refused."""
        s = _Stats()
        self._lib.obsd_stats(self._handle(), ctypes.byref(s))
        return {name: getattr(s, name) for name, _ in _Stats._fields_}
