"""obsd: ctypes binding of libobsd, the producer API of obsd (Python 3.9+).

    import obsd
    with obsd.Obsd("bench") as h:          # maps /dev/shm/obsd.bench
        h.session("started")
        with h.timed("kernel.gemm"):
            work()
        h.counter_add("batches", 1)
        with h.budget(2_000_000_000, namespace="estimator") as b:   # FLOP budget
            with b.dispatch("matmul"):
                b.charge("matmul", obsd.flops_matmul(m, k, n, "float32"))
                with b.kernel("matmul"):
                    gemm()
        print(b.summary.residual_ns)
        w = h.sched_worker()                # scheduler counters (in each worker)
        w.inc("popped_local")
        w.completed()
        h.session("ended")

What it covers: obsd.h (Obsd: spans, values, counters, gauges, sessions,
requests, stats), obsd_budget.h (BudgetContext, budget_op, flops_*: see
"FLOP budgets" below) and obsd_sched.h (SchedWorker, SchedQueue: see
"Scheduler counter blocks" below, which says what the Python side
guarantees about memory ordering).

Cost per call from Python (tests/python/bench_binding.py, best of 7 rounds,
six runs on a 2-vCPU VM shared with other builds; in the same runs an empty
Python call took 20-28 ns and a ctypes call without arguments, obsd.now(),
176-262 ns): charge 0.42-0.61 us; a dispatch or kernel with-block
0.62-1.3 us; a namespace with-block 1.2-1.7 us; status() 9-18 us; open +
close 8-28 us; a scheduler inc or add 0.12-0.35 us, steal 0.19-0.55 us,
completed 0.23-0.53 us, add_shared or a queue push 0.26-0.77 us (with
libatomic stores, as on non-x86-64: inc 0.6-0.97 us, completed 1.7-2.5 us).
libobsd's own work is 1-60 ns of that (bench/RESULTS.md); the rest is the
interpreter and ctypes, so charge per op, not per element.

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
import dataclasses
import glob
import os
import platform
import threading
import time

__all__ = [
    "Obsd", "ObsdError", "now", "load_library",
    "BudgetContext", "BudgetSummary", "OpSummary", "BudgetRefused", "BudgetExhausted",
    "WallTimeExceeded", "budget_op", "budget_op_name", "budget_is_open",
    "set_progress_interval_ms", "flops_matmul", "flops_elementwise", "flops_fft",
    "flops_reduce", "flops_reduce_to", "flops_sort",
    "SchedWorker", "SchedQueue", "SCHED_COUNTERS",
]

OBSD_OK = 0
OBSD_DROPPED = 1
OBSD_EINVAL = -1
OBSD_ESTATE = -5
OBSD_EBUDGET = -6
OBSD_EWALL = -7

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


_BUDGET_LABEL_MAX = 255


class _Refusal(ctypes.Structure):
    # struct obsd_budget_refusal
    _fields_ = [
        ("op", ctypes.c_char_p),
        ("flop_cost", ctypes.c_uint64),
        ("flops_remaining", ctypes.c_uint64),
        ("wall_ns", ctypes.c_uint64),
        ("wall_limit_ns", ctypes.c_uint64),
    ]


class _Summary(ctypes.Structure):
    # struct obsd_budget_summary
    _fields_ = [
        ("ns", ctypes.c_char * (_BUDGET_LABEL_MAX + 1)),
        ("flop_budget", ctypes.c_uint64),
        ("flops_used", ctypes.c_uint64),
        ("flops_remaining", ctypes.c_uint64),
        ("exhausted", ctypes.c_bool),
        ("wall_exceeded", ctypes.c_bool),
        ("open", ctypes.c_bool),
        ("refused_charges", ctypes.c_uint64),
        ("participant_spans", ctypes.c_uint64),
        ("wall_ns", ctypes.c_uint64),
        ("dispatch_ns", ctypes.c_uint64),
        ("backend_ns", ctypes.c_uint64),
        ("overhead_ns", ctypes.c_uint64),
        ("residual_ns", ctypes.c_uint64),
        ("n_ops", ctypes.c_size_t),
        ("n_namespaces", ctypes.c_size_t),
    ]


class _OpSummary(ctypes.Structure):
    # struct obsd_budget_op_summary
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("flop_cost", ctypes.c_uint64),
        ("calls", ctypes.c_uint64),
        ("backend_ns", ctypes.c_uint64),
        ("overhead_ns", ctypes.c_uint64),
    ]


# The layouts above must match obsd_budget.h (x86-64 and aarch64 LP64 ABIs).
assert ctypes.sizeof(_Refusal) == 40 and ctypes.sizeof(_OpSummary) == 40
assert ctypes.sizeof(_Summary) == 360 and _Summary.refused_charges.offset == 288


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
    u64, i64, u32, u16 = ctypes.c_uint64, ctypes.c_int64, ctypes.c_uint32, ctypes.c_uint16
    dbl = ctypes.c_double
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
        # obsd_budget.h
        "obsd_budget_op": ([cp], u16),
        "obsd_budget_op_name": ([u16], cp),
        "obsd_budget_open": ([vp, u64, dbl, cp], c_int),
        "obsd_budget_open_at": ([vp, u64, dbl, cp, u64], c_int),
        "obsd_budget_is_open": ([], ctypes.c_bool),
        "obsd_budget_charge": ([u16, u64, ctypes.POINTER(_Refusal)], c_int),
        "obsd_budget_charge_at": ([u16, u64, u64, ctypes.POINTER(_Refusal)], c_int),
        "obsd_budget_namespace_push": ([cp], c_int),
        "obsd_budget_namespace_pop": ([], c_int),
        "obsd_budget_namespace": ([], cp),
        "obsd_budget_dispatch_begin": ([u16, ctypes.c_uint], c_int),
        "obsd_budget_dispatch_end": ([], c_int),
        "obsd_budget_dispatch_begin_at": ([u16, ctypes.c_uint, u64], c_int),
        "obsd_budget_dispatch_end_at": ([u64], c_int),
        "obsd_budget_kernel_begin": ([u16], c_int),
        "obsd_budget_kernel_end": ([], c_int),
        "obsd_budget_kernel_begin_at": ([u16, u64], c_int),
        "obsd_budget_kernel_end_at": ([u64], c_int),
        "obsd_budget_close": ([ctypes.POINTER(_Summary)], c_int),
        "obsd_budget_close_at": ([ctypes.POINTER(_Summary), u64], c_int),
        "obsd_budget_status": ([ctypes.POINTER(_Summary)], c_int),
        "obsd_budget_summary_op": ([sz, ctypes.POINTER(_OpSummary)], c_int),
        "obsd_budget_summary_namespace": ([sz, ctypes.POINTER(_OpSummary)], c_int),
        "obsd_budget_flush": ([], c_int),
        "obsd_budget_set_progress_interval_ms": ([u32], None),
        "obsd_flops_matmul": ([u64, u64, u64, c_int], u64),
        "obsd_flops_elementwise": ([c_int, u64, c_int], u64),
        "obsd_flops_fft": ([u64, c_int], u64),
        "obsd_flops_reduce": ([u64, c_int], u64),
        "obsd_flops_reduce_to": ([u64, u64, c_int], u64),
        "obsd_flops_sort": ([u64, c_int], u64),
        # obsd_sched.h (the claim functions; counting is done in Python)
        "obsd_sched_worker": ([vp, c_int], vp),
        "obsd_sched_queue": ([vp, cp], vp),
        "obsd_sched_release": ([vp], None),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    # The budget hot paths without argtypes: converting arguments through
    # argtypes costs more than the call itself, so their callers pass ctypes
    # objects of the exact parameter types (c_uint16 op ids, c_uint flags,
    # c_uint64 costs, a byref of the refusal), made once and cached.
    lib.fast_charge = lib["obsd_budget_charge"]
    lib.fast_dispatch_begin = lib["obsd_budget_dispatch_begin"]
    lib.fast_kernel_begin = lib["obsd_budget_kernel_begin"]
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
        self._contexts = set()   # open BudgetContexts writing to this handle
        self._blocks = set()     # claimed SchedWorker/SchedQueue blocks
        self._h = self._lib.obsd_open(_bytes(name))
        if not self._h:
            raise OSError("obsd_open(%r): %s" % (name, _last_error(self._lib)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Flushes and unmaps; must not race with other calls on this handle.

        Budget contexts of the calling thread still open on this handle are
        closed first (their .summary is kept). Scheduler blocks claimed
        through it are released (they keep their values) and their objects
        refuse further use: the memory they point at is unmapped. Raises
        ObsdError, leaving the handle open, while another thread still has a
        budget context open on it (libobsd would write its close record
        through a freed handle).
        """
        if not self._h:
            return
        me = threading.get_ident()
        # A thread that exited took its context with it (libobsd frees it).
        self._contexts = {c for c in self._contexts if c._thread.is_alive()}
        others = [c for c in self._contexts if c._tid != me]
        if others:
            raise ObsdError(OBSD_ESTATE, "obsd handle still has %d budget context(s) open in "
                            "other threads; close them first" % len(others))
        for c in list(self._contexts):
            c.close()
        for b in list(self._blocks):
            b.release()
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

    def budget(self, flop_budget, wall_time_limit_s=None, namespace=None, now_ns=None):
        """Opens the calling thread's FLOP budget context on this handle.

        Same as BudgetContext(self, ...): usable as a context manager that
        closes it and keeps the summary in .summary.
        """
        return BudgetContext(self, flop_budget, wall_time_limit_s, namespace, now_ns)

    def sched_worker(self, index=None):
        """Claims a worker counter block for the calling worker thread.

        index: the worker's index in its runtime (reported as worker_index),
        or None for the next index of this process (OBSD_SCHED_AUTO). Claim
        after session("started"). Raises ObsdError when no block is free.
        """
        if not SCHED_DIRECT_STORES:
            _atomics()  # before claiming: stores go through libatomic here
        b = self._lib.obsd_sched_worker(self._handle(), -1 if index is None else int(index))
        if not b:
            raise ObsdError(OBSD_EINVAL, _last_error(self._lib))
        return self._block(_make_worker, b)

    def _block(self, make, addr):
        try:
            return make(self, addr)
        except BaseException:
            self._lib.obsd_sched_release(addr)
            raise

    def sched_queue(self, tag):
        """Claims a queue counter block for the message queue named tag
        (1..47 printable ASCII bytes); any thread may count on it."""
        _atomics()  # before claiming: a queue block needs libatomic's fetch-add
        b = self._lib.obsd_sched_queue(self._handle(), _bytes(tag))
        if not b:
            raise ObsdError(OBSD_EINVAL, _last_error(self._lib))
        return self._block(SchedQueue, b)


