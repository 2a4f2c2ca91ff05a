"""Every timing of a launch, from the agent on the instance out to the hub's orchestrator, in one module.

The stacks, the Lambdas and the agent read these (standard library only: the agent bundle ships this
file, stacks/agent_bundle.py). They must nest, innermost first, or a slow but healthy launch is given up
by an outer budget while an inner one still waits for it (tests/unit/test_timings.py checks the order):

    boot allowance + agent health budget  <  launch lifecycle hook timeout  <  worker's workload poll cap
    every silence between two worker reports  <  orchestrator's launch heartbeat
    the worker's whole launch, every cap and retry  <  orchestrator's launch timeout
"""

from __future__ import annotations

MINUTE_SECONDS = 60
HOUR_SECONDS = 60 * MINUTE_SECONDS

# --- the instance -----------------------------------------------------------------------------------

# Not a timer: an allowance for what happens before the agent starts waiting for the workload (boot,
# cloud-init, ECS agent, the agent's install), so the hook outlasts the agent's budget measured from launch.
INSTANCE_BOOT_SECONDS = 5 * MINUTE_SECONDS
# The agent ABANDONs the lifecycle action (reason kept) when the workload is not healthy this long after it
# starts waiting: an image pull of ~10 GB plus a first download and load of the weights of a large model.
AGENT_HEALTHY_WITHIN_SECONDS = 25 * MINUTE_SECONDS
# The agent's RecordLifecycleActionHeartbeat interval while it waits: well inside the hook timeout, so one
# missed heartbeat never lets the hook expire under a live agent.
AGENT_LIFECYCLE_HEARTBEAT_SECONDS = 5 * MINUTE_SECONDS
# The Auto Scaling launch hook's timeout (default ABANDON): it decides only when the agent never ran or
# died, so it covers the boot allowance and the agent's whole budget; the agent's own verdict comes first.
LAUNCH_HOOK_TIMEOUT_SECONDS = INSTANCE_BOOT_SECONDS + AGENT_HEALTHY_WITHIN_SECONDS
# How often the agent beats (AgentReady metric, hub heartbeat).
AGENT_HEARTBEAT_SECONDS = 60
# The per-instance heartbeat alarm's period: at least one beat falls in every period of a live agent.
HEARTBEAT_ALARM_PERIOD_SECONDS = 60

# --- the worker region's state machines ---------------------------------------------------------------

# How often the launch and teardown state machines look at the group and the task (context pollSeconds).
WORKER_POLL_SECONDS = 15
# Claiming waits for an instance to appear in the group: Auto Scaling starts one (or records a failed
# activity, which the claim reports at once) within minutes. Pending:Wait is claimable, so neither boot nor
# the lifecycle hook are part of this wait.
MAX_INSTANCE_POLLS_SECONDS = 10 * MINUTE_SECONDS
# Waiting for the task to be healthy and the instance InService: the instance was claimed at launch, so the
# lifecycle hook (CONTINUE by the agent, or ABANDON at its timeout) settles within the hook timeout; the cap
# is the backstop for a hook that never settles, not a budget of its own.
MAX_WORKLOAD_POLLS_SECONDS = LAUNCH_HOOK_TIMEOUT_SECONDS + 5 * MINUTE_SECONDS
# After a teardown, until the instances are gone: ECS drains (the serving task's stop timeout) and EC2
# terminates within minutes.
MAX_TEARDOWN_POLLS_SECONDS = 15 * MINUTE_SECONDS

# --- the hub's orchestrator ---------------------------------------------------------------------------

# The worker reports at every step (group scaled, instance claimed, workload started, then success or
# failure); the longest silence is the wait for a healthy workload: its poll cap, each poll's call, every
# retry the ASL allows, then a failed launch's cleanup (about 51 min at worst with 15 s polls). Longer
# silence than this means the worker is lost.
LAUNCH_HEARTBEAT_SECONDS = 55 * MINUTE_SECONDS
# The whole launch at worst: scale out, the claim's cap, starting the task, the workload's cap, a failed
# launch's cleanup, every retry used up (about 84 min with 15 s polls, 87 min with 10 s polls).
LAUNCH_TIMEOUT_SECONDS = 90 * MINUTE_SECONDS
# A teardown at worst: stopping the task and terminating, the teardown poll cap, the report (about 28 min).
TEARDOWN_TIMEOUT_SECONDS = 30 * MINUTE_SECONDS
# No spot region and no on-demand fallback: look again this often (WaitForCapacity; the replay too).
CAPACITY_RETRY_SECONDS = 5 * MINUTE_SECONDS
# A replica serving on on-demand looks for spot again this often (WaitForSpot), to return to it.
SPOT_RETURN_SECONDS = 5 * MINUTE_SECONDS

# --- region exclusions, by the class of the failure ---------------------------------------------------

# A spot pool that is empty now often refills within the quarter hour.
CAPACITY_EXCLUSION_SECONDS = 15 * MINUTE_SECONDS
# The call failed, not the region: try elsewhere for a little while.
TRANSIENT_EXCLUSION_SECONDS = 5 * MINUTE_SECONDS
# The orchestrator gave up on a silent launch: the region may be fine, the worker may not be.
TIMEOUT_EXCLUSION_SECONDS = 10 * MINUTE_SECONDS
# An account quota (vCPU limit, spot request count) changes only when someone raises it (an increase takes
# hours to days): retrying every quarter hour would only fail again; the operator is alerted instead.
QUOTA_EXCLUSION_SECONDS = 6 * HOUR_SECONDS
EXCLUSION_SECONDS = {
    "capacity": CAPACITY_EXCLUSION_SECONDS,
    "transient": TRANSIENT_EXCLUSION_SECONDS,
    "timeout": TIMEOUT_EXCLUSION_SECONDS,
    "quota": QUOTA_EXCLUSION_SECONDS,
}
