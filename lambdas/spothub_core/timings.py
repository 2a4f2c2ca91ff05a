"""Every timing of a launch, from the agent on the instance out to the hub's orchestrator, in one module.

The stacks, the Lambdas and the agent read these (standard library only: the agent bundle ships this
file, stacks/agent_bundle.py). They must nest, innermost first, or a slow but healthy launch is given up
by an outer budget while an inner one still waits for it (tests/unit/test_timings.py checks the order):

    boot allowance + agent health budget  <  launch lifecycle hook timeout  <  worker's workload poll cap
    every silence between two worker reports  <  orchestrator's launch heartbeat
    the worker's whole launch, every cap and retry  <  orchestrator's launch timeout

The agent's own timings nest too: its slowest heartbeat (every call timing out) is shorter than the
silence its heartbeat alarm tolerates, and a drain (detection, drain command, grace period, report) fits
in the two minutes of a spot interruption warning.
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

# --- the agent's loops, calls and drain (worker_agent/; Settings defaults where an operator may change one) -

# How often the agent looks at IMDS for a spot interruption warning or a rebalance recommendation, and at
# the workload while the lifecycle action is open: every 5 s, as AWS recommends for the notices.
AGENT_POLL_SECONDS = 5
# The most a configured poll may be: the detection delay counts against the two minutes of the drain.
AGENT_MAX_POLL_SECONDS = 10
# The agent's calls to the agent API back off exponentially with full jitter, from the base doubling to the
# cap: a fleet of agents whose API went away does not come back in step; the cap is one heartbeat interval,
# so an API that returns is found again within a minute.
AGENT_BACKOFF_BASE_SECONDS = 1
AGENT_BACKOFF_CAP_SECONDS = AGENT_HEARTBEAT_SECONDS
# The agent-config parameter is read at start with this pause before the second try, doubling after (the
# agent starts without it, on the defaults, rather than hold up the interruption watch).
AGENT_CONFIG_RETRY_SECONDS = 1
# A loop of the agent that raised starts again after this pause: soon, but never in a tight crash loop.
AGENT_LOOP_RESTART_SECONDS = 1
# On its stop the agent waits this long for each loop to end (they wake on the stop event at once).
AGENT_LOOP_JOIN_SECONDS = 5

# Each try of the agent's AWS calls (boto3 makes two), connecting and then each read: short, so that a hanging
# call holds up neither the interruption watch, nor the heartbeat's metric, nor the agent's own stop.
AGENT_AWS_CONNECT_TIMEOUT_SECONDS = 3
AGENT_AWS_READ_TIMEOUT_SECONDS = 5
# Each call to the agent API (urllib's timeout, for the connection and for each read): the API answers in
# well under a second (one DynamoDB write); slower than this is treated as no answer, and the link backs off.
AGENT_API_TIMEOUT_SECONDS = 10
# IMDS answers on the instance's link-local address in milliseconds; longer means it is not there.
AGENT_IMDS_TIMEOUT_SECONDS = 2
# The IMDSv2 session token lives this long (the most IMDS allows, 6 h), and is renewed this long before it
# expires, so that no request carries a dying token.
IMDS_TOKEN_TTL_SECONDS = 6 * HOUR_SECONDS
IMDS_TOKEN_RENEW_MARGIN_SECONDS = MINUTE_SECONDS
# The workload's health check: a server that does not answer this soon is not ready to serve.
AGENT_HEALTH_CHECK_TIMEOUT_SECONDS = 3
# Each Docker CLI call (ps, inspect, logs, and docker stop beyond its own grace period): the daemon answers
# these locally in well under a second; this much means it is stuck.
AGENT_DOCKER_CALL_TIMEOUT_SECONDS = 15
# `docker run` of the agent's own runner may pull the image first (~10 GB for an inference server).
AGENT_DOCKER_RUN_TIMEOUT_SECONDS = 10 * MINUTE_SECONDS
# A process workload told to stop (after SIGKILL, or with the agent itself): the kernel ends it at once;
# this only bounds the wait for the exit to be seen.
AGENT_PROCESS_EXIT_SECONDS = 5

# A spot interruption warning comes two minutes before the instance is reclaimed (AWS's, not ours).
SPOT_NOTICE_WINDOW_SECONDS = 2 * MINUTE_SECONDS
# Kept at the end of the window for publishing the drain's outcome: one put of an event, its connection and
# its read at their timeouts.
AGENT_DRAIN_REPORT_SECONDS = 10
# Kept free at the very end of the window: shutdown starts on time, not on the agent's estimate of it.
AGENT_DRAIN_MARGIN_SECONDS = 5
# The workload's drain command (when one is configured), by default: flushing a queue, deregistering.
AGENT_DRAIN_COMMAND_SECONDS = 15
# The workload's grace period between SIGTERM and SIGKILL, by default: an inference server finishes the
# requests it holds; clamped, with the clamp logged, to what is left of the window.
AGENT_GRACE_SECONDS = 90
# The least grace period the clamp leaves the workload: a drain command too long for the window is cut first.
AGENT_MIN_GRACE_SECONDS = 5
# At drain time, with the deadline all but spent (a restarted agent resuming a drain), each step still gets
# this much: a command or a SIGTERM that gets no time at all cannot do anything.
AGENT_DRAIN_STEP_FLOOR_SECONDS = 1
# The drain's outcome waits at most this long for the capacity notice (published concurrently) to go first,
# so the hub normally hears of the interruption before its drain (it copes with either order). The wait comes
# out of the margin, no longer than it, so the report keeps its whole share of the window.
AGENT_NOTICE_FIRST_SECONDS = 5
# A refused drain report is tried again after this pause, until the report's share of the window is spent.
AGENT_DRAIN_REPORT_RETRY_SECONDS = 1

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

# --- the warm standby (spothub_core.logic.standby) ------------------------------------------------------
# A replica on spot keeps a second, warmed-up spot instance in another zone while the risk of a preemption is
# high. Chosen on the replay's traces (data/traces; spothub/replay/README.md), as round values across the range
# that did best across the folders, not tuned to one: ±30 min on any one moves a folder by at most 0.15 point.

# An interruption warning, rebalance recommendation or capacity error of the deployment's own instances and
# launches keeps its region at high risk this long: in the traces, spot that goes tends to go again within the
# hour or two (a zone's spells of capacity are mostly short), and a region's zones go together.
STANDBY_NOTICE_WINDOW_SECONDS = 90 * MINUTE_SECONDS
# A serving spot instance younger than this is at high risk: capacity that has just come back is the likeliest
# to go again (a quarter to two fifths of the traces' preemptions of a serving instance come in its first half hour).
STANDBY_YOUNG_SECONDS = 30 * MINUTE_SECONDS
# A zone of the serving region whose placement score is below the best it had within this window marks the
# region's spare capacity shrinking (placement scores follow the last hour or so of capacity).
STANDBY_SCORE_WINDOW_SECONDS = 30 * MINUTE_SECONDS
# A zone (or region) that refused a standby for capacity is not asked again for this long: the orchestrator's
# retry interval (CAPACITY_RETRY_SECONDS).
STANDBY_RETRY_SECONDS = 5 * MINUTE_SECONDS
# How many of the risk rules must agree: one for a spot standby (about a fifth to a third of on-demand's price),
# three for an on-demand standby when no zone has spot to spare (on-demand costs three to seven times spot).
STANDBY_SPOT_RULES = 1
STANDBY_ON_DEMAND_RULES = 3

# Loops of the orchestrator (placement attempts, spot looks) per execution before it continues as a new one:
# a count, not a time, but it bounds how long one execution lives: Step Functions caps an execution's history
# at 25,000 events, and each loop writes about 100 at most.
ORCHESTRATOR_LOOPS_PER_EXECUTION = 200

# --- how long the state table keeps what it no longer needs (DynamoDB TTL) -----------------------------

DAY_SECONDS = 24 * HOUR_SECONDS
# Launch and teardown requests, kept a week after they were made for the operator's questions.
REQUEST_RECORD_TTL_SECONDS = 7 * DAY_SECONDS
# An agent's record, two days after its last heartbeat: a terminated instance's agent falls silent for good.
AGENT_RECORD_TTL_SECONDS = 2 * DAY_SECONDS
# A remediation, a month: long enough to see which instance types or regions keep failing.
REMEDIATION_RECORD_TTL_SECONDS = 30 * DAY_SECONDS
# An exclusion's item outlives its `until` by a day (readers filter on `until`; TTL deletion lags by hours).
EXCLUSION_RECORD_GRACE_SECONDS = DAY_SECONDS

# --- deliveries --------------------------------------------------------------------------------------------

# The Route 53 record that follows the serving replica: short, so clients find a replacement within half a
# minute of the move (make before break: the old instance still answers meanwhile).
ENDPOINT_DNS_TTL_SECONDS = 30
# An EventBridge rule's Lambda target retries a failed delivery this long (up to 8 times) before its
# dead-letter queue: a report lost to a throttled or briefly failing function would leave a launch waiting.
EVENT_DELIVERY_MAX_AGE_SECONDS = 2 * HOUR_SECONDS
# An asynchronous invocation that fails is retried by Lambda (twice) within this age, then sent to the DLQ.
ASYNC_INVOCATION_MAX_AGE_SECONDS = HOUR_SECONDS
# The hub bus's archive keeps every event this long, for a replay after an incident.
EVENT_ARCHIVE_RETENTION_DAYS = 30
# A dead-letter queue keeps what failed for two weeks (SQS's maximum), time to look and to redrive.
DEAD_LETTER_RETENTION_DAYS = 14
# Functions that call several AWS APIs in one go (the spot finder across regions, the worker's tasks that
# scale a group and start tasks); the API functions keep the default.
MULTI_CALL_FUNCTION_TIMEOUT_SECONDS = 60

# --- the serving container's health, as ECS checks it (the agent's own check is the one the launch waits on) -

SERVING_HEALTH_INTERVAL_SECONDS = 30
SERVING_HEALTH_TIMEOUT_SECONDS = 10
# A model server loads its weights before it answers: failed checks in this period do not count.
SERVING_HEALTH_START_PERIOD_SECONDS = 5 * MINUTE_SECONDS
# ECS's stop timeout (SIGTERM to SIGKILL) is the agent's drain grace period: the same promise to the server.
SERVING_STOP_TIMEOUT_SECONDS = AGENT_GRACE_SECONDS

# --- batch jobs --------------------------------------------------------------------------------------------

# The batch supervisor's schedule: timeouts, scaling, completion. Once a minute, the design's floor for a
# polling function; the listing's end and the worker API's calls do what cannot wait a minute.
BATCH_SUPERVISOR_SECONDS = MINUTE_SECONDS
# A job's defaults (POST /jobs fields): a worker acknowledges its assignment within five minutes (the download
# starts after the ack) and finishes a batch within the hour.
BATCH_ACK_TIMEOUT_SECONDS = 5 * MINUTE_SECONDS
BATCH_PROCESSING_TIMEOUT_SECONDS = HOUR_SECONDS
# A worker with nothing to claim while batches are still in flight elsewhere (they may come back) asks again
# after this long.
BATCH_WAIT_RETRY_SECONDS = 15
# The agent in batch mode asks for work again this soon after a batch (or an error), at most.
AGENT_BATCH_POLL_SECONDS = 5
# One listing task lists pages for this long, then hands its place to the next task (each task is one Lambda
# invocation; a 100,000-file prefix is 100 pages).
BATCH_LISTING_BUDGET_SECONDS = 30
BATCH_LISTING_FUNCTION_TIMEOUT_SECONDS = 2 * MINUTE_SECONDS
# The whole listing of a prefix, at worst (a million files at about a second a page with its writes).
BATCH_LISTING_TIMEOUT_SECONDS = 2 * HOUR_SECONDS
# Workers asked of a region that have not registered this long after are counted lost (boot, image pull);
# the region is asked again, or another one.
BATCH_WORKER_BOOT_SECONDS = 15 * MINUTE_SECONDS
# A worker that has not called the worker API this long is silent: its batch is taken back at its deadline
# anyway; this only marks the worker in the job's view.
BATCH_WORKER_SILENT_SECONDS = 5 * MINUTE_SECONDS
# A finished job's items (batches, workers, errors) expire this long after it ended; the job item stays.
BATCH_RECORD_TTL_SECONDS = 30 * DAY_SECONDS
# A request that would create a job's group in a worker region is applied only this fresh: one delivered late
# (EventBridge retries a delivery for hours) after the job's release must not bring its group back; the supervisor
# asks again within minutes while it still needs the workers.
BATCH_FLEET_CREATE_MAX_AGE_SECONDS = 5 * MINUTE_SECONDS
# A finished job's notification waits at most this long for its regions to report their groups released (every
# worker gone): a region that does not answer holds up no one's notification; its release is asked every minute.
BATCH_RELEASE_WAIT_SECONDS = 10 * MINUTE_SECONDS

# --- the search instance -------------------------------------------------------------------------------------

# Defaults of the search context keys (stacks/config.py): retire an instance nobody queried for half an hour, or
# that ran half an hour (0: no limit), and check its health every minute (a schedule: a minute is the floor).
SEARCH_IDLE_TIMEOUT_SECONDS = 30 * MINUTE_SECONDS
SEARCH_MAX_RUNTIME_SECONDS = 30 * MINUTE_SECONDS
SEARCH_HEALTH_INTERVAL_SECONDS = MINUTE_SECONDS
# Consecutive missed health checks that make an instance `failed` (no more routing; replaced).
SEARCH_HEALTH_MISSES = 3
# The launcher polls a starting instance's health this often, and gives up this long after RunInstances: boot,
# the attach, the mount and the container's image pull and index load.
SEARCH_START_POLL_SECONDS = 10
SEARCH_START_TIMEOUT_SECONDS = 15 * MINUTE_SECONDS
# The attach waits for the volume to leave its predecessor (detaching after a termination) at most this long.
SEARCH_ATTACH_WAIT_SECONDS = 5 * MINUTE_SECONDS
# The whole launcher execution, at worst: placement and both purchase options, the attach wait and the start.
SEARCH_LAUNCH_TIMEOUT_SECONDS = SEARCH_ATTACH_WAIT_SECONDS + SEARCH_START_TIMEOUT_SECONDS + 5 * MINUTE_SECONDS
# A slot held by a launch record still launching/starting this long after its creation is taken back by the
# monitor (its execution died without its failure step): the launch timeout and a schedule period.
SEARCH_STALE_LAUNCH_SECONDS = SEARCH_LAUNCH_TIMEOUT_SECONDS + 2 * MINUTE_SECONDS
# A query with no ready instance is told to come back after this long (Retry-After).
SEARCH_RETRY_AFTER_SECONDS = 30
# A query waiting for readiness (wait_s) looks at the record this often.
SEARCH_WAIT_POLL_SECONDS = 1
# Each health check's timeout (the router's request to the service), and a query's.
SEARCH_HEALTH_TIMEOUT_SECONDS = 5
SEARCH_QUERY_TIMEOUT_SECONDS = 10
# API Gateway answers 504 after its integration timeout (29 s for a REST API, unless a quota increase was granted):
# a query's wait for readiness (wait_s, up to 60 accepted) ends in time for the query itself and the answer.
API_INTEGRATION_TIMEOUT_SECONDS = 29
SEARCH_WAIT_BUDGET_SECONDS = API_INTEGRATION_TIMEOUT_SECONDS - SEARCH_QUERY_TIMEOUT_SECONDS - 2
# Ended launches (terminated) are kept this long for the history, then expire.
SEARCH_RECORD_TTL_SECONDS = 7 * DAY_SECONDS

# --- model deployments ---------------------------------------------------------------------------------------

# The deployment controller's schedule (a minute is a schedule's floor, and the design's: nothing polls faster).
# What happens between two runs comes as events (the API's nudge, a task's state change, a node's interruption
# notice), so a stopped task is seen in seconds; the schedule is the backstop and the clock of the timed decisions.
DEPLOYMENT_CONTROLLER_INTERVAL_SECONDS = MINUTE_SECONDS
# A controller run holds a lease this long at most (its function's timeout): a second run meanwhile marks the lease
# and leaves; the holder runs once more before it lets go.
DEPLOYMENT_CONTROLLER_LEASE_SECONDS = 5 * MINUTE_SECONDS
# A replica slot whose task stopped unexpectedly is started again after base * 2^(n-1) seconds (n: its consecutive
# failures), at most the cap; after DEPLOYMENT_MAX_RESTARTS consecutive failures the slot is given up (the
# deployment degraded, or failed when no replica is healthy). A task healthy this long resets its count.
DEPLOYMENT_RESTART_BASE_SECONDS = 30
DEPLOYMENT_RESTART_CAP_SECONDS = 10 * MINUTE_SECONDS
DEPLOYMENT_MAX_RESTARTS = 5
DEPLOYMENT_RESTART_RESET_SECONDS = 10 * MINUTE_SECONDS
# A deployment still `creating` this long after its creation is failed, saying what held it (no capacity, the image
# pull, the health check): an image of ~10 GB and the weights of a large model, as for a serving replica.
DEPLOYMENT_CREATING_LIMIT_SECONDS = 30 * MINUTE_SECONDS
# A task started but not healthy this long (its container health check never passed) is stopped and counted as a
# failure of its slot.
DEPLOYMENT_TASK_HEALTHY_WITHIN_SECONDS = 25 * MINUTE_SECONDS
# A running task whose health check has failed this long is stopped and counted as a failure of its slot (ECS does
# not stop an unhealthy task it started with StartTask): three of the agent's heartbeat minutes and then some, so a
# server busy with one long batch is not killed for a missed check or two.
DEPLOYMENT_UNHEALTHY_REPLACE_SECONDS = 5 * MINUTE_SECONDS
# Nodes asked of a node group and not registered in ECS this long after the ask count as not coming: the region is
# excluded for deployments (as a capacity failure) and the group's ask taken back.
NODE_BOOT_SECONDS = 10 * MINUTE_SECONDS
# A node with nothing allocated this long is released (its group's desired capacity decremented).
NODE_IDLE_GRACE_SECONDS = 10 * MINUTE_SECONDS
# A node whose agent has not beaten this long is not placed on (its utilization is unknown, it may be going).
NODE_HEARTBEAT_STALE_SECONDS = 3 * MINUTE_SECONDS
# Autoscaling: the default cooldown between two decisions for one deployment, and the window of utilization a
# decision looks at (the agents' heartbeats: one a minute).
DEPLOYMENT_AUTOSCALE_COOLDOWN_SECONDS = 5 * MINUTE_SECONDS
DEPLOYMENT_UTILIZATION_WINDOW_SECONDS = 3 * MINUTE_SECONDS
# Scaling events and deleted deployments are kept this long, then expire.
DEPLOYMENT_RECORD_TTL_SECONDS = 30 * DAY_SECONDS