# ---------------------------------------------------------------------------
# FLOP budgets (obsd_budget.h)
#
# A budget context lives in the calling thread (libobsd keeps it in
# thread-local memory), so a BudgetContext object belongs to the thread that
# opened it: its methods raise ObsdError when called from another thread or
# after close, instead of acting on whatever context that thread has.

SPAN_PARTICIPANT = 1            # OBSD_SPAN_PARTICIPANT
_SPAN_FLAGS = (ctypes.c_uint(0), ctypes.c_uint(SPAN_PARTICIPANT))
_U64_MAX = (1 << 64) - 1
_get_ident = threading.get_ident
_ops = {}                       # op name -> id (libobsd interns per process)
_op_args = {}                   # op name or id -> c_uint16 (the hot paths' argument)


def budget_op(name):
    """Interns an op name ("matmul") for the whole process and returns its
    id (an int, never 0); cached, so later calls cost a dict lookup. Names
    are 1..120 bytes of [A-Za-z0-9_.:-]. Every method taking an op accepts
    the name or the id."""
    op = _ops.get(name)
    if op is None:
        lib = load_library()
        op = lib.obsd_budget_op(_bytes(name))
        if op == 0:
            raise ObsdError(OBSD_EINVAL, _last_error(lib))
        _ops[name] = op
    return op


