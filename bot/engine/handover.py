"""What a stopping engine settles while its jobs are still its own (``Engine.stop``).

Jobs ``withdraw``n (an interrupted ``generate``'s), and jobs whose WaveSpeed ends with this
process: a simulated run's own simulator. Its tasks die with it, so the next run could only
poll for tasks no server knows. A job not yet downloaded goes back to the queue instead,
with no task, and the next run makes it afresh: the simulator bills nothing, and the job's
credits stay reserved, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bot.jobs import Job, JobState
from bot.store import LeaseLost, Store

log = logging.getLogger(__name__)

# A job in one of these has, or may have, a task at the simulator and no video of its own yet.
AT_THE_SIMULATOR = (JobState.SUBMITTING, JobState.PROCESSING, JobState.DOWNLOADING)


async def requeue_lost_tasks(store: Store, owner: str, now: float) -> list[int]:
    """Put this process's jobs that are at its ending simulator back in the queue, while
    they are still its own (fenced by ``owner``); their ids."""
    requeued = []
    for job in await store.claims.held(owner):
        if job.state not in AT_THE_SIMULATOR:
            continue
        try:
            await store.update_job(job.id, owner=owner, state=JobState.QUEUED, prediction_id=None,
                                   result_url=None, output_url=None, submitted_at=None,
                                   submit_started_at=None, submit_ended_at=None, webhook_result=None,
                                   resubmits=0, submit_attempts=0, updated_at=now)
        except LeaseLost:  # another process has it now: that one's to drive
            continue
        requeued.append(job.id)
        log.info("job %s back in the queue: its task ended with this run's simulator", job.id)
    return requeued


class HandOver:
    """``Engine.stop``'s settling before its jobs are handed over; ``Engine`` inherits it."""

    store: Store
    owner: str
    clock: Callable[[], float]

    if TYPE_CHECKING:  # ``JobEndings.withdraw``: a method here at run time would shadow it in Engine's bases
        async def withdraw(self, job_id: int, *, wavespeed_gone: bool = False) -> Job | None: ...

    async def _settle_before_release(self, withdraw: Sequence[int], wavespeed_gone: bool, requeue_lost: bool,
                                     withdrawn: dict[int, Job | None]) -> None:
        """Settle ``withdraw`` (into ``withdrawn``) and, with ``requeue_lost``, requeue."""
        for job_id in withdraw:
            withdrawn[job_id] = await self.withdraw(job_id, wavespeed_gone=wavespeed_gone)
        if requeue_lost:
            await requeue_lost_tasks(self.store, self.owner, self.clock())
