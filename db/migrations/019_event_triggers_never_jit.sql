-- The queue's update trigger plans with nested loops off (013: transition tables have no
-- statistics). The events it inserts fire the fan-out trigger inside that setting, where the
-- only plan for the small join of new events to webhooks is a "disabled" nested loop, priced
-- above jit_above_cost: with a webhook subscribed, every queue cycle JIT-compiled that
-- statement, about 90 ms of LLVM for a join of a few rows. Plans inside these triggers are small
-- by construction; none of them is worth compiling.
ALTER FUNCTION depthmill_events_fan_out() SET enable_nestloop = on;
ALTER FUNCTION depthmill_events_fan_out() SET jit = off;
ALTER FUNCTION depthmill_queue_updated_events() SET jit = off;