def budget_op_name(op):
    """The name of an op id, None if unknown."""
    s = load_library().obsd_budget_op_name(op)
    return s.decode("utf-8") if s is not None else None


def _op_id(op):
    if op is None:
        return 0
    if isinstance(op, int):
        return op
    return budget_op(op)


def _op_arg(op):
    """The c_uint16 argument of op (a name, an id or None), cached."""
    a = _op_args.get(op)
    if a is None:
        v = _op_id(op)
        if not 0 <= v < 1 << 16:
            raise ObsdError(OBSD_EINVAL, "op id %r out of range" % (op,))
        a = _op_args[op] = ctypes.c_uint16(v)
    return a


def budget_is_open():
    """Whether the calling thread has an open budget context."""
    return bool(load_library().obsd_budget_is_open())


def set_progress_interval_ms(ms):
    """Minimum time between the progress records sent from the hot paths,
    for every thread of the process (default 100 ms; 0: only open, flush and
    close send records)."""
    load_library().obsd_budget_set_progress_interval_ms(int(ms))


class BudgetRefused(ObsdError):
    """A charge refused before anything was charged or recorded.

    Carries struct obsd_budget_refusal: .op (name), .flop_cost (the refused
    charge), .flops_remaining (unchanged by the refusal), .wall_ns and
    .wall_limit_ns (time since open and the limit, for a wall refusal).
    """

    def __init__(self, status, message, op, flop_cost, flops_remaining, wall_ns, wall_limit_ns):
        super().__init__(status, message)
        self.op = op
        self.flop_cost = flop_cost
        self.flops_remaining = flops_remaining
        self.wall_ns = wall_ns
        self.wall_limit_ns = wall_limit_ns


class BudgetExhausted(BudgetRefused):
    """OBSD_EBUDGET: the charge would exceed the remaining budget (the
    context is now marked exhausted)."""


class WallTimeExceeded(BudgetRefused):
    """OBSD_EWALL: the context's wall-time limit has passed."""


@dataclasses.dataclass(frozen=True)
class OpSummary:
    """A row of struct obsd_budget_op_summary: per op, or per namespace
    label (name "" for work outside any namespace)."""
    name: str
    flop_cost: int      # FLOPs charged
    calls: int          # charges accepted
    backend_ns: int     # kernel time
    overhead_ns: int    # max(0, dispatch - kernel)


@dataclasses.dataclass(frozen=True)
class BudgetSummary:
    """Every field of struct obsd_budget_summary (times in ns), plus the
    per-op rows (obsd_budget_summary_op) in .operations and the
    per-namespace rows (obsd_budget_summary_namespace) in .by_namespace,
    both dicts in first-use order. as_dict() gives plain dicts."""
    ns: str                 # root namespace, "" if none
    flop_budget: int
    flops_used: int
    flops_remaining: int
    exhausted: bool         # a charge was refused, or nothing remains
    wall_exceeded: bool     # a charge was refused by the wall-time limit
    open: bool              # from status(): still open
    refused_charges: int
    participant_spans: int
    wall_ns: int
    dispatch_ns: int
    backend_ns: int
    overhead_ns: int
    residual_ns: int
    n_ops: int
    n_namespaces: int
    operations: dict
    by_namespace: dict

    wall_s = property(lambda self: self.wall_ns / 1e9)
    dispatch_s = property(lambda self: self.dispatch_ns / 1e9)
    backend_s = property(lambda self: self.backend_ns / 1e9)
    overhead_s = property(lambda self: self.overhead_ns / 1e9)
    residual_s = property(lambda self: self.residual_ns / 1e9)

    def as_dict(self):
        return dataclasses.asdict(self)


def _rows(lib, fn, n):
    out = {}
    row = _OpSummary()
    for i in range(n):
        rc = fn(i, ctypes.byref(row))
        if rc != OBSD_OK:
            raise ObsdError(rc, _last_error(lib))
        name = row.name.decode("utf-8") if row.name is not None else ""
        out[name] = OpSummary(name, row.flop_cost, row.calls, row.backend_ns, row.overhead_ns)
    return out


def _summary(lib, s):
    # Reads the thread's rows right after the close/status call that made them.
    return BudgetSummary(
        ns=s.ns.decode("utf-8"), flop_budget=s.flop_budget, flops_used=s.flops_used,
        flops_remaining=s.flops_remaining, exhausted=bool(s.exhausted),
        wall_exceeded=bool(s.wall_exceeded), open=bool(s.open),
        refused_charges=s.refused_charges, participant_spans=s.participant_spans,
        wall_ns=s.wall_ns, dispatch_ns=s.dispatch_ns, backend_ns=s.backend_ns,
        overhead_ns=s.overhead_ns, residual_ns=s.residual_ns, n_ops=s.n_ops,
        n_namespaces=s.n_namespaces,
        operations=_rows(lib, lib.obsd_budget_summary_op, s.n_ops),
        by_namespace=_rows(lib, lib.obsd_budget_summary_namespace, s.n_namespaces))


