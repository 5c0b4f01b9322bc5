"""Deterministic periodic-task scheduler on the firmware clock.

Every piece of firmware work is a periodic task with a fixed period in microseconds.
One pass (``run_due``) runs every task whose deadline has come, each once, in the
order the tasks were added (so priority is the order of ``every`` calls: safety and
fast sensing first). Between passes the scheduler asks the clock to wait until the
earliest deadline: a real clock sleeps, a virtual clock jumps. Given the same clock
and inputs, the same tasks run at the same instants: tests and the bench are
reproducible and run faster than real time.

Why not asyncio: tasks here are short, non-blocking and periodic; a table of
deadlines costs no allocation per pass, has no hidden interleaving at ``await``
points, and makes "which task ran when" a pure function of the clock (see
docs/firmware.md).
"""

from fieldrig.clock import US_PER_S, diff_ms, is_due


class Task:
    """One periodic job. ``fn()`` takes no argument; ``period_us`` is its nominal dt."""

    def __init__(self, name, period_us, fn, due_s, due_us):
        if period_us <= 0:
            raise ValueError("task period must be > 0 us")
        self.name = name
        self.period_us = period_us
        self._period_s = period_us // US_PER_S
        self._period_rem_us = period_us % US_PER_S
        self.fn = fn
        self.due_s = due_s
        self.due_us = due_us
        self.runs = 0
        # Deadlines missed by more than one whole period (the task then skips ahead).
        self.overruns = 0
        self.enabled = True

    def _advance(self, now_s, now_us):
        s = self.due_s + self._period_s
        us = self.due_us + self._period_rem_us
        if us >= US_PER_S:
            us -= US_PER_S
            s += 1
        if is_due(now_s, now_us, s, us):
            # Late by a whole period or more: do not replay the missed runs in a burst
            # (a control loop wants the present, not a catch-up); restart the phase.
            self.overruns += 1
            s = now_s + self._period_s
            us = now_us + self._period_rem_us
            if us >= US_PER_S:
                us -= US_PER_S
                s += 1
        self.due_s = s
        self.due_us = us


class Scheduler:
    def __init__(self, clock):
        self.clock = clock
        self.tasks = []
        self.passes = 0
        # Longest gap between two passes since the last read_max_gap_ms (main-loop stall).
        self._gap_ms = 0
        self._last_s = clock.s
        self._last_us = clock.us

    def every(self, period_us, fn, name="task", phase_us=0):
        """Add a task running every ``period_us`` (first run ``phase_us`` from now)."""
        clock = self.clock
        clock.update()
        s = clock.s + phase_us // US_PER_S
        us = clock.us + phase_us % US_PER_S
        if us >= US_PER_S:
            us -= US_PER_S
            s += 1
        task = Task(name, period_us, fn, s, us)
        self.tasks.append(task)
        return task

    def run_due(self):
        """One pass: run every task that is due, once each. Returns how many ran."""
        self.checkpoint()
        now_s = self._last_s
        now_us = self._last_us
        self.passes += 1
        ran = 0
        for task in self.tasks:
            # is_due inlined: this test runs for every task on every pass
            due_s = task.due_s
            if task.enabled and (now_s > due_s or (now_s == due_s
                                                   and now_us >= task.due_us)):
                task.fn()
                task.runs += 1
                task._advance(now_s, now_us)
                ran += 1
        return ran

    def checkpoint(self):
        """A long operation that watches the fast limits itself (an impedance block)
        counts as a pass for the stall detector, without running any task."""
        clock = self.clock
        clock.update()
        gap = diff_ms(clock.s, clock.us, self._last_s, self._last_us)
        if gap > self._gap_ms:
            self._gap_ms = gap
        self._last_s = clock.s
        self._last_us = clock.us

    def read_max_gap_ms(self):
        """Longest gap between passes since the previous call (a stall detector).

        Also counts the time since the last pass, so a loop that is stuck right now
        shows up when the check runs from an interrupt or a test."""
        clock = self.clock
        now_gap = diff_ms(clock.s, clock.us, self._last_s, self._last_us)
        gap = self._gap_ms if self._gap_ms > now_gap else now_gap
        self._gap_ms = 0
        return gap

    def next_task(self):
        """The enabled task with the earliest deadline (None when there is none)."""
        best = None
        best_s = 0
        best_us = 0
        for task in self.tasks:
            if not task.enabled:
                continue
            s = task.due_s
            if best is None or s < best_s or (s == best_s and task.due_us < best_us):
                best = task
                best_s = s
                best_us = task.due_us
        return best

    def wait_next(self):
        """Let the clock wait for the earliest deadline (sleep, or jump when virtual)."""
        task = self.next_task()
        if task is not None:
            self.clock.sleep_until(task.due_s, task.due_us)

    def run_until(self, done):
        """Main loop: pass, then wait for the next deadline, until ``done()`` is true."""
        while not done():
            self.run_due()
            self.wait_next()

    def run_for_ms(self, ms):
        """Virtual clocks only: run every deadline in the next ``ms`` milliseconds."""
        clock = self.clock
        if not clock.virtual:
            raise ValueError("run_for_ms needs a virtual clock")
        end_s = clock.s + ms // 1000
        end_us = clock.us + (ms % 1000) * 1000
        if end_us >= US_PER_S:
            end_us -= US_PER_S
            end_s += 1
        while True:
            self.run_due()
            task = self.next_task()
            if task is None or not is_due(end_s, end_us, task.due_s, task.due_us):
                clock.sleep_until(end_s, end_us)
                return
            clock.sleep_until(task.due_s, task.due_us)
