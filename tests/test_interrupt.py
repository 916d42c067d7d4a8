"""StopRequest (SIGINT/SIGTERM → stop after this step) and CheckpointClock (steps / wall time)."""
import os
import signal

import pytest

from bltdata.interrupt import CheckpointClock, StopRequest, TrainingInterrupted


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_asks_to_stop_second_aborts_and_handlers_are_restored(signum):
    before = signal.getsignal(signum)
    with StopRequest() as stop:
        assert not stop()
        os.kill(os.getpid(), signum)
        assert stop() and stop.signum == signum
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
    assert signal.getsignal(signum) == before
    assert TrainingInterrupted(3, "p", signum).exit_code == 128 + signum


def test_checkpoint_clock_by_steps_and_by_wall_time():
    now = [0.0]
    clock = CheckpointClock(every_steps=5, every_minutes=1.0, clock=lambda: now[0])
    assert [s for s in range(1, 12) if clock.due(s)] == [5, 10]
    now[0] = 61.0
    assert clock.due(3)  # a minute since the last save
    clock.saved()
    assert not clock.due(3)
    assert not CheckpointClock(0, 0).due(100)