def _u64(what, v):
    if not isinstance(v, int) or not 0 <= v <= _U64_MAX:
        raise ValueError("%s must be an int in 0..2**64-1, got %r" % (what, v))
    return v


class _Span:
    """A reusable with-block for a dispatch or kernel span (spans nest in
    libobsd; the object keeps no state of its own)."""
    __slots__ = ("_ctx", "_begin", "_args", "_end")

    def __init__(self, ctx, begin, args, end):
        self._ctx, self._begin, self._args, self._end = ctx, begin, args, end

    def __enter__(self):
        c = self._ctx
        if c._tid != _get_ident():
            c._not_mine()
        rc = self._begin(*self._args)
        if rc:
            raise ObsdError(rc, _last_error(c._lib))
        return c

    def __exit__(self, et, ev, tb):
        c = self._ctx
        if c._tid is None:       # closed inside the block: close ended the span
            return False
        rc = self._end()
        if rc and et is None:
            raise ObsdError(rc, _last_error(c._lib))
        return False


class _Namespace:
    __slots__ = ("_ctx", "_segment")

    def __init__(self, ctx, segment):
        self._ctx, self._segment = ctx, segment

    def __enter__(self):
        self._ctx.namespace_push(self._segment)
        return self._ctx.current_namespace

    def __exit__(self, et, ev, tb):
        if self._ctx._tid is not None:
            rc = self._ctx._lib.obsd_budget_namespace_pop()
            if rc and et is None:
                raise ObsdError(rc, _last_error(self._ctx._lib))
        return False


class BudgetContext:
    """The calling thread's FLOP budget context (obsd_budget_open).

        with h.budget(2_000_000_000, wall_time_limit_s=30, namespace="estimator") as b:
            with b.dispatch("matmul"):                    # framework work
                b.charge("matmul", obsd.flops_matmul(m, k, n, "float32"))
                with b.kernel("matmul"):                  # the computation
                    gemm()
        print(b.summary.residual_ns, b.summary.operations["matmul"].calls)

    handle: an Obsd (receives the context's records) or None (accounting
    only). flop_budget > 0 (an int, or an integral float such as 2e9);
    wall_time_limit_s None or 0 for none; namespace the root label (dotted
    segments of [A-Za-z0-9_:-]) or None. now_ns opens at that
    CLOCK_MONOTONIC time (obsd_budget_open_at; so do the now_ns arguments
    below). One context per thread: opening a second one raises ObsdError
    (status OBSD_ESTATE).

    Leaving the with-block closes the context (also when the block raises)
    and keeps the summary in .summary; close() returns it.
    """

    def __init__(self, handle, flop_budget, wall_time_limit_s=None, namespace=None, now_ns=None):
        lib = self._lib = load_library()
        if isinstance(flop_budget, float) and flop_budget.is_integer():
            flop_budget = int(flop_budget)
        if not isinstance(flop_budget, int) or not 0 < flop_budget <= _U64_MAX:
            raise ValueError("flop_budget must be an integer in 1..2**64-1, got %r"
                             % (flop_budget,))
        limit = 0.0 if wall_time_limit_s is None else float(wall_time_limit_s)
        h = handle._handle() if handle is not None else None
        ns = _bytes(namespace)
        if now_ns is None:
            rc = lib.obsd_budget_open(h, flop_budget, limit, ns)
        else:
            rc = lib.obsd_budget_open_at(h, flop_budget, limit, ns, now_ns)
        if rc != OBSD_OK:
            raise ObsdError(rc, _last_error(lib))
        self._tid = _get_ident()
        self._thread = threading.current_thread()
        self._obsd = handle
        self._why = _Refusal()
        self._why_ref = ctypes.byref(self._why)
        self._cost = ctypes.c_uint64()
        self._charge = lib.fast_charge
        self._spans = {}
        self.ns = namespace or ""
        self.summary = None
        if handle is not None:
            handle._contexts.add(self)

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if self._tid is not None:
            self.close()
        return False

    @property
    def is_open(self):
        return self._tid is not None

    def _not_mine(self):
        if self._tid is None:
            raise ObsdError(OBSD_ESTATE, "budget context is closed")
        raise ObsdError(OBSD_ESTATE, "budget context belongs to thread %d, not the calling "
                        "thread %d (contexts are per thread)" % (self._tid, _get_ident()))

    def charge(self, op, flop_cost, now_ns=None):
        """Charges flop_cost FLOPs for one call of op in the current
        namespace, decided synchronously as in C. Raises BudgetExhausted
        (nothing charged or recorded, the context marked exhausted) or
        WallTimeExceeded (after the wall-time limit) with the refusal's
        fields; ObsdError for an unknown op."""
        if self._tid != _get_ident():
            self._not_mine()
        a = _op_args.get(op) or _op_arg(op)
        if not 0 <= flop_cost <= _U64_MAX:     # (a float fails at cost.value below)
            _u64("flop_cost", flop_cost)
        if now_ns is None:
            cost = self._cost          # this context's thread only: no race
            cost.value = flop_cost
            rc = self._charge(a, cost, self._why_ref)
        else:
            rc = self._lib.obsd_budget_charge_at(a.value, flop_cost, now_ns, self._why_ref)
        if rc:
            self._refused(rc)

    def _refused(self, rc):
        msg = _last_error(self._lib)
        if rc not in (OBSD_EBUDGET, OBSD_EWALL):
            raise ObsdError(rc, msg)
        w = self._why
        cls = BudgetExhausted if rc == OBSD_EBUDGET else WallTimeExceeded
        raise cls(rc, msg, w.op.decode("utf-8") if w.op is not None else None, w.flop_cost,
                  w.flops_remaining, w.wall_ns, w.wall_limit_ns)

    def _call(self, rc):
        if rc != OBSD_OK:
            raise ObsdError(rc, _last_error(self._lib))

    # -- namespaces

    def namespace(self, segment):
        """with b.namespace("layer1"): appends ".layer1" to the current
        label for the block (push, then pop at exit); the with-target is the
        new label. Labels only: the budget is one pool."""
        return _Namespace(self, segment)

    def namespace_push(self, segment):
        if self._tid != _get_ident():
            self._not_mine()
        self._call(self._lib.obsd_budget_namespace_push(_bytes(segment)))

    def namespace_pop(self):
        if self._tid != _get_ident():
            self._not_mine()
        self._call(self._lib.obsd_budget_namespace_pop())

    @property
    def current_namespace(self):
        """The current label ("" when none)."""
        if self._tid != _get_ident():
            self._not_mine()
        return self._lib.obsd_budget_namespace().decode("utf-8")

    # -- spans

    def dispatch(self, op=None, participant=False):
        """with b.dispatch("tolist"): a dispatch span, the framework's own
        work (marshaling, round trips, reconstructing results). Spans nest
        and each instant counts once (only the outermost span reads the
        clock; its op gets the time). participant=True
        (OBSD_SPAN_PARTICIPANT): the span adds nothing and is counted in
        participant_spans, so participant code cannot shave its residual.
        The span ends also when the block raises."""
        key = (op, bool(participant))
        sp = self._spans.get(key)
        if sp is None:
            sp = self._spans[key] = _Span(self, self._lib.fast_dispatch_begin,
                                          (_op_arg(op), _SPAN_FLAGS[bool(participant)]),
                                          self._lib.obsd_budget_dispatch_end)
        return sp

    def kernel(self, op=None):
        """with b.kernel("matmul"): a kernel span, the pure computation of op
        (its backend time). Nests like dispatch spans."""
        key = ("kernel", op)
        sp = self._spans.get(key)
        if sp is None:
            sp = self._spans[key] = _Span(self, self._lib.fast_kernel_begin,
                                          (_op_arg(op),), self._lib.obsd_budget_kernel_end)
        return sp

    def dispatch_begin(self, op=None, participant=False, now_ns=None):
        if self._tid != _get_ident():
            self._not_mine()
        flags = _SPAN_FLAGS[bool(participant)]
        if now_ns is None:
            self._call(self._lib.fast_dispatch_begin(_op_arg(op), flags))
        else:
            self._call(self._lib.obsd_budget_dispatch_begin_at(_op_arg(op).value, flags.value,
                                                               now_ns))

    def dispatch_end(self, now_ns=None):
        if self._tid != _get_ident():
            self._not_mine()
        if now_ns is None:
            self._call(self._lib.obsd_budget_dispatch_end())
        else:
            self._call(self._lib.obsd_budget_dispatch_end_at(now_ns))

    def kernel_begin(self, op=None, now_ns=None):
        if self._tid != _get_ident():
            self._not_mine()
        if now_ns is None:
            self._call(self._lib.fast_kernel_begin(_op_arg(op)))
        else:
            self._call(self._lib.obsd_budget_kernel_begin_at(_op_arg(op).value, now_ns))

    def kernel_end(self, now_ns=None):
        if self._tid != _get_ident():
            self._not_mine()
        if now_ns is None:
            self._call(self._lib.obsd_budget_kernel_end())
        else:
            self._call(self._lib.obsd_budget_kernel_end_at(now_ns))

    # -- summaries

    def status(self):
        """The summary so far (live wall and split, open=True)."""
        if self._tid != _get_ident():
            self._not_mine()
        s = _Summary()
        self._call(self._lib.obsd_budget_status(ctypes.byref(s)))
        return _summary(self._lib, s)

    def flush(self):
        """Sends a progress record of the context now and flushes the ring."""
        if self._tid != _get_ident():
            self._not_mine()
        rc = self._lib.obsd_budget_flush()
        if rc < 0:
            raise ObsdError(rc, _last_error(self._lib))
        return rc == OBSD_OK

    def close(self, now_ns=None):
        """Closes the context (spans still open end now), sends its close
        record and returns the BudgetSummary (also kept in .summary). A
        second close returns the same summary."""
        if self._tid is None:
            return self.summary
        if self._tid != _get_ident():
            self._not_mine()
        s = _Summary()
        if now_ns is None:
            rc = self._lib.obsd_budget_close(ctypes.byref(s))
        else:
            rc = self._lib.obsd_budget_close_at(ctypes.byref(s), now_ns)
        self._tid = None
        if self._obsd is not None:
            self._obsd._contexts.discard(self)
        self._call(rc)
        self.summary = _summary(self._lib, s)
        return self.summary


# -- cost helpers (obsd_flops_*: FMA = 2, 64-bit types at rate 2, complex
# add/multiply/divide 2/6/11, transcendentals 16, sorts 4; saturating)

_DTYPES = {
    "bool": 0, "int8": 1, "int16": 2, "int32": 3, "int64": 4,
    "uint8": 5, "uint16": 6, "uint32": 7, "uint64": 8,
    "float16": 9, "float32": 10, "float64": 11, "complex64": 12, "complex128": 13,
    # Python's own types, as numpy maps them
    "int": 4, "float": 11, "complex": 13,
}
_EW_OPS = {"add": 0, "multiply": 1, "divide": 2, "transcendental": 3, "copy": 4}


def _dtype(dt):
    """A dtype name ("float32"), a numpy dtype or scalar type (by its name),
    a Python type (int, float, complex, bool) or the enum value."""
    if isinstance(dt, int) and not isinstance(dt, bool) and 0 <= dt <= 13:
        return dt
    name = dt if isinstance(dt, str) else getattr(dt, "name", None) or getattr(dt, "__name__", None)
    try:
        return _DTYPES[name]
    except (KeyError, TypeError):
        raise ValueError("unknown dtype %r (one of %s)" % (dt, ", ".join(_DTYPES))) from None


def _sizes(*v):
    for x in v:
        _u64("size", x)


def flops_matmul(m, k, n, dtype):
    """(m x k) @ (k x n): 2mkn - mn (complex: 6mkn + 2mn(k-1))."""
    _sizes(m, k, n)
    return load_library().obsd_flops_matmul(m, k, n, _dtype(dtype))


def flops_elementwise(op, n, dtype):
    """n output elements of one ufunc; op is "add" (also subtract, compare,
    min/max), "multiply", "divide", "transcendental" (sin, exp, log, ...)
    or "copy"."""
    _sizes(n)
    try:
        code = op if isinstance(op, int) else _EW_OPS[op]
    except KeyError:
        raise ValueError("unknown elementwise op %r (one of %s)"
                         % (op, ", ".join(_EW_OPS))) from None
    return load_library().obsd_flops_elementwise(code, n, _dtype(dtype))


def flops_fft(n, dtype):
    """Complex FFT of length n: 5 n ceil(log2 n) (integer and 64-bit inputs
    are computed in complex128)."""
    _sizes(n)
    return load_library().obsd_flops_fft(n, _dtype(dtype))


def flops_reduce(n, dtype):
    """A reduction of n elements to one: n - 1 additions in the accumulator
    type (integers narrower than 64 bits accumulate in int64)."""
    _sizes(n)
    return load_library().obsd_flops_reduce(n, _dtype(dtype))


def flops_reduce_to(n_in, n_out, dtype):
    """A reduction along axes, n_in elements to n_out."""
    _sizes(n_in, n_out)
    return load_library().obsd_flops_reduce_to(n_in, n_out, _dtype(dtype))


def flops_sort(n, dtype):
    """Sort of n elements: n ceil(log2 n) at weight 4."""
    _sizes(n)
    return load_library().obsd_flops_sort(n, _dtype(dtype))


# ---------------------------------------------------------------------------
# Scheduler counter blocks (obsd_sched.h)
#
# The counting functions of obsd_sched.h are static inline, not symbols of
# libobsd, so the binding claims blocks through libobsd (obsd_sched_worker,
# obsd_sched_queue, obsd_sched_release) and then writes the block's memory
# itself, with the header's layout and memory-ordering contract:
#
#   - Single-writer fields (add, inc, steal, completed): a relaxed load and a
#     relaxed store of the aligned 64-bit word, no read-modify-write, as in C.
#     On x86-64 (SCHED_DIRECT_STORES) the words are ctypes arrays mapped on
#     the block: CPython's c_uint64 setter stores the 8 bytes with one
#     aligned move (what ctypes does in practice, checked on CPython 3.11;
#     not a documented CPython promise), which x86-64 never tears, so the
#     collector's atomic loads never see a torn value. completed() keeps the
#     header's sequence protocol (sequence odd, count, first/last time,
#     sequence even): each store is a separate call into ctypes, so no
#     compiler moves one past another, and x86-64 makes stores visible in
#     program order, i.e. every store is a release store there, which is all
#     the header's release stores compile to on x86-64. On other
#     architectures, where plain stores may be reordered, every load and
#     store goes through libatomic's __atomic_load_8 / __atomic_store_8
#     with the header's exact orders (relaxed, release).
#   - Shared fields (add_shared, queue blocks): a relaxed fetch-add through
#     libatomic's __atomic_fetch_add_8 (lock xadd on x86-64), the same
#     lock-free instruction the inline C uses, so Python threads, C threads,
#     sub-interpreters and free-threaded builds may count on one field
#     together without losing increments. Without libatomic.so.1 these raise
#     OSError (a Python lock would not exclude C writers).
#
# What the Python side does not change: a field written with add, inc,
# steal or completed must have one writing thread (the block's worker), as
# in C; the GIL is no substitute (it does not exist in free-threaded builds
# or across sub-interpreters with their own GIL). Reads across counters are
# not a point-in-time view; the completion group is read consistently.

SCHED_COUNTERS = (
    "pushed_local", "dispatched_to_pending", "pushed_remote", "popped_local",
    "popped_via_steal", "enqueue_cas_retries", "dequeue_cas_retries", "batch_resets",
    "steal_attempts", "steal_failures", "parked", "fairness_arm_fires",
)
(SCHED_PUSHED_LOCAL, SCHED_DISPATCHED_TO_PENDING, SCHED_PUSHED_REMOTE, SCHED_POPPED_LOCAL,
 SCHED_POPPED_VIA_STEAL, SCHED_ENQUEUE_CAS_RETRIES, SCHED_DEQUEUE_CAS_RETRIES,
 SCHED_BATCH_RESETS, SCHED_STEAL_ATTEMPTS, SCHED_STEAL_FAILURES, SCHED_PARKED,
 SCHED_FAIRNESS_ARM_FIRES) = range(len(SCHED_COUNTERS))
_CIDX = {n: i for i, n in enumerate(SCHED_COUNTERS)}
_CIDX.update({i: i for i in range(len(SCHED_COUNTERS))})

# Whether single-writer stores go straight through ctypes memory (x86-64),
# else through libatomic. Read when a block is claimed.
SCHED_DIRECT_STORES = platform.machine().lower() in ("x86_64", "amd64")

_N = len(SCHED_COUNTERS)
_LAST_STEAL, _SEQ, _COMPLETED, _FIRST, _LAST = _N, _N + 1, _N + 2, _N + 3, _N + 4
_WORDS_OFF = 64        # offsetof(struct obsd_sched_block, u)
_Q_TAG_LEN = 48        # OBSD_SCHED_TAG_MAX + 1
_Q_PUSHED, _Q_POPPED, _Q_ENQ, _Q_DEQ = 0, 1, 2, 3
_RELAXED, _ACQUIRE, _RELEASE = 0, 2, 3   # __ATOMIC_* memory orders
_ONE = ctypes.c_uint64(1)
_monotonic_ns = time.monotonic_ns   # CLOCK_MONOTONIC on Linux: obsd_now()'s clock


class _BlockHead(ctypes.Structure):
    # the identity cache line of struct obsd_sched_block
    _fields_ = [
        ("state", ctypes.c_uint32), ("magic", ctypes.c_uint32),
        ("version", ctypes.c_uint16), ("kind", ctypes.c_uint16),
        ("generation", ctypes.c_uint32), ("owner_pid", ctypes.c_int32),
        ("owner_tid", ctypes.c_int32), ("index", ctypes.c_int64),
        ("claim_ns", ctypes.c_uint64), ("release_ns", ctypes.c_uint64),
    ]


assert _BlockHead.index.offset == 24 and ctypes.sizeof(_BlockHead) == 48

_atomic = None


class _Atomics:
    """The three libatomic entry points the binding uses."""
    __slots__ = ("load", "store", "fetch_add")


def _atomics():
    """libatomic.so.1's 64-bit load, store and fetch-add, loaded once
    (through PyDLL: these calls never block, so they keep the GIL)."""
    global _atomic
    if _atomic is None:
        tried = []
        for name in ("libatomic.so.1", ctypes.util.find_library("atomic")):
            if not name:
                continue
            try:
                lib = ctypes.PyDLL(name)
            except OSError as e:
                tried.append("%s (%s)" % (name, e))
                continue
            # No argtypes (their conversion costs more than the call):
            # callers pass c_void_p addresses, c_uint64 values and int
            # memory orders, the exact parameter types.
            a = _Atomics()
            a.load = getattr(lib, "__atomic_load_8")
            a.load.restype = ctypes.c_uint64
            a.store = getattr(lib, "__atomic_store_8")
            a.store.restype = None
            a.fetch_add = getattr(lib, "__atomic_fetch_add_8")
            a.fetch_add.restype = ctypes.c_uint64
            _atomic = a
            break
        else:
            raise OSError("libatomic.so.1 not found (tried: %s): shared scheduler counters "
                          "need its atomic fetch-add" % ("; ".join(tried) or "nothing"))
    return _atomic


class _Released:
    """Stands in for a block's memory once it is released or unmapped."""
    __slots__ = ("why",)

    def __init__(self, why):
        self.why = why

    def __getitem__(self, i):
        raise ObsdError(OBSD_ESTATE, self.why)

    __setitem__ = __getitem__


def _counter(c):
    try:
        return _CIDX[c]
    except (KeyError, TypeError):
        raise ValueError("unknown scheduler counter %r (one of %s)"
                         % (c, ", ".join(SCHED_COUNTERS))) from None


class _Block:
    def __init__(self, obsd, addr, nwords, words_off):
        self._obsd = obsd
        self._lib = obsd._lib
        self.address = addr
        head = _BlockHead.from_address(addr)
        self.index = head.index
        self.generation = head.generation
        base = addr + words_off
        # _p: the address of every 64-bit word (for libatomic); _w: the
        # same words as a ctypes array (direct stores and loads).
        self._p = [ctypes.c_void_p(base + 8 * i) for i in range(nwords)]
        self._w = (ctypes.c_uint64 * nwords).from_address(base)
        self._direct = SCHED_DIRECT_STORES and not isinstance(self, _AtomicSchedWorker)
        obsd._blocks.add(self)

    def _load(self, i):
        if self._direct:
            return self._w[i]
        return _atomics().load(self._p[i], _ACQUIRE)

    def release(self):
        """obsd_sched_release: the block keeps its values (the collector
        still reads them) until a later claim reuses it; this object refuses
        further use. Also done by the with-block's end and by Obsd.close()."""
        if isinstance(self._w, _Released):
            return
        self._lib.obsd_sched_release(self.address)
        self._w = self._p = _Released("scheduler block %#x was released" % self.address)
        self._obsd._blocks.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


class SchedWorker(_Block):
    """A worker counter block (obsd_sched_worker): Obsd.sched_worker().

    Counters are named as in SCHED_COUNTERS ("popped_local", ...) or given by
    their SCHED_* index. Timestamps default to time.monotonic_ns(), the
    CLOCK_MONOTONIC clock of obsd.now(). Only the block's worker thread may
    call add/inc/steal/completed (single writer per field, as in C);
    add_shared is for a field every thread bumps (pushed_remote).
    """

    def __init__(self, obsd, addr):
        super().__init__(obsd, addr, _N + 5, _WORDS_OFF)

    def add(self, counter, n=1):
        """obsd_sched_add: a relaxed load and store, single writer."""
        c = _CIDX.get(counter)
        if c is None or n < 0:
            self._bad(counter, n)
        w = self._w
        w[c] = w[c] + n

    def inc(self, counter):
        """obsd_sched_inc."""
        c = _CIDX.get(counter)
        if c is None:
            self._bad(counter, 1)
        w = self._w
        w[c] = w[c] + 1

    def _bad(self, counter, n):
        _counter(counter)
        _u64("n", n)

    def add_shared(self, counter, n=1):
        """obsd_sched_add_shared: a relaxed fetch-add (libatomic), for a
        field bumped by several threads; bump that field only this way."""
        c = _CIDX.get(counter)
        if c is None or n < 0:
            self._bad(counter, n)
        _atomics().fetch_add(self._p[c], _ONE if n == 1 else ctypes.c_uint64(n), _RELAXED)

    def steal(self, got, now_ns=None):
        """obsd_sched_steal: one steal try at now_ns: steal_attempts,
        last_steal_attempt_ns, and popped_via_steal (got) or steal_failures."""
        w = self._w
        w[SCHED_STEAL_ATTEMPTS] = w[SCHED_STEAL_ATTEMPTS] + 1
        c = SCHED_POPPED_VIA_STEAL if got else SCHED_STEAL_FAILURES
        w[c] = w[c] + 1
        w[_LAST_STEAL] = _monotonic_ns() if now_ns is None else now_ns

    def completed(self, now_ns=None):
        """obsd_sched_completed: one behavior completed at now_ns; count,
        first and last completion time under the block's sequence counter
        (odd while updating), so the collector reads them consistently."""
        if now_ns is None:
            now_ns = _monotonic_ns()
        w = self._w
        seq = w[_SEQ]
        w[_SEQ] = seq + 1
        n = w[_COMPLETED]
        w[_COMPLETED] = n + 1
        if n == 0:
            w[_FIRST] = now_ns
        w[_LAST] = now_ns
        w[_SEQ] = seq + 2

    @property
    def last_steal_attempt_ns(self):
        """The time of the last steal() (0 = never)."""
        return self._load(_LAST_STEAL)

    def counters(self):
        """The block's values now: every counter, last_steal_attempt_ns,
        behaviors_completed, first_completion_ns, last_completion_ns (the
        completion group read consistently, retried while a write is in
        progress). Not a point-in-time view across counters."""
        out = {name: self._load(i) for i, name in enumerate(SCHED_COUNTERS)}
        out["last_steal_attempt_ns"] = self._load(_LAST_STEAL)
        for _ in range(64):
            s0 = self._load(_SEQ)
            group = (self._load(_COMPLETED), self._load(_FIRST), self._load(_LAST))
            if s0 % 2 == 0 and self._load(_SEQ) == s0:
                break
        else:
            raise ObsdError(OBSD_ESTATE, "completion group of block %#x is mid-update"
                            % self.address)
        out["behaviors_completed"], out["first_completion_ns"], out["last_completion_ns"] = group
        return out


class _AtomicSchedWorker(SchedWorker):
    """SchedWorker whose single-writer stores go through libatomic (every
    architecture other than x86-64): the header's exact orders."""

    def __init__(self, obsd, addr):
        at = _atomics()
        super().__init__(obsd, addr)
        self._ld, self._st = at.load, at.store

    def add(self, counter, n=1):
        c = _CIDX.get(counter)
        if c is None or n < 0:
            self._bad(counter, n)
        p = self._p[c]
        self._st(p, ctypes.c_uint64(self._ld(p, _RELAXED) + n), _RELAXED)

    def inc(self, counter):
        self.add(counter, 1)

    def steal(self, got, now_ns=None):
        self.add(SCHED_STEAL_ATTEMPTS, 1)
        self.add(SCHED_POPPED_VIA_STEAL if got else SCHED_STEAL_FAILURES, 1)
        self._st(self._p[_LAST_STEAL],
                 ctypes.c_uint64(_monotonic_ns() if now_ns is None else now_ns), _RELAXED)

    def completed(self, now_ns=None):
        if now_ns is None:
            now_ns = _monotonic_ns()
        p, ld, st, u64 = self._p, self._ld, self._st, ctypes.c_uint64
        seq = ld(p[_SEQ], _RELAXED)
        st(p[_SEQ], u64(seq + 1), _RELAXED)
        n = ld(p[_COMPLETED], _RELAXED)
        st(p[_COMPLETED], u64(n + 1), _RELEASE)
        t = u64(now_ns)
        if n == 0:
            st(p[_FIRST], t, _RELEASE)
        st(p[_LAST], t, _RELEASE)
        st(p[_SEQ], u64(seq + 2), _RELEASE)


def _make_worker(obsd, addr):
    return (SchedWorker if SCHED_DIRECT_STORES else _AtomicSchedWorker)(obsd, addr)


class SchedQueue(_Block):
    """A queue counter block (obsd_sched_queue): Obsd.sched_queue(tag).
    Any thread may count on it: relaxed fetch-adds through libatomic."""

    def __init__(self, obsd, addr):
        at = _atomics()
        super().__init__(obsd, addr, 4, _WORDS_OFF + _Q_TAG_LEN)
        self._fa = at.fetch_add
        self.tag = ctypes.string_at(addr + _WORDS_OFF).decode("ascii")

    def pushed(self, cas_retries=0):
        """obsd_sched_queue_pushed: one push after cas_retries failed CAS."""
        p = self._p
        self._fa(p[_Q_PUSHED], _ONE, _RELAXED)
        if cas_retries:
            self._fa(p[_Q_ENQ], ctypes.c_uint64(_u64("cas_retries", cas_retries)), _RELAXED)

    def popped(self, cas_retries=0):
        """obsd_sched_queue_popped: one pop after cas_retries failed CAS."""
        p = self._p
        self._fa(p[_Q_POPPED], _ONE, _RELAXED)
        if cas_retries:
            self._fa(p[_Q_DEQ], ctypes.c_uint64(_u64("cas_retries", cas_retries)), _RELAXED)

    def counters(self):
        """pushed_total, popped_total, enqueue_cas_retries, dequeue_cas_retries now."""
        return {name: self._load(i) for i, name in enumerate(
            ("pushed_total", "popped_total", "enqueue_cas_retries", "dequeue_cas_retries"))}
